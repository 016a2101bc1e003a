"""The listwise loss and the group sampler."""

from __future__ import annotations

import math

import torch

from training.rerank.data import Group
from training.rerank.train import GENERAL, GroupSampler, TrainingConfig, listwise_loss, lr_at, mixture_weights


def test_listwise_loss_is_the_cross_entropy_of_each_groups_softmax() -> None:
    # two groups: [2, 0, -1] with the gold first, [0.5, 1.5] with the gold second
    logits = torch.tensor([2.0, 0.0, -1.0, 0.5, 1.5])
    loss = listwise_loss(logits, [3, 2], torch.tensor([0, 1]))
    first = -2.0 + math.log(math.exp(2.0) + 1.0 + math.exp(-1.0))
    second = -1.5 + math.log(math.exp(0.5) + math.exp(1.5))
    assert math.isclose(loss.item(), (first + second) / 2, rel_tol=1e-6)


def test_listwise_loss_falls_when_the_gold_rises() -> None:
    logits = torch.zeros(4, requires_grad=True)
    listwise_loss(logits, [4], torch.tensor([2])).backward()
    assert logits.grad is not None and logits.grad[2] < 0 < logits.grad[0]


def test_sampler_is_reproducible_and_follows_the_weights() -> None:
    sources = {
        GENERAL: [Group(f"g{i}", ("a", "b"), 0, "quora") for i in range(10)],
        "x.csv": [Group("x", ("a", "b"), 1, "x.csv")],
    }
    weights = mixture_weights(sources, 0.75)
    assert weights == {GENERAL: 0.75, "x.csv": 0.25}
    sampler = GroupSampler(sources, weights, seed=3)
    assert sampler.batch(5, 8) == sampler.batch(5, 8) and sampler.batch(5, 8, rank=1) != sampler.batch(5, 8)
    drawn = [g.source for step in range(200) for g in sampler.batch(step, 8)]
    assert 0.70 < drawn.count("quora") / len(drawn) < 0.80


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    config = TrainingConfig(steps=100, lr=1e-4, warmup_fraction=0.1)
    assert lr_at(0, config) == 1e-5 and lr_at(9, config) == 1e-4
    assert lr_at(50, config) < lr_at(20, config) and lr_at(100, config) == 0.0


def test_length_sorted_chunks_give_the_loss_of_one_forward_pass() -> None:
    import copy

    from training.rerank.model import CrossEncoderConfig, load_tokenizer, new_cross_encoder
    from training.rerank.train import make_optimizer, train_step

    groups = [
        Group("Where is the Eiffel Tower?", ("It is in Paris, the capital of France, on the Champ de Mars.", "Bananas are yellow."), 0, "t"),
        Group("How do I learn Python?", ("Snakes shed their skin.", "Start with the official tutorial.", "It rains."), 1, "t"),
    ]
    config = TrainingConfig(steps=1, lr=0.0)
    tokenizer = load_tokenizer(64)
    model = new_cross_encoder(CrossEncoderConfig(layers=1, max_length=64)).eval()
    other = copy.deepcopy(model)
    whole = train_step(model, make_optimizer(model, config), tokenizer, groups, 0, config, 64, chunk_pairs=0)
    chunked = train_step(other, make_optimizer(other, config), tokenizer, groups, 0, config, 64, chunk_pairs=2)
    assert math.isclose(whole, chunked, rel_tol=1e-5)


def test_a_learning_rate_that_is_not_a_positive_number_is_refused_before_training() -> None:
    """NaN passes a `<= 0` check; it reached torch's optimiser as a traceback (new-user review)."""
    import pytest

    for lr in (float("nan"), -1e-4, float("inf"), 1.5):
        with pytest.raises(ValueError, match="lr must be in"):
            TrainingConfig(lr=lr)
