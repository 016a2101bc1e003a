"""Paraphraser training on Ray Train: one worker on a real local Ray trains a tiny KRL model on real
Quora pairs, reports checkpoints, and a run started again with the same storage resumes from its
latest checkpoint instead of training over; the command line takes every TrainingConfig field."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from training.options import flag
from training.paraphrase.build import MODEL_FIELDS, BuildOptions, tiny_options
from training.paraphrase.generate import encode_sources, greedy
from training.paraphrase.ray_job import RUN_NAME, main, train_paraphraser_on_ray
from training.paraphrase.train import TrainingConfig

pytestmark = pytest.mark.integration


def tiny_config() -> TrainingConfig:
    """The tiny test model's config with fewer steps (a checkpoint every 10 steps)."""
    return dataclasses.replace(tiny_options().training(), steps=30, krl_ddl_steps=20, eval_every=10, prior_steps=5)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray for the module's runs (`fit_on_ray` uses a running Ray rather than starting its own)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_trains_on_ray_reports_checkpoints_and_resumes(tmp_path: Path, rarb_data: Path, local_ray: None) -> None:
    data_dir = rarb_data.parent
    config = tiny_config()
    result, metrics = train_paraphraser_on_ray(config, tmp_path / "first", data_dir, tmp_path / "runs")
    assert metrics["done"] and metrics["step"] == config.steps and metrics["start_step"] == 0
    assert result.config == config and result.checkpoint.is_file() and result.checkpoint.is_relative_to(tmp_path / "first")
    assert [h["step"] for h in result.history if h["stage"] in ("ddl", "ddl+vsar")] == [10, 20, 30]
    assert result.counts["labelled_pairs"] == 300
    checkpoints = sorted((tmp_path / "runs" / RUN_NAME).glob("**/checkpoint_*"))
    assert checkpoints, "Ray Train kept no checkpoint"
    # the model decodes real test sentences with its tokenizer
    sources = encode_sources(result.tokenizer, ["How can I learn to speak English fluently?"], config.max_length)
    with torch.inference_mode():
        tokens = greedy(result.model, sources, config.max_length)
    assert tokens[0] and all(0 <= t < result.model.config.vocab_size for t in tokens[0])

    # the same storage again: the run resumes from its latest checkpoint (the finished one) and trains no step over
    resumed, again = train_paraphraser_on_ray(config, tmp_path / "second", data_dir, tmp_path / "runs")
    assert again["start_step"] == config.steps and again["step"] == config.steps
    assert resumed.history == result.history and resumed.best_valid_loss == result.best_valid_loss
    first, second = result.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_every_training_config_field_has_a_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    names = [f.name for f in dataclasses.fields(TrainingConfig) if f.name != "model"] + list(MODEL_FIELDS)
    assert [n for n in names if flag(n) not in shown] == []
    assert "--out" in shown and "--repository" in shown and "--work-dir" in shown
    # each flag reaches the config
    options = BuildOptions(steps=7, krl_ddl_steps=3, d_model=64, heads=4, max_positions=40, train_pairs=50)
    config = options.training()
    assert (config.steps, config.krl_ddl_steps, config.model.d_model, config.model.heads, config.model.max_positions, config.train_pairs) == (
        7, 3, 64, 4, 40, 50
    )  # fmt: skip


def test_the_command_refuses_a_bad_value_naming_it(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path), "--krl-ddl-steps", "900", "--steps", "100"])
    assert exit_info.value.code == 2
    assert "krl_ddl_steps" in capsys.readouterr().err
