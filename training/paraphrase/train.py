"""Train a paraphraser: DDL, VSAR, DDL+VSAR and KRL (Yu et al., "Language as a Latent Sequence").

Settings (`TrainingConfig.setting`):

- ``"ddl"`` — dual-directional learning (paper §3.1): each labelled pair (x, y) trains both x -> y
  and y -> x in one shared encoder-decoder; the encoder's direction embedding tells the two apart.
  The loss is the mean of the two directions' token cross-entropies.
- ``"vsar"`` — variational sequence auto-reconstruction (paper §3.2), unsupervised only: the
  missing paraphrase y of an unlabelled sentence x is a latent sequence. Per batch (`vsar_loss`):
  greedy pseudo targets y^ = argmax decoding of q(y | x) with the KV-cache `step`, no gradient;
  a teacher-forced pass on y^ with gradient gives q's logits; a Gumbel-softmax sample restricted
  to the top-k logits, hard in the forward pass and soft in the backward pass (straight-through,
  Jang et al. 2017 §2; top-k 10 as the reference code), is encoded as a distribution over the
  vocabulary (direction target -> source) and x is reconstructed from it (cross-entropy); plus
  beta * KL(q(y_t | y^_<t, x) || p_LM(y_t | y^_<t)), the per-token KL (nats, summed over the
  vocabulary, averaged over y^'s tokens) to a frozen Transformer language-model prior trained first
  for `prior_steps` on the training text (labelled targets + unlabelled sentences; unlabelled only
  for ``"vsar"``). Positions after y^'s first [SEP] are masked out of the latent sequence and the
  KL. The temperature falls linearly from `temperature_start` (10) to `temperature_end` (0.01) over
  the VSAR steps (the reference code's schedule, after Balin et al. 2019).
  The reference code averages the element-wise KL over the vocabulary axis too (beta / V per
  token); here `beta` weighs the per-token KL itself.
- ``"ddl+vsar"`` — semi-supervised: each step's loss is the DDL loss of a labelled batch plus the
  VSAR loss of an unlabelled batch (one optimiser step).
- ``"krl"`` — knowledge-reinforced learning (paper §3.3), the two-stage schedule that fixes VSAR's
  cold start: DDL for `krl_ddl_steps`, keep the checkpoint with the best validation loss, then
  DDL+VSAR from it (a fresh optimiser, as the reference code) for the remaining steps.

Validation loss: x -> y token cross-entropy on the validation pairs (`training.paraphrase.data`),
every `eval_every` steps and at the end of each stage; the returned model is the best one (lowest
validation loss) of the run. Adam (the paper's optimiser) with a linear warm-up over `warmup_steps`
then a constant rate, gradient norm clipped to `max_grad_norm` (the reference code: 1). Batches are
length-bucketed (sorted by length within chunks of `BUCKET_BATCHES` batches, then shuffled) so
padding costs little. Deterministic: the batches of step i come from (seed, stream, epoch) and
dropout/Gumbel noise from `torch.manual_seed` of (seed, step), so a resumed run (`resume=True`
continues from the last checkpoint in `work_dir`, written every `eval_every` steps) ends with the
same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import Tensor
from tqdm import tqdm

from training.device import AUTO, resolve_device
from training.options import known_fields
from training.paraphrase.data import (
    DATASETS,
    DEFAULT_DATA_DIR,
    DEFAULT_MAX_LENGTH,
    SPECIAL_TOKENS,
    VALIDATION_PAIRS,
    Splits,
    build_tokenizer,
    encode_texts,
    label_split,
    load_splits,
    special_ids,
)
from training.paraphrase.model import (
    SOURCE_TO_TARGET,
    TARGET_TO_SOURCE,
    LanguageModel,
    ModelConfig,
    ParaphraseTransformer,
    sequence_loss,
)
from training.resume import resumable_state

__all__ = [
    "SETTINGS",
    "TrainResult",
    "TrainingConfig",
    "VsarTerms",
    "ddl_loss",
    "greedy_pseudo_targets",
    "gumbel_topk_sample",
    "load_checkpoint",
    "pad_batch",
    "train",
    "validation_loss",
    "vsar_loss",
]

SETTINGS = ("ddl", "vsar", "ddl+vsar", "krl")
BUCKET_BATCHES = 32  # a length bucket holds this many batches (sorted by length, then cut)
EVAL_BATCH = 128
LATENT_SLACK = 2  # a latent sequence has at most this many tokens more than its batch's longest sentence  # validation pairs per forward pass
STATE_FILE = "state.pt"  # the resumable checkpoint: weights, optimiser, step, history
BEST_FILE = "best.safetensors"  # the best validation checkpoint so far
PRIOR_FILE = "prior.safetensors"  # the trained LM prior
CHECKPOINT_FILE = "model.safetensors"  # the result: the best weights, configs in the metadata
TOKENIZER_FILE = "tokenizer.json"
_PLACEHOLDER_VOCAB = len(SPECIAL_TOKENS)  # `TrainingConfig.model.vocab_size` is replaced by the tokenizer's


def _default_model() -> ModelConfig:
    """128 wide, 2 + 2 layers, 4 heads (prior: 2 layers): sized for 2 CPU cores. Measured at batch 64
    on Quora (V = 16,652), one thread: a DDL step 1.5 s, a DDL+VSAR step 4.8 s (256 wide 3 + 3:
    3.6 s and 10.5 s; 192 wide 2 + 2: 2.1 s and 6.7 s). The output layer over the vocabulary is most of it."""
    return ModelConfig(vocab_size=_PLACEHOLDER_VOCAB)  # ModelConfig's defaults are these sizes


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """One training run: the setting, the data, the schedule and the model's sizes.

    The defaults are the default paraphraser (issue #15: KRL on all Quora labelled pairs) sized
    for a ~20-minute build on 2 idle cores: 150 prior steps, 520 DDL steps, 120 DDL+VSAR steps at
    batch 64 (~1,470 s on one thread by the measured step times; two threads are faster on idle cores).

    Attributes:
        setting: "ddl", "vsar", "ddl+vsar" or "krl" (module docstring).
        dataset: "quora" or "mscoco" (`training.paraphrase.data.DATASETS`).
        label_fraction: share of the train pairs that keep their targets, in (0, 1]; the sources of
            the others are the unlabelled text (at 1.0 the labelled sources are).
        max_length: tokens of a sentence, [CLS]/[SEP] excluded (the paper: 20); longer ones are truncated.
        steps: optimiser steps in all (KRL: both stages).
        krl_ddl_steps: KRL's first (DDL) stage, < steps; ignored by the other settings.
        batch_size: labelled pairs per DDL batch and unlabelled sentences per VSAR batch.
        lr: Adam's learning rate after warm-up (the reference code: 2e-4 at 512 wide on a GPU; at
            128 wide, 80 DDL steps reached a validation loss of 5.72 / 5.49 / 5.34 nats at 5e-4 / 1e-3 / 2e-3).
        warmup_steps: steps of linear warm-up at the start of each stage.
        max_grad_norm: gradient norm clip (the reference code: 1).
        seed: label split, batches, initialisation, dropout and Gumbel noise.
        top_k: the Gumbel-softmax sample's support: the k highest logits (the reference: 10).
        temperature_start, temperature_end: the Gumbel-softmax temperature's linear schedule over
            the VSAR steps (the reference: 10 -> 0.01).
        beta: weight of KL(q || p_LM) per latent token (the paper's beta, 1).
        prior_steps: optimiser steps of the LM prior before VSAR (not used by "ddl").
        eval_every: steps between validation losses and resumable checkpoints.
        validation_pairs: pairs carved from train for validation (`load_splits`).
        train_pairs: > 0: only the first this many deduplicated train pairs (tiny test models); 0: all.
        min_piece_count: a WordPiece piece's least count in the training text to join the vocabulary.
        model: the encoder-decoder's sizes; `vocab_size` and the special ids are the tokenizer's.
    """

    setting: str = "krl"
    dataset: str = "quora"
    label_fraction: float = 1.0
    max_length: int = DEFAULT_MAX_LENGTH
    steps: int = 640
    krl_ddl_steps: int = 520
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    max_grad_norm: float = 1.0
    seed: int = 0
    top_k: int = 10
    temperature_start: float = 10.0
    temperature_end: float = 0.01
    beta: float = 1.0
    prior_steps: int = 150
    eval_every: int = 130
    validation_pairs: int = VALIDATION_PAIRS
    train_pairs: int = 0
    min_piece_count: int = 1
    model: ModelConfig = dataclasses.field(default_factory=_default_model)

    def __post_init__(self) -> None:
        def fail(name: str, rule: str) -> None:
            raise ValueError(f"TrainingConfig.{name} must be {rule}, got {getattr(self, name)!r}")

        if self.setting not in SETTINGS:
            fail("setting", f"one of {', '.join(SETTINGS)}")
        if self.dataset not in DATASETS:
            fail("dataset", f"one of {', '.join(sorted(DATASETS))}")
        if not 0.0 < self.label_fraction <= 1.0:  # False for NaN too
            fail("label_fraction", "in (0, 1]")
        for name in ("max_length", "steps", "batch_size", "top_k", "eval_every", "validation_pairs", "min_piece_count"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                fail(name, "an integer >= 1")
        for name in ("krl_ddl_steps", "warmup_steps", "prior_steps", "train_pairs", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                fail(name, "an integer >= 0")
        if self.setting == "krl" and not 1 <= self.krl_ddl_steps < self.steps:
            fail("krl_ddl_steps", f"in [1, steps) = [1, {self.steps}) for setting 'krl'")
        if self.setting in ("vsar", "ddl+vsar", "krl") and self.prior_steps < 1:
            fail("prior_steps", f">= 1 for setting {self.setting!r} (VSAR's KL needs a trained prior)")
        if not 0.0 < self.lr < 1.0:
            fail("lr", "in (0, 1)")
        if not 0.0 < self.max_grad_norm < math.inf:
            fail("max_grad_norm", "a positive number")
        if not 0.0 < self.temperature_end < math.inf:
            fail("temperature_end", "a positive number")
        if not self.temperature_end <= self.temperature_start < math.inf:
            fail("temperature_start", f"a number >= temperature_end ({self.temperature_end})")
        if not 0.0 <= self.beta < math.inf:
            fail("beta", "a number >= 0")
        if not isinstance(self.model, ModelConfig):
            fail("model", "a ModelConfig")
        if self.model.max_positions < self.max_length + 2:
            raise ValueError(
                f"TrainingConfig.model.max_positions ({self.model.max_positions}) must be >= max_length + 2 "
                f"({self.max_length + 2}: [CLS] and [SEP])"
            )

    @property
    def vsar_steps(self) -> int:
        """Steps that take a VSAR loss (the temperature schedule's length)."""
        return {"ddl": 0, "vsar": self.steps, "ddl+vsar": self.steps, "krl": self.steps - self.krl_ddl_steps}[
            self.setting
        ]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        """The config of `to_dict` (or a partial dict: missing keys take their defaults).

        Raises:
            ValueError: an unknown key or an invalid value.
        """
        values = known_fields(cls, data)
        if isinstance(values.get("model"), dict):
            model = {"vocab_size": _PLACEHOLDER_VOCAB, **values["model"]}
            values["model"] = ModelConfig.from_dict(model)
        return cls(**values)


@dataclasses.dataclass
class TrainResult:
    """What `train` returns.

    Attributes:
        model: the best-validation encoder-decoder, in eval mode.
        tokenizer: its tokenizer (`build_tokenizer` on the training text).
        config: the run's config.
        history: one dict per evaluation: step, stage, setting losses (nats), temperature, valid_loss, time_s.
        best_valid_loss: the model's validation x -> y cross-entropy (nats per token).
        time_s: wall time of the run (prior included; a resumed run counts its earlier part too).
        checkpoint: the model's weights (safetensors; the model and training configs and the
            tokenizer in its metadata, see `load_checkpoint`).
        counts: labelled pairs, unlabelled sentences, validation pairs, dedupe drops, vocabulary size.
    """

    model: ParaphraseTransformer
    tokenizer: Tokenizer
    config: TrainingConfig
    history: list[dict[str, Any]]
    best_valid_loss: float
    time_s: float
    checkpoint: Path
    counts: dict[str, Any] = dataclasses.field(default_factory=dict)


# -- batches --------------------------------------------------------------------------------------
def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, bos_id: int, eos_id: int) -> tuple[Tensor, Tensor]:
    """[CLS] s [SEP] for each token-id sequence, right-padded.

    Returns:
        ids int64 [B, max len + 2] and attention mask int64 [B, max len + 2] (1 for real tokens).
    """
    width = max(len(s) for s in sequences) + 2
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.int64)
    for i, s in enumerate(sequences):
        ids[i, : len(s) + 2] = torch.tensor([bos_id, *s, eos_id], dtype=torch.int64)
    return ids, (ids != pad_id).to(torch.int64)


