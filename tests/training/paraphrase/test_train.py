"""Paraphraser training: DDL learns from real pairs, VSAR's gradient reaches the encoder through
the Gumbel sample, KRL's second stage starts from the first stage's best checkpoint, a resumed
run ends where an uninterrupted one does, and bad configs are refused naming the field."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from training.paraphrase import train as train_module
from training.paraphrase.model import (
    SOURCE_TO_TARGET,
    TARGET_TO_SOURCE,
    LanguageModel,
    ModelConfig,
    ParaphraseTransformer,
)
from training.paraphrase.train import (
    TrainingConfig,
    TrainResult,
    greedy_pseudo_targets,
    gumbel_topk_sample,
    load_checkpoint,
    pad_batch,
    train,
    vsar_loss,
)

TINY = ModelConfig(
    vocab_size=5, d_model=32, heads=2, encoder_layers=1, decoder_layers=1, ff_dim=64, prior_layers=1, dropout=0.0
)


def tiny(**overrides: Any) -> TrainingConfig:
    """A few hundred real Quora pairs, a 32-wide one-layer model: seconds on one core."""
    base: dict[str, Any] = dict(setting="ddl", steps=12, krl_ddl_steps=6, batch_size=16, train_pairs=300, validation_pairs=100,
                                prior_steps=4, eval_every=3, warmup_steps=2, lr=3e-3, model=TINY)  # fmt: skip
    return TrainingConfig(**{**base, **overrides})


class Killed(Exception):
    """The process dies mid-run (simulated)."""


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def data_dir(rarb_data: Path) -> Path:
    return rarb_data.parent


@pytest.fixture(scope="module")
def ddl_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return train(tiny(steps=40, eval_every=10), tmp_path_factory.mktemp("ddl"), data_dir, progress=False)


@pytest.fixture(scope="module")
def krl_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    # a learning rate high enough that stage 1's validation loss rises again after its best step
    config = tiny(setting="krl", steps=10, krl_ddl_steps=6, eval_every=1, lr=0.05, warmup_steps=0)
    return train(config, tmp_path_factory.mktemp("krl"), data_dir, progress=False)


def test_ddl_loss_drops_on_real_pairs(ddl_run: TrainResult) -> None:
    history = ddl_run.history
    assert [h["step"] for h in history] == [10, 20, 30, 40]
    assert history[-1]["ddl"] < history[0]["ddl"] - 1.0
    assert ddl_run.best_valid_loss < math.log(ddl_run.model.config.vocab_size) - 1.0  # well below a uniform guess
    assert ddl_run.best_valid_loss == min(h["valid_loss"] for h in history)
    assert not ddl_run.model.training


def test_the_checkpoint_holds_the_returned_model_tokenizer_and_config(ddl_run: TrainResult) -> None:
    model, tokenizer, config = load_checkpoint(ddl_run.checkpoint)
    assert config == ddl_run.config and tokenizer.to_str() == ddl_run.tokenizer.to_str()
    assert same_weights(weights(model), weights(ddl_run.model))
    assert model.config.vocab_size == tokenizer.get_vocab_size() == ddl_run.counts["vocab_size"]
    assert ddl_run.counts["labelled_pairs"] == 300


def test_vsar_reconstruction_reaches_the_encoder_through_the_gumbel_sample() -> None:
    """The x -> y direction tag is used only to encode x for q(y | x), so its gradient from the
    reconstruction loss (beta 0) can only come through the latent sample."""
    torch.manual_seed(0)
    model = ParaphraseTransformer(dataclasses.replace(TINY, vocab_size=60)).train()
    sources, mask = pad_batch([[5, 6, 7, 8], [9, 10], [11, 12, 13]], 0, 2, 3)
    terms = vsar_loss(model, None, sources, mask, temperature=1.0, top_k=10, beta=0.0, max_length=8)
    terms.loss.backward()
    assert model.directions is not None and model.directions.weight.grad is not None
    assert model.directions.weight.grad[SOURCE_TO_TARGET].abs().sum() > 0
    assert model.directions.weight.grad[TARGET_TO_SOURCE].abs().sum() > 0


def test_vsar_kl_to_the_prior_is_non_negative_and_weighted_by_beta() -> None:
    torch.manual_seed(1)
    model = ParaphraseTransformer(dataclasses.replace(TINY, vocab_size=60)).eval()
    prior = LanguageModel(model.config).eval()
    sources, mask = pad_batch([[5, 6, 7, 8], [9, 10]], 0, 2, 3)
    for beta in (0.5, 2.0):
        torch.manual_seed(2)
        terms = vsar_loss(model, prior, sources, mask, temperature=0.5, top_k=5, beta=beta, max_length=6)
        assert terms.kl.item() >= 0.0
        assert math.isclose(terms.loss.item(), terms.reconstruction.item() + beta * terms.kl.item(), rel_tol=1e-5)


def test_gumbel_sample_is_one_hot_on_the_top_k() -> None:
    torch.manual_seed(3)
    logits = torch.randn(4, 7, 50, requires_grad=True)
    sample = gumbel_topk_sample(logits, temperature=0.5, top_k=3)
    assert torch.equal(sample.detach().sum(-1), torch.ones(4, 7))
    top3 = logits.topk(3, dim=-1).indices
    assert bool((sample.detach().argmax(-1, keepdim=True) == top3).any(-1).all())
    (sample * torch.randn(50)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0  # straight-through: a soft gradient


def test_pseudo_targets_end_with_sep_and_pad_after_it() -> None:
    torch.manual_seed(4)
    model = ParaphraseTransformer(dataclasses.replace(TINY, vocab_size=60)).eval()
    sources, mask = pad_batch([[5, 6, 7], [8]], 0, 2, 3)
    pseudo = greedy_pseudo_targets(model, sources, mask, max_length=5)
    assert pseudo.shape[1] <= 1 + 6 and bool((pseudo[:, 0] == 2).all())
    for row in pseudo.tolist():
        end = row.index(3)  # every row ends, at the latest after max_length tokens
        assert end <= 6 and all(t == 0 for t in row[end + 1 :]) and 0 not in row[:end]


def test_krl_stage_two_starts_from_stage_one_s_best_checkpoint(krl_run: TrainResult) -> None:
    stage1 = [h for h in krl_run.history if h["stage"] == "ddl"]
    start = next(h for h in krl_run.history if h["stage"] == "krl-stage-2-start")
    best = min(stage1, key=lambda h: h["valid_loss"])
    assert best["step"] != stage1[-1]["step"], "precondition: stage 1 must end past its best step"
    assert start["from_step"] == best["step"]
    assert start["valid_loss"] == pytest.approx(best["valid_loss"], rel=1e-6)  # the same weights
    stage2 = [h for h in krl_run.history if h["stage"] == "ddl+vsar"]
    assert [h["step"] for h in stage2] == [7, 8, 9, 10]
    assert all(h["kl"] >= 0.0 and h["reconstruction"] > 0.0 for h in stage2)
    temperatures = [h["temperature"] for h in stage2]
    assert temperatures[0] == pytest.approx(10.0) and temperatures[-1] == pytest.approx(0.01)  # annealed over stage 2
    assert krl_run.best_valid_loss <= best["valid_loss"]


def test_an_interrupted_run_resumes_from_its_last_checkpoint(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny(setting="ddl+vsar", steps=6, eval_every=2)
    whole = train(config, tmp_path / "whole", data_dir, progress=False)

    real_step = train_module._train_step
    calls: list[int] = []
    crash = [True]

    def crash_after_four(run: Any, optimizer: Any, step: int, stage_start: int) -> dict[str, float]:
        if crash[0] and len(calls) == 4:
            raise Killed("killed after 4 steps")
        calls.append(step)
        return real_step(run, optimizer, step, stage_start)

    monkeypatch.setattr(train_module, "_train_step", crash_after_four)
    with pytest.raises(Killed):
        train(config, tmp_path / "resumed", data_dir, progress=False)
    assert calls == [0, 1, 2, 3]  # its last checkpoint is at step 4
    calls.clear()
    crash[0] = False
    reported: list[dict[str, Any]] = []
    resumed = train(config, tmp_path / "resumed", data_dir, progress=False, resume=True,
                    on_checkpoint=lambda directory, metrics: reported.append(metrics))  # fmt: skip
    assert calls == [4, 5]  # only the steps after the checkpoint run again
    assert [m["step"] for m in reported] == [6] and reported[0]["best_valid_loss"] == resumed.best_valid_loss
    assert same_weights(weights(resumed.model), weights(whole.model))
    assert [h["step"] for h in resumed.history] == [h["step"] for h in whole.history] == [2, 4, 6]

    calls.clear()
    train(config, tmp_path / "resumed", data_dir, progress=False, resume=False)
    assert calls == list(range(6))  # resume=False starts over


def test_a_run_is_deterministic_and_the_seed_matters(data_dir: Path, tmp_path: Path, ddl_run: TrainResult) -> None:
    again = train(ddl_run.config, tmp_path / "again", data_dir, progress=False)
    assert same_weights(weights(again.model), weights(ddl_run.model))
    other = train(dataclasses.replace(ddl_run.config, seed=1, steps=10), tmp_path / "other", data_dir, progress=False)
    assert other.counts["labelled_pairs"] == 300
    first = train(dataclasses.replace(ddl_run.config, steps=10), tmp_path / "first", data_dir, progress=False)
    assert not same_weights(weights(other.model), weights(first.model))


def test_a_checkpoint_of_another_config_is_not_resumed(data_dir: Path, tmp_path: Path) -> None:
    train(tiny(steps=2, eval_every=2), tmp_path, data_dir, progress=False)
    with pytest.raises(ValueError, match="another TrainingConfig"):
        train(tiny(steps=3, eval_every=2), tmp_path, data_dir, progress=False)


@pytest.mark.parametrize(
    ("field", "value"),
    [("setting", "semi"), ("dataset", "wiki"), ("label_fraction", 0.0), ("label_fraction", float("nan")),
     ("steps", 0), ("batch_size", 0), ("lr", float("nan")), ("lr", 0.0), ("top_k", 0), ("temperature_end", 0.0),
     ("temperature_start", 0.001), ("beta", -1.0), ("eval_every", 0), ("max_length", 0), ("prior_steps", 0),
     ("warmup_steps", -1), ("max_grad_norm", float("inf"))],
)  # fmt: skip
def test_an_invalid_config_is_refused_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=f"TrainingConfig.{field} must be"):
        tiny(**{"setting": "krl", field: value})


def test_krl_needs_a_first_stage_shorter_than_the_run() -> None:
    with pytest.raises(ValueError, match="TrainingConfig.krl_ddl_steps"):
        tiny(setting="krl", steps=6, krl_ddl_steps=6)
    with pytest.raises(ValueError, match="max_positions"):
        tiny(max_length=40)


def test_config_round_trips_through_a_dict() -> None:
    config = tiny(setting="ddl+vsar", label_fraction=0.1)
    assert TrainingConfig.from_dict(config.to_dict()) == config
    assert TrainingConfig.from_dict({"setting": "ddl", "model": {"d_model": 64, "heads": 2}}).model.d_model == 64
    with pytest.raises(ValueError, match="unknown TrainingConfig keys: colour"):
        TrainingConfig.from_dict({"colour": "blue"})


@pytest.mark.parametrize("device", ["cuda:99", "tpu", "gpu", "cpu:x"])
def test_a_device_torch_cannot_use_here_is_refused_before_training(device: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="device"):
        train(tiny(steps=2, eval_every=1), tmp_path, progress=False, device=device)
    assert not (tmp_path / "state.pt").exists()
