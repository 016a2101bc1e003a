"""Train the cross-encoder: listwise cross-entropy over each group's candidates, AdamW, linear warm-up.

Each step draws `batch_groups` groups (`GroupSampler`: a source by its weight, then a group of it
uniformly, from `numpy.random.default_rng([seed, rank, step])`, so a resumed or repeated run draws
the same batches), scores every (query, candidate) pair of them in one forward pass and takes, per
group, the cross-entropy of the softmax over its candidates' logits against the relevant one — the
listwise loss of RankNet's successors (Cao et al. 2007, "ListNet"; as a softmax over one positive
and its negatives it is the loss of the MS MARCO/RocketQA rerankers, Qu et al. 2021 §3.2) —
averaged over the groups. AdamW (Loshchilov & Hutter 2019) with weight decay 0.01, the learning
rate warmed up linearly over the first `warmup_fraction` of the steps and decayed linearly to 0
(BERT's schedule, Devlin et al. 2019 §A.2), gradient norm clipped to 1.0. The word embeddings
(11.7M of MiniLM's 22.7M parameters) stay frozen by default: a few hundred steps on 2 cores
update only the rows they see, and the AdamW state of the whole table would cost more time than
the transformer layers' backward pass. Deterministic on the CPU: the same config and data give the
same weights (dropout is seeded by `torch.manual_seed(seed)`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

from training.rerank.data import Group
from training.rerank.model import encode_pairs

if TYPE_CHECKING:
    from transformers import BertForSequenceClassification, PreTrainedTokenizerFast

HEAD_PREFIXES = ("bert.pooler.", "classifier.")  # the pooler over [CLS] and the one-logit layer
CHUNK_PAIRS = 16  # pairs per forward pass in `train` (length-sorted)
GENERAL = "general"  # the source name of the Quora + MRPC groups


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Steps, batch and optimiser.

    Attributes:
        steps: optimiser steps.
        batch_groups: groups per step (per worker on Ray).
        lr: peak learning rate.
        warmup_fraction: share of the steps over which the learning rate rises linearly from 0.
        weight_decay: AdamW's decoupled weight decay (not on biases and LayerNorm weights).
        max_grad_norm: gradient norm clip.
        general_share: the share of groups drawn from the general data when RAR-b is there too
            (the RAR-b files share the rest equally, so TempReason's 10,000 rows do not drown αNLI's 1,500).
        freeze_embeddings: keep the word embeddings fixed.
        head_lr_multiplier: the pooler and classifier learn this many times faster (the head is new
            and must amplify the small input-dependence of MiniLM's `[CLS]`, see `CrossEncoderConfig.dropout`).
        train_max_length: pairs are truncated to this many tokens while training (0: the model's
            max length): attention's cost grows with it, and on 2 CPU cores a step at 256 tokens
            costs several times one at 128. The served model keeps its own max length.
        seed: batches, dropout and the head's initialisation.
    """

    steps: int = 300
    batch_groups: int = 8
    lr: float = 2e-4
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    general_share: float = 0.5
    freeze_embeddings: bool = True
    head_lr_multiplier: float = 10.0
    train_max_length: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_groups < 1:
            raise ValueError(f"steps and batch_groups must be >= 1, got {self.steps}, {self.batch_groups}")
        if not 0.0 <= self.general_share <= 1.0 or not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError("general_share must be in [0, 1] and warmup_fraction in [0, 1)")
        if not 0.0 <= self.lr < 1.0 or not 0.0 < self.head_lr_multiplier < 1e6:  # False for NaN too (lr 0: no update)
            raise ValueError(f"lr must be in [0, 1) and head_lr_multiplier > 0, got {self.lr}, {self.head_lr_multiplier}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class GroupSampler:
    """Draws batches of groups from named sources by weight, reproducibly per (seed, rank, step)."""

    def __init__(self, sources: Mapping[str, Sequence[Group]], weights: Mapping[str, float], seed: int = 0) -> None:
        """Args:
            sources: name -> groups (empty sources are ignored).
            weights: name -> relative weight (> 0) of each non-empty source.
            seed: the draw's seed.
        Raises:
            ValueError: no source has groups, or a source has no positive weight.
        """
        self.names = [n for n, groups in sources.items() if groups]
        if not self.names:
            raise ValueError("no training groups: every source is empty")
        self.sources = {n: list(sources[n]) for n in self.names}
        w = np.array([float(weights.get(n, 0.0)) for n in self.names])
        if (w <= 0).any():
            raise ValueError(f"every source needs a positive weight: {dict(zip(self.names, w.tolist(), strict=True))}")
        self.probabilities = w / w.sum()
        self.seed = seed

    def batch(self, step: int, size: int, rank: int = 0) -> list[Group]:
        """`size` groups for `step` (on worker `rank`): the same arguments give the same groups."""
        rng = np.random.default_rng([self.seed, rank, step])
        picks = rng.choice(len(self.names), size=size, p=self.probabilities)
        return [self.sources[self.names[k]][int(rng.integers(len(self.sources[self.names[k]])))] for k in picks]


def mixture_weights(sources: Mapping[str, Sequence[Group]], general_share: float) -> dict[str, float]:
    """`general_share` for `GENERAL`, the rest split equally over the other non-empty sources (all of
    it to whichever side is alone)."""
    others = [n for n, g in sources.items() if g and n != GENERAL]
    has_general = bool(sources.get(GENERAL))
    if not others:
        return {GENERAL: 1.0} if has_general else {}
    rest = 1.0 - general_share if has_general else 1.0
    weights = {n: rest / len(others) for n in others}
    if has_general:
        weights[GENERAL] = general_share
    return weights


def listwise_loss(logits: torch.Tensor, sizes: Sequence[int], labels: torch.Tensor) -> torch.Tensor:
    """Mean over groups of the cross-entropy of softmax(group's logits) against its relevant candidate.

    Args:
        logits: float [sum(sizes)]: the groups' candidates, group after group.
        sizes: candidates per group (>= 1 each).
        labels: int64 [groups]: the relevant candidate's index within its group.
    Returns:
        a scalar tensor (nats).
    """
    width = max(sizes)
    mask = torch.arange(width).unsqueeze(0) < torch.tensor(list(sizes)).unsqueeze(1)  # [groups, width]
    padded = logits.new_full((len(sizes), width), float("-inf"))
    padded[mask] = logits
    return torch.nn.functional.cross_entropy(padded, labels)


def make_optimizer(model: torch.nn.Module, config: TrainingConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; no decay on biases and LayerNorm weights (BERT's practice).

    With `config.freeze_embeddings` the word embeddings are set `requires_grad=False` first.
    """
    if config.freeze_embeddings:
        for name, param in model.named_parameters():
            if name.endswith("word_embeddings.weight"):
                param.requires_grad_(False)
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            head = name.startswith(HEAD_PREFIXES)
            no_decay = name.endswith("bias") or "LayerNorm" in name
            groups.setdefault((head, no_decay), []).append(param)
    return torch.optim.AdamW(
        [{"params": params, "weight_decay": 0.0 if no_decay else config.weight_decay, "lr_scale": config.head_lr_multiplier if head else 1.0}
         for (head, no_decay), params in groups.items()],
        lr=config.lr,
    )  # fmt: skip


def lr_at(step: int, config: TrainingConfig) -> float:
    """The learning rate of step `step` (0-based): linear warm-up, then linear decay to 0."""
    warmup = max(1, math.ceil(config.warmup_fraction * config.steps))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    return config.lr * max(0.0, (config.steps - step) / max(1, config.steps - warmup))


def train_step(model: BertForSequenceClassification, optimizer: torch.optim.Optimizer, tokenizer: PreTrainedTokenizerFast,
               groups: Sequence[Group], step: int, config: TrainingConfig, max_length: int,
               model_forward: torch.nn.Module | None = None, device: torch.device | None = None,
               chunk_pairs: int = 0) -> float:  # fmt: skip
    """One optimiser step on `groups`; returns the loss (nats).

    Args:
        model_forward: the module to call (e.g. its DistributedDataParallel wrapper); `model` when None.
        device: where the batch goes (the model's device); the CPU when None.
        chunk_pairs: > 0: the pairs go through the model in length-sorted chunks of this many (less
            padding; the same loss); 0: one forward pass (DistributedDataParallel needs one per backward).
    """
    for param_group in optimizer.param_groups:
        param_group["lr"] = lr_at(step, config) * param_group.get("lr_scale", 1.0)
    forward = model_forward if model_forward is not None else model
    sizes = [len(g.candidates) for g in groups]
    labels = torch.tensor([g.label for g in groups], dtype=torch.int64, device=device)
    pairs = [pair for g in groups for pair in g.pairs()]
    if chunk_pairs <= 0:
        chunks = [list(range(len(pairs)))]
    else:  # by length, so a long RAR-b pair pads only its own chunk (one backward over all chunks)
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        chunks = [order[i : i + chunk_pairs] for i in range(0, len(order), chunk_pairs)]
    parts = []
    for chunk in chunks:
        batch = encode_pairs(tokenizer, [pairs[i][0] for i in chunk], [pairs[i][1] for i in chunk], max_length)
        if device is not None:
            batch = {k: v.to(device) for k, v in batch.items()}
        parts.append(forward(**batch).logits.squeeze(-1))
    logits = torch.cat(parts)
    if len(chunks) > 1:
        position = torch.empty(len(pairs), dtype=torch.int64)
        position[torch.tensor([i for c in chunks for i in c])] = torch.arange(len(pairs))
        logits = logits[position.to(logits.device)]  # back to group order
    loss = listwise_loss(logits, sizes, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.max_grad_norm)
    optimizer.step()
    return float(loss.item())


def train(model: BertForSequenceClassification, tokenizer: PreTrainedTokenizerFast, sampler: GroupSampler, config: TrainingConfig,
          max_length: int, *, progress: bool = True, on_step: Callable[[int, float], None] | None = None) -> list[float]:  # fmt: skip
    """Train `model` in place for `config.steps` steps on the CPU.

    Args:
        model: a `new_cross_encoder` model.
        tokenizer: its tokenizer.
        sampler: the batches' source.
        config: steps, batch, optimiser, seed.
        max_length: tokens of a pair (truncation longest-first).
        progress: a tqdm bar (loss in its postfix).
        on_step: called with (step done, loss) after each step.
    Returns:
        the loss of every step.
    """
    torch.manual_seed(config.seed)
    model.train()
    optimizer = make_optimizer(model, config)
    losses = []
    with tqdm(total=config.steps, desc="train cross-encoder", unit="step", disable=not progress, leave=False) as bar:
        for step in range(config.steps):
            groups = sampler.batch(step, config.batch_groups)
            loss = train_step(model, optimizer, tokenizer, groups, step, config, max_length, chunk_pairs=CHUNK_PAIRS)
            losses.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
            if on_step is not None:
                on_step(step + 1, loss)
    model.eval()
    return losses


def accuracy(scores: Sequence[float], groups: Sequence[Group]) -> float:
    """MCR accuracy: the share of groups whose relevant candidate has the top score (ties: first index).

    Args:
        scores: one score per pair of `groups`, group after group.
        groups: the groups.
    """
    correct, start = 0, 0
    for g in groups:
        part = np.asarray(scores[start : start + len(g.candidates)])
        correct += int(np.argmax(part) == g.label)
        start += len(g.candidates)
    return correct / max(len(groups), 1)