class BucketSampler:
    """Length-bucketed batches of indices, reproducible per (seed, name, epoch)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, name: str) -> None:
        self.lengths, self.batch_size, self.seed, self.name = list(lengths), batch_size, seed, name
        self._epoch = -1
        self._batches: list[list[int]] = []
        self.per_epoch = max(1, len(self.lengths) // batch_size)

    def _make(self, epoch: int) -> list[list[int]]:
        rng = random.Random(f"{self.seed}/{self.name}/{epoch}")
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        size = min(self.batch_size, len(order))
        batches = []
        chunk = size * BUCKET_BATCHES
        for start in range(0, len(order), chunk):
            part = sorted(order[start : start + chunk], key=lambda i: self.lengths[i])
            batches += [part[i : i + size] for i in range(0, len(part), size)]
        batches = [b for b in batches if len(b) == size][: self.per_epoch]  # whole batches only
        rng.shuffle(batches)
        return batches

    def batch(self, index: int) -> list[int]:
        """The indices of batch `index` (0-based over the whole run)."""
        epoch, position = divmod(index, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, self._make(epoch)
        return self._batches[position]


# -- losses ---------------------------------------------------------------------------------------
def _seq2seq_logits(model: ParaphraseTransformer, src: Tensor, src_mask: Tensor, tgt: Tensor, direction: int) -> Tensor:
    memory = model.encode(src, src_mask, direction)
    return model.decode(tgt[:, :-1], memory, src_mask)


def ddl_loss(
    model: ParaphraseTransformer, sources: Tensor, source_mask: Tensor, targets: Tensor, target_mask: Tensor
) -> Tensor:
    """Dual-directional learning (paper §3.1): mean of the x -> y and y -> x token cross-entropies.

    Args:
        sources, targets: [CLS] x [SEP] / [CLS] y [SEP] ids int64 [B, S] / [B, T] (`pad_batch`).
        source_mask, target_mask: their attention masks.
    Returns:
        a scalar (nats per token).
    """
    pad = model.config.pad_id
    forward = sequence_loss(
        _seq2seq_logits(model, sources, source_mask, targets, SOURCE_TO_TARGET), targets[:, 1:], pad
    )
    backward = sequence_loss(
        _seq2seq_logits(model, targets, target_mask, sources, TARGET_TO_SOURCE), sources[:, 1:], pad
    )
    return (forward + backward) / 2


@torch.no_grad()
def greedy_pseudo_targets(
    model: ParaphraseTransformer, sources: Tensor, source_mask: Tensor, max_length: int
) -> Tensor:
    """Greedy x -> y decoding with the KV-cache `step` (VSAR's pseudo targets y^; no gradient).

    Args:
        sources, source_mask: [CLS] x [SEP] ids int64 [B, S] and mask.
        max_length: most tokens before [SEP].
    Returns:
        ids int64 [B, 1 + n]: [CLS] then the decoded tokens; rows that ended earlier are padded after their [SEP].
    """
    c = model.config
    b, device = sources.shape[0], sources.device
    memory = model.encode(sources, source_mask, SOURCE_TO_TARGET)
    cross_keys, cross_values = model.cross_keys_values(memory)
    past_keys, past_values, past_mask = model.empty_cache(b, device)
    token = torch.full((b, 1), c.bos_id, dtype=torch.int64, device=device)
    out = [token]
    done = torch.zeros(b, dtype=torch.bool, device=device)
    forbidden = torch.tensor([c.pad_id, c.bos_id], device=device)
    for position in range(max_length + 1):
        log_probs, past_keys, past_values = model.step(
            token, torch.full((b, 1), position, dtype=torch.int64, device=device), past_keys, past_values, past_mask,
            cross_keys, cross_values, source_mask,
        )  # fmt: skip
        past_mask = torch.cat([past_mask, torch.ones(b, 1, dtype=torch.int64, device=device)], dim=1)
        if position == max_length:  # the last slot can only end the sentence
            token = torch.full((b, 1), c.eos_id, dtype=torch.int64, device=device)
        else:  # [PAD] and [CLS] never follow (they would end the latent sequence's mask early)
            token = log_probs.index_fill(1, forbidden, -math.inf).argmax(dim=-1, keepdim=True)
        token = token.masked_fill(done[:, None], c.pad_id)
        out.append(token)
        done |= token[:, 0] == c.eos_id
        if bool(done.all()):
            break
    return torch.cat(out, dim=1)


def gumbel_topk_sample(logits: Tensor, temperature: float, top_k: int) -> Tensor:
    """A straight-through Gumbel-softmax sample restricted to the top-k logits (Jang et al. 2017;
    the top-k restriction as the reference code's `gumbel_softmax_topk`).

    Args:
        logits: float [..., V].
        temperature: > 0.
        top_k: candidate tokens per position (>= 1).
    Returns:
        float [..., V]: one-hot in value (the sampled token), the tempered softmax's gradient.
    """
    values, indices = logits.topk(min(top_k, logits.shape[-1]), dim=-1)
    uniform = torch.rand_like(values).clamp(1e-20, 1.0 - 1e-7)
    gumbel = -torch.log(-torch.log(uniform))
    soft_k = torch.softmax((values + gumbel) / temperature, dim=-1)
    hard_k = F.one_hot(soft_k.argmax(dim=-1), soft_k.shape[-1]).to(soft_k.dtype)
    straight = hard_k - soft_k.detach() + soft_k
    return torch.zeros_like(logits).scatter(-1, indices, straight)


@dataclasses.dataclass
class VsarTerms:
    """VSAR's loss and its parts (scalars): `loss` = `reconstruction` + beta * `kl`."""

    loss: Tensor
    reconstruction: Tensor
    kl: Tensor


def vsar_loss(model: ParaphraseTransformer, prior: LanguageModel | None, sources: Tensor, source_mask: Tensor,
              temperature: float, top_k: int, beta: float, max_length: int) -> VsarTerms:  # fmt: skip
    """Variational sequence auto-reconstruction of unlabelled sentences (paper §3.2; module docstring).

    Args:
        model: the encoder-decoder (its train/eval mode is kept; greedy decoding runs in eval mode).
        prior: the frozen LM prior; None: no KL term (0).
        sources, source_mask: [CLS] x [SEP] ids int64 [B, S] and mask.
        temperature: the Gumbel-softmax temperature (> 0).
        top_k: the sample's support.
        beta: the KL's weight.
        max_length: most latent tokens before [SEP]; at most `LATENT_SLACK` more than the batch's
            longest sentence too (the reference code decodes as many tokens as the source has).
    Returns:
        `VsarTerms` (nats per token).
    """
    c = model.config
    training = model.training
    model.eval()
    longest = int(source_mask.sum(dim=1).max()) - 2  # the batch's longest sentence, [CLS]/[SEP] excluded
    pseudo = greedy_pseudo_targets(model, sources, source_mask, min(max_length, longest + LATENT_SLACK))  # [B, 1 + n]
    model.train(training)
    latent_in = pseudo[:, :-1]
    latent_mask = (pseudo != c.pad_id).to(torch.int64)  # [CLS], tokens up to and including the first [SEP]
    valid = latent_mask[:, 1:].to(torch.float32)  # the predicted positions of y^
    memory = model.encode(sources, source_mask, SOURCE_TO_TARGET)
    q_logits = model.decode(latent_in, memory, source_mask)  # [B, n, V]
    sample = gumbel_topk_sample(q_logits, temperature, top_k)
    bos = F.one_hot(pseudo[:, :1], c.vocab_size).to(sample.dtype)
    latent = torch.cat([bos, sample], dim=1)  # [B, 1 + n, V]: [CLS] then the sampled sequence
    latent_memory = model.encode(latent, latent_mask, TARGET_TO_SOURCE)
    reconstruction = sequence_loss(model.decode(sources[:, :-1], latent_memory, latent_mask), sources[:, 1:], c.pad_id)
    if prior is None or beta == 0.0:
        kl = q_logits.new_zeros(())
    else:
        with torch.no_grad():
            log_p = torch.log_softmax(prior(latent_in), dim=-1)
        log_q = torch.log_softmax(q_logits, dim=-1)
        per_token = (log_q.exp() * (log_q - log_p)).sum(dim=-1)  # [B, n], KL(q || p) >= 0
        kl = (per_token * valid).sum() / valid.sum().clamp_min(1.0)
    return VsarTerms(reconstruction + beta * kl, reconstruction, kl)


def prior_loss(prior: LanguageModel, tokens: Tensor) -> Tensor:
    """The LM prior's next-token cross-entropy on [CLS] y [SEP] ids [B, T] (nats per token)."""
    return sequence_loss(prior(tokens[:, :-1]), tokens[:, 1:], prior.config.pad_id)


@torch.no_grad()
def validation_loss(
    model: ParaphraseTransformer, sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]]
) -> float:
    """x -> y token cross-entropy (nats per token, over all target tokens incl. [SEP]) of token-id pairs, eval mode."""
    c = model.config
    device = next(model.parameters()).device
    training = model.training
    model.eval()
    total, tokens = 0.0, 0
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]) + len(targets[i]))
    for start in range(0, len(order), EVAL_BATCH):
        part = order[start : start + EVAL_BATCH]
        src, src_mask = pad_batch([sources[i] for i in part], c.pad_id, c.bos_id, c.eos_id)
        tgt, _ = pad_batch([targets[i] for i in part], c.pad_id, c.bos_id, c.eos_id)
        src, src_mask, tgt = src.to(device), src_mask.to(device), tgt.to(device)
        logits = _seq2seq_logits(model, src, src_mask, tgt, SOURCE_TO_TARGET)
        gold = tgt[:, 1:]
        total += float(
            F.cross_entropy(logits.reshape(-1, c.vocab_size), gold.reshape(-1), ignore_index=c.pad_id, reduction="sum")
        )
        tokens += int((gold != c.pad_id).sum())
    model.train(training)
    return total / max(tokens, 1)


