"""Paraphraser training on Ray Train: `facet train paraphrase` submits the job to a real Ray head
and the trained paraphraser lands in the model repository; on a local Ray, one worker trains a tiny
KRL model on real Quora pairs, reports checkpoints, and a run started again with the same storage
resumes from its latest checkpoint instead of training over; the command line takes every
TrainingConfig field."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from services.model_repository import ModelRepository
from services.paraphrase.catalog import Kind, Prop, encoder_name
from training.options import flag, to_argv
from training.paraphrase.build import DEFAULT_PARAPHRASER, MODEL_FIELDS, BuildOptions, tiny_options
from training.paraphrase.generate import encode_sources, greedy
from training.paraphrase.ray_job import RUN_NAME, main, train_paraphraser_on_ray
from training.paraphrase.train import TrainingConfig, train

pytestmark = pytest.mark.integration


def tiny_config() -> TrainingConfig:
    """The tiny test model's config with fewer steps (a checkpoint every 10 steps)."""
    return dataclasses.replace(tiny_options().training(), steps=30, krl_ddl_steps=20, eval_every=10, prior_steps=5)


def test_facet_train_submits_the_job_and_registers_the_paraphraser(ray_cluster, rarb_data: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    head = ray_cluster()
    repository = ModelRepository(tmp_path / "models")
    # paths as the job sees them: absolute (the job runs in an uploaded copy of the checkout)
    build = to_argv(tiny_options(steps=30, krl_ddl_steps=20, eval_every=10, prior_steps=5, evaluate=16, parity_sentences=8))
    job = ["--out", str(tmp_path / "runs"), "--data", str(rarb_data.parent), *build]
    result = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "train", "paraphrase", "--address", head.dashboard, "--repository", str(repository.root), "--", *job],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "facet train: submitted facet-train-paraphrase-" in result.stdout and "SUCCEEDED" in result.stdout
    assert f"registered {DEFAULT_PARAPHRASER} v1" in result.stdout  # the job's own output, streamed
    entry = repository.get(DEFAULT_PARAPHRASER)
    assert entry.kind == Kind.DECODER_STEP and repository.get(encoder_name(DEFAULT_PARAPHRASER)).kind == Kind.ENCODER
    assert entry.properties[Prop.SETTING] == "krl" and entry.properties[Prop.TRAINING]["steps"] == 30
    assert entry.properties[Prop.METRICS]["sentences"] == 16
    after = result.stdout[result.stdout.index(f"registered {DEFAULT_PARAPHRASER} v1") :]
    printed, _ = json.JSONDecoder().raw_decode(after[after.index("\n{") + 1 :])  # the summary the job prints
    assert printed["ray"]["step"] == 30 and printed["ray"]["start_step"] == 0


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray for the module's runs (`fit_on_ray` uses a running Ray rather than starting its own)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # its own, beside the session's head
    yield
    ray.shutdown()


def test_an_interrupted_run_resumes_from_its_latest_checkpoint(tmp_path: Path, rarb_data: Path, local_ray: None) -> None:
    data_dir = rarb_data.parent
    config = tiny_config()
    # the worker stops after its checkpoint of step 10, as a preempted worker would
    with pytest.raises(RuntimeError, match="(?s)paraphraser training failed on Ray: .*stopped after the checkpoint of step 10"):
        train_paraphraser_on_ray(config, tmp_path / "first", data_dir, tmp_path / "runs", stop_after_step=10)
    assert sorted((tmp_path / "runs" / RUN_NAME).glob("**/checkpoint_*")), "Ray Train kept no checkpoint"
    # started again with the same storage, it resumes at step 10, not at 0
    result, metrics = train_paraphraser_on_ray(config, tmp_path / "second", data_dir, tmp_path / "runs")
    assert metrics["done"] and metrics["start_step"] == 10 and metrics["step"] == config.steps
    assert result.config == config and result.checkpoint.is_file() and result.checkpoint.is_relative_to(tmp_path / "second")
    assert [h["step"] for h in result.history if h["stage"] in ("ddl", "ddl+vsar")] == [10, 20, 30]
    assert result.counts["labelled_pairs"] == 300
    # and ends where an uninterrupted run of the same config does (train is deterministic)
    # with the Ray worker's one thread (a 1-CPU worker gets OMP_NUM_THREADS=1): sums in the same order
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        uninterrupted = train(config, tmp_path / "local", data_dir, progress=False)
    finally:
        torch.set_num_threads(threads)
    expected = uninterrupted.model.state_dict()
    assert all(torch.equal(expected[k], v) for k, v in result.model.state_dict().items())
    assert [h["valid_loss"] for h in result.history] == [h["valid_loss"] for h in uninterrupted.history]
    # the model decodes real test sentences with its tokenizer
    sources = encode_sources(result.tokenizer, ["How can I learn to speak English fluently?"], config.max_length)
    with torch.inference_mode():
        tokens = greedy(result.model, sources, config.max_length)
    assert tokens[0] and all(0 <= t < result.model.config.vocab_size for t in tokens[0])

    # a finished run started again trains no step over: the same model from its final checkpoint
    again, last = train_paraphraser_on_ray(config, tmp_path / "third", data_dir, tmp_path / "runs")
    assert last["start_step"] == config.steps and again.history == result.history
    assert all(torch.equal(expected[k], v) for k, v in again.model.state_dict().items())


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