# -- checkpoints ----------------------------------------------------------------------------------
def _save_weights(module: torch.nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, str(tmp), metadata=metadata)
    tmp.replace(path)


def _load_weights(module: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import load_file

    module.load_state_dict(load_file(str(path)))


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


def load_checkpoint(path: Path) -> tuple[ParaphraseTransformer, Tokenizer, TrainingConfig]:
    """The model (eval mode), tokenizer and training config of a `TrainResult.checkpoint`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a paraphraser checkpoint.
    """
    metadata = _metadata(path)
    if not {"model_config", "training_config", "tokenizer"} <= set(metadata):
        raise ValueError(f"{path} is not a paraphraser checkpoint (no model_config/training_config/tokenizer metadata)")
    model = ParaphraseTransformer(ModelConfig.from_dict(json.loads(metadata["model_config"])))
    _load_weights(model, path)
    return (
        model.eval(),
        Tokenizer.from_str(metadata["tokenizer"]),
        TrainingConfig.from_dict(json.loads(metadata["training_config"])),
    )


@functools.lru_cache(maxsize=4)
def _splits(dataset: str, data_dir: Path, validation_pairs: int) -> Splits:
    """`load_splits`, once per process (it reads and normalises ~100k sentences)."""
    return load_splits(dataset, data_dir, validation_pairs)


def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step) % (2**63)


# -- the run --------------------------------------------------------------------------------------
class _Run:
    """The state of one `train` call: data as token ids, model, prior, samplers."""

    def __init__(
        self, config: TrainingConfig, work_dir: Path, data_dir: Path, progress: bool, device: torch.device
    ) -> None:
        self.config, self.work_dir, self.progress, self.device = config, work_dir, progress, device
        splits = _splits(config.dataset, Path(data_dir).resolve(), config.validation_pairs)
        train_pairs = list(splits.train[: config.train_pairs] if config.train_pairs else splits.train)
        labels = label_split(train_pairs, config.label_fraction, config.seed)
        text = (
            [t for _, t in labels.labelled] + list(labels.unlabelled)
            if config.setting != "vsar"
            else list(labels.unlabelled)
        )
        self.prior_text = text
        self.tokenizer = build_tokenizer(labels.text(), config.min_piece_count)
        ids = special_ids(self.tokenizer)
        self.model_config = dataclasses.replace(
            config.model,
            vocab_size=self.tokenizer.get_vocab_size(),
            pad_id=ids["pad"],
            unk_id=ids["unk"],
            bos_id=ids["bos"],
            eos_id=ids["eos"],
        )
        n = config.max_length
        self.labelled_src = encode_texts(self.tokenizer, [s for s, _ in labels.labelled], n)
        self.labelled_tgt = encode_texts(self.tokenizer, [t for _, t in labels.labelled], n)
        self.unlabelled = encode_texts(self.tokenizer, list(labels.unlabelled), n)
        self.prior_ids = encode_texts(self.tokenizer, text, n)
        self.valid_src = encode_texts(self.tokenizer, [s for s, _ in splits.validation], n)
        self.valid_tgt = encode_texts(self.tokenizer, [t for _, t in splits.validation], n)
        self.counts = {
            **splits.counts(),
            "train_used": len(train_pairs),
            "labelled_pairs": len(labels.labelled),
            "unlabelled_sentences": len(labels.unlabelled),
            "prior_sentences": len(text),
            "vocab_size": self.model_config.vocab_size,
        }
        b = config.batch_size
        self.ddl_sampler = BucketSampler(
            [len(s) + len(t) for s, t in zip(self.labelled_src, self.labelled_tgt, strict=True)], b, config.seed, "ddl"
        )
        self.vsar_sampler = BucketSampler([len(s) for s in self.unlabelled], b, config.seed, "vsar")
        self.prior_sampler = BucketSampler([len(s) for s in self.prior_ids], b, config.seed, "prior")
        torch.manual_seed(config.seed)
        self.model = ParaphraseTransformer(self.model_config).to(device)
        self.prior: LanguageModel | None = None

    def batch(self, sequences: Sequence[Sequence[int]], indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        c = self.model_config
        ids, mask = pad_batch([sequences[i] for i in indices], c.pad_id, c.bos_id, c.eos_id)
        return ids.to(self.device), mask.to(self.device)

    def lr_at(self, stage_step: int) -> float:
        warmup = self.config.warmup_steps
        return self.config.lr * min(1.0, (stage_step + 1) / warmup) if warmup else self.config.lr

    def temperature_at(self, vsar_step: int) -> float:
        c = self.config
        if c.vsar_steps <= 1:
            return c.temperature_end
        return c.temperature_start + (c.temperature_end - c.temperature_start) * vsar_step / (c.vsar_steps - 1)

    def train_prior(self) -> None:
        """Trains the LM prior for `prior_steps` (or loads it from `work_dir`) and freezes it."""
        path = self.work_dir / PRIOR_FILE
        torch.manual_seed(_step_seed(self.config.seed, -1))
        prior = LanguageModel(self.model_config).to(self.device)
        tag = json.dumps(self.config.to_dict(), sort_keys=True)  # a prior left by another config is not reused
        if path.is_file() and _metadata(path).get("training_config") == tag:
            _load_weights(prior, path)
        else:
            prior.train()
            optimizer = torch.optim.Adam(prior.parameters(), lr=self.config.lr)
            with tqdm(
                total=self.config.prior_steps,
                desc="train LM prior",
                unit="step",
                disable=not self.progress,
                leave=False,
            ) as bar:
                for step in range(self.config.prior_steps):
                    torch.manual_seed(_step_seed(self.config.seed, -2 - step))
                    for group in optimizer.param_groups:
                        group["lr"] = self.lr_at(step)
                    tokens, _ = self.batch(self.prior_ids, self.prior_sampler.batch(step))
                    loss = prior_loss(prior, tokens)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(prior.parameters(), self.config.max_grad_norm)
                    optimizer.step()
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss.item():.3f}")
            _save_weights(prior, path, {"training_config": tag})
        prior.eval()
        for p in prior.parameters():
            p.requires_grad_(False)
        self.prior = prior


def _stage_of(config: TrainingConfig, step: int) -> str:
    if config.setting == "krl":
        return "ddl" if step < config.krl_ddl_steps else "ddl+vsar"
    return config.setting


def _train_step(run: _Run, optimizer: torch.optim.Optimizer, step: int, stage_start: int) -> dict[str, float]:
    """One optimiser step (global step `step`); returns its losses."""
    config, model = run.config, run.model
    stage = _stage_of(config, step)
    torch.manual_seed(_step_seed(config.seed, step))
    for group in optimizer.param_groups:
        group["lr"] = run.lr_at(step - stage_start)
    losses: dict[str, float] = {}
    total = torch.zeros((), device=run.device)
    if stage in ("ddl", "ddl+vsar"):
        indices = run.ddl_sampler.batch(step)
        src, src_mask = run.batch(run.labelled_src, indices)
        tgt, tgt_mask = run.batch(run.labelled_tgt, indices)
        ddl = ddl_loss(model, src, src_mask, tgt, tgt_mask)
        total = total + ddl
        losses["ddl"] = float(ddl.detach())
    if stage in ("vsar", "ddl+vsar"):
        vsar_step = step - (config.steps - config.vsar_steps)
        temperature = run.temperature_at(vsar_step)
        src, src_mask = run.batch(run.unlabelled, run.vsar_sampler.batch(vsar_step))
        terms = vsar_loss(model, run.prior, src, src_mask, temperature, config.top_k, config.beta, config.max_length)
        total = total + terms.loss
        losses.update(
            reconstruction=float(terms.reconstruction.detach()), kl=float(terms.kl.detach()), temperature=temperature
        )
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    optimizer.step()
    losses["loss"] = float(total.detach())
    return losses


def train(config: TrainingConfig, work_dir: Path, data_dir: Path = DEFAULT_DATA_DIR, progress: bool = True,
          resume: bool = True, *, on_checkpoint: Callable[[Path, dict[str, Any]], None] | None = None,
          device: str = AUTO) -> TrainResult:  # fmt: skip
    """Train a paraphraser in the config's setting (module docstring).

    Args:
        config: the run.
        work_dir: checkpoints (`state.pt` every `eval_every` steps, `best.safetensors`,
            `prior.safetensors`) and the result (`model.safetensors`, `tokenizer.json`).
        data_dir: the shared benchmark data (`../shared/data`).
        progress: tqdm bars.
        resume: continue from `work_dir`'s last checkpoint when it holds one of this config
            (False: start over, discarding it).
        on_checkpoint: called after each resumable checkpoint with (`work_dir`, metrics: step,
            stage, valid_loss, best_valid_loss, best_step, time_s) — e.g. to report it to Ray Train.
        device: where the steps run (`training.device`: "auto", the default, is CUDA when torch has a
            GPU; "cpu", "cuda", "cuda:N"). Checkpoints are device-free, so a
            run resumes on another device; the same seed gives the same steps on the CPU, but CUDA
            kernels are not bitwise deterministic, so a CUDA run only matches itself approximately.
    Returns:
        `TrainResult` with the best-validation model in eval mode, on the CPU (where export runs).
    Raises:
        ValueError: `work_dir` holds a checkpoint of another config and `resume` is True.
        FileNotFoundError: the data files are missing.
        ValueError: `device` is not one torch can use here (`resolve_device`).
    """
    torch_device = resolve_device(device)
    started = time.perf_counter()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    state_path = work_dir / STATE_FILE
    state = resumable_state(state_path, config, resume, [work_dir / name for name in (BEST_FILE, PRIOR_FILE, CHECKPOINT_FILE)])

    run = _Run(config, work_dir, data_dir, progress, torch_device)
    (work_dir / TOKENIZER_FILE).write_text(run.tokenizer.to_str(), encoding="utf-8")
    model = run.model
    history: list[dict[str, Any]] = []
    best_valid, best_step, step, elapsed_before = math.inf, -1, 0, 0.0
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, best_valid, best_step = state["history"], state["best_valid_loss"], state["best_step"]
        step, elapsed_before = state["step"], state["time_s"]
    if config.vsar_steps and step < config.steps:
        run.train_prior()

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - started

    def evaluate(at: int, stage: str, window: list[dict[str, float]]) -> None:
        nonlocal best_valid, best_step
        valid = validation_loss(model, run.valid_src, run.valid_tgt)
        entry: dict[str, Any] = {"step": at, "stage": stage, "valid_loss": valid, "time_s": elapsed()}
        for key in ("loss", "ddl", "reconstruction", "kl", "temperature"):
            values = [w[key] for w in window if key in w]
            if values:
                entry[key] = sum(values) / len(values)
        history.append(entry)
        if valid < best_valid:
            best_valid, best_step = valid, at
            _save_weights(model, work_dir / BEST_FILE)

    def checkpoint(at: int) -> None:
        tmp = state_path.with_suffix(".tmp")
        torch.save({"config": config.to_dict(), "step": at, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "history": history, "best_valid_loss": best_valid, "best_step": best_step, "time_s": elapsed()}, tmp)  # fmt: skip
        tmp.replace(state_path)
        if on_checkpoint is not None:
            last = history[-1] if history else {}
            on_checkpoint(work_dir, {"step": at, "stage": last.get("stage"), "valid_loss": last.get("valid_loss"),
                                     "best_valid_loss": best_valid, "best_step": best_step, "time_s": elapsed()})  # fmt: skip

    model.train()
    window: list[dict[str, float]] = []
    stage_start = config.krl_ddl_steps if config.setting == "krl" and step >= config.krl_ddl_steps else 0
    with tqdm(total=config.steps, initial=step, desc=f"train paraphraser ({config.setting})", unit="step",
              disable=not progress, leave=False) as bar:  # fmt: skip
        while step < config.steps:
            if config.setting == "krl" and step == config.krl_ddl_steps:
                # KRL stage 2: from stage 1's best checkpoint, with a fresh optimiser (paper §3.3)
                _load_weights(model, work_dir / BEST_FILE)
                optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
                stage_start = step
                history.append({"step": step, "stage": "krl-stage-2-start", "from_step": best_step,
                                "valid_loss": validation_loss(model, run.valid_src, run.valid_tgt), "time_s": elapsed()})  # fmt: skip
            window.append(_train_step(run, optimizer, step, stage_start))
            step += 1
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in window[-1].items() if k in ("ddl", "reconstruction", "kl")})
            stage_end = step == config.steps or (config.setting == "krl" and step == config.krl_ddl_steps)
            if step % config.eval_every == 0 or stage_end:
                evaluate(step, _stage_of(config, step - 1), window)
                window = []
                checkpoint(step)

    _load_weights(model, work_dir / BEST_FILE)
    model.to("cpu").eval()
    metadata = {
        "model_config": json.dumps(run.model_config.to_dict()),
        "training_config": json.dumps(config.to_dict()),
        "tokenizer": run.tokenizer.to_str(),
        "best_valid_loss": repr(best_valid),
        "best_step": str(best_step),
    }
    _save_weights(model, work_dir / CHECKPOINT_FILE, metadata)
    return TrainResult(
        model, run.tokenizer, config, history, best_valid, elapsed(), work_dir / CHECKPOINT_FILE, run.counts
    )


def measure_step_seconds(config: TrainingConfig, data_dir: Path = DEFAULT_DATA_DIR, steps: int = 3,
                         device: str = "cpu") -> dict[str, float]:  # fmt: skip
    """Seconds per optimiser step of the config's model at its batch size, a DDL step and a DDL+VSAR
    step (the median of `steps` after one warm-up step each), as wall time and as the process's CPU
    time (which on a busy machine still tells what one thread would take on an idle core); the
    prior is untrained (it costs the same). For sizing runs, not for tests.

    Returns:
        {"ddl": wall s, "ddl+vsar": wall s, "ddl_cpu": CPU s, "ddl+vsar_cpu": CPU s, "vocab_size": V}.
    """
    import statistics
    import tempfile

    sizing = dataclasses.replace(config, setting="ddl+vsar", steps=steps + 1, krl_ddl_steps=0)
    with tempfile.TemporaryDirectory() as tmp:
        torch_device = resolve_device(device)
        run = _Run(sizing, Path(tmp), data_dir, progress=False, device=torch_device)
        run.prior = LanguageModel(run.model_config).to(torch_device).eval()
        for p in run.prior.parameters():
            p.requires_grad_(False)
        optimizer = torch.optim.Adam(run.model.parameters(), lr=config.lr)
        run.model.train()
        result: dict[str, float] = {"vocab_size": float(run.model_config.vocab_size)}
        for setting in ("ddl", "ddl+vsar"):
            run.config = dataclasses.replace(sizing, setting=setting)
            wall, cpu = [], []
            for step in range(steps + 1):
                t0, c0 = time.perf_counter(), time.process_time()
                _train_step(run, optimizer, step, 0)
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            result[setting] = statistics.median(wall[1:])
            result[f"{setting}_cpu"] = statistics.median(cpu[1:])
    return result
