"""The two readers of the edit report: an attribute regressor and an identity embedding.

Both read images the phenotype models produce (float32 RGB in [0, 1], [B, 3, S, S]) and are trained
here on procedural faces (`training.phenotype.faces`) drawn from seeds and identities of their own
(default seeds 1001 and 1002; the generator trains on 0 and 1), so the report's achieved values,
drift and identity similarity are not the generator grading itself (issue #16, part 3).

Data: `train_identities` people, each rendered `renders_per_identity` times: the identity factors
(`IDENTITY_FACTORS`: face and jaw shape, eye spacing, brows, hair style and length) are drawn once
per person, every other factor (the seven attributes, pose, light, background, noise, blur) afresh
for every render. The regressor learns the attributes of every render; the identity embedding learns
that renders of one person belong together whatever their attributes, pose and light.

- `Regressor`: a small CNN, image -> the seven attributes [B, 7] (~[0, 1], `ATTRIBUTE_NAMES` order),
  trained by mean squared error.
- `IdentityEmbedding`: the same CNN shape, image -> an L2-normalised embedding [B, D], trained with
  the supervised contrastive loss (Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020,
  eq. 2, L^sup_out, temperature 0.1 as their §4) over batches of K people x M renders each. Chosen
  over regressing the identity factors because the report needs a similarity between two images of
  the same kind of face, which SupCon trains directly, and over triplets (Schroff et al., FaceNet,
  CVPR 2015) because every pair of a batch contributes, without mining.

Deterministic: the models are initialised from `seed`, and step i's batch comes from a generator
seeded with (seed, i), so a resumed run (`state.pt`, written every `checkpoint_every` steps) ends
with the same weights as an uninterrupted one on the CPU.

Example::

    from pathlib import Path
    from training.phenotype.readers import ReadersConfig, train_readers
    result = train_readers(ReadersConfig(), Path("work/readers"))
    result.metrics["regressor_mae"]           # {"skin_tone": 0.02, ...} on held-out faces
    result.metrics["identity"]["auc"]         # same vs different person, by cosine similarity
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from services.phenotype.catalog import ATTRIBUTE_NAMES, DEFAULT_IMAGE_SIZE
from training.device import AUTO, resolve_device
from training.options import known_fields
from training.phenotype.faces import FACTOR_NAMES, IDENTITY_FACTORS, MIN_IMAGE_SIZE, render, sample_factors
from training.resume import resumable_state

__all__ = [
    "CHECKPOINT_FILE",
    "STATE_FILE",
    "IdentityEmbedding",
    "ReadersConfig",
    "ReadersResult",
    "Regressor",
    "evaluate_readers",
    "identity_pool",
    "load_readers",
    "supervised_contrastive_loss",
    "train_readers",
]

STATE_FILE = "state.pt"  # the resumable checkpoint: both models, both optimisers, step, history
CHECKPOINT_FILE = "readers.safetensors"  # the result: both models' weights, config and metrics in the metadata
EVAL_BATCH = 256


@dataclasses.dataclass(frozen=True)
class ReadersConfig:
    """One training run of both readers.

    The defaults train both readers at 64x64 in a few minutes on one CPU core (notes: measured).

    Attributes:
        image_size: pixels per side (>= `faces.MIN_IMAGE_SIZE`).
        train_identities: people in the training pool.
        valid_identities: other people (another seed) for the validation metrics (>= 2).
        renders_per_identity: renders of each person (>= 2: the identity loss needs pairs); a batch
            takes all of them.
        identities_per_batch: people per batch (K; the batch holds K x renders_per_identity images),
            at most train_identities.
        steps: optimiser steps (each trains both models on the same batch).
        lr: Adam's learning rate (both models), cosine-decayed to 5% of it over the steps.
        base_channels: the CNNs' first width; it doubles at each stride-2 stage, up to 8x.
        hidden: width of the heads' hidden layer.
        embedding_dim: the identity embedding's width (D).
        temperature: the supervised contrastive loss's temperature (Khosla et al. 2020 §4: 0.1).
        seed: the training pool (`sample_factors`), initialisation and batch order; the validation
            pool uses seed + 1. Keep it away from the generator's face seeds.
        checkpoint_every: steps between resumable checkpoints (`state.pt`).
        identity_blur: the identity embedding's augmentation: each image of its batch is blurred
            by a Gaussian of standard deviation drawn uniformly from [0, identity_blur] pixels at
            64 x 64 (scaled with the size), on top of the renders' own blur factor (at most 0.8).
            The report compares generated faces, which are smoother than renders: without it the
            embedding scored a render against its own reconstruction as a stranger (cosine
            -0.005). 0 turns it off. The regressor sees the renders unaugmented.
    """

    image_size: int = DEFAULT_IMAGE_SIZE
    train_identities: int = 2000
    valid_identities: int = 200
    renders_per_identity: int = 4
    identities_per_batch: int = 16
    steps: int = 1000
    lr: float = 2e-3
    base_channels: int = 12
    hidden: int = 128
    embedding_dim: int = 32
    temperature: float = 0.1
    seed: int = 1001
    checkpoint_every: int = 250
    identity_blur: float = 1.5

    def __post_init__(self) -> None:
        def fail(name: str, rule: str) -> None:
            raise ValueError(f"ReadersConfig.{name} must be {rule}, got {getattr(self, name)!r}")

        minimum = {
            "image_size": MIN_IMAGE_SIZE,
            "train_identities": 1,
            "valid_identities": 2,
            "renders_per_identity": 2,
            "identities_per_batch": 1,
            "steps": 1,
            "base_channels": 1,
            "hidden": 1,
            "embedding_dim": 2,
            "seed": 0,
            "checkpoint_every": 1,
        }
        for name, least in minimum.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                fail(name, f"an integer >= {least}")
        if self.identities_per_batch > self.train_identities:
            fail("identities_per_batch", f"<= train_identities ({self.train_identities})")
        if not 0.0 < self.lr < 1.0:  # False for NaN too
            fail("lr", "in (0, 1)")
        if not 0.0 < self.temperature < math.inf:
            fail("temperature", "a positive number")
        if isinstance(self.identity_blur, bool) or not isinstance(self.identity_blur, int | float) or not 0.0 <= self.identity_blur <= 8.0:
            fail("identity_blur", "a number of pixels in [0, 8]")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReadersConfig:
        """The config of `to_dict` (or a partial dict: missing keys take their defaults).

        Raises:
            ValueError: an unknown key or an invalid value.
        """
        data = known_fields(cls, data)
        return cls(**data)


# -- models ----------------------------------------------------------------------------------------


class _Backbone(nn.Module):
    """Stride-2 conv3x3 stages (BatchNorm, ReLU) from the image down to ~4x4, an adaptive average
    pool to 4x4 (so the heads keep where on the face a feature is), flattened. (A stride-1 first
    layer cost 4x the time on a CPU.)"""

    def __init__(self, image_size: int, base_channels: int) -> None:
        super().__init__()
        stages = max(0, int(math.log2(image_size / 8)))
        layers: list[nn.Module] = [
            nn.Conv2d(3, base_channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(base_channels),
            nn.ReLU(inplace=True),
        ]
        width = base_channels
        for i in range(stages):
            out = base_channels * min(2 ** (i + 1), 8)
            layers += [
                nn.Conv2d(width, out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            width = out
        layers += [nn.AdaptiveAvgPool2d(4), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.out_features = width * 16

    def forward(self, image: Tensor) -> Tensor:
        return self.features(image - 0.5)


class Regressor(nn.Module):
    """Reads the seven attributes off a face.

    Args:
        image_size: pixels per side of the images it reads.
        base_channels: the backbone's first width.
        hidden: the head's hidden width.
    Forward:
        image float32 [B, 3, S, S] in [0, 1] -> attributes float32 [B, len(ATTRIBUTE_NAMES)], ~[0, 1],
        in `ATTRIBUTE_NAMES` order (not clamped: a value a little outside says the face is outside
        the training range).
    """

    def __init__(self, image_size: int = DEFAULT_IMAGE_SIZE, base_channels: int = 12, hidden: int = 128) -> None:
        super().__init__()
        self.backbone = _Backbone(image_size, base_channels)
        self.head = nn.Sequential(
            nn.Linear(self.backbone.out_features, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, len(ATTRIBUTE_NAMES)),
        )

    def forward(self, image: Tensor) -> Tensor:
        return self.head(self.backbone(image))


class IdentityEmbedding(nn.Module):
    """Embeds a face so that renders of one person are close (cosine similarity near 1) whatever
    their attributes, pose, light and background, and different people far apart.

    Args:
        image_size: pixels per side of the images it reads.
        base_channels: the backbone's first width.
        hidden: the head's hidden width.
        embedding_dim: the embedding's width (D).
    Forward:
        image float32 [B, 3, S, S] in [0, 1] -> embedding float32 [B, D], L2-normalised.
    """

    def __init__(
        self, image_size: int = DEFAULT_IMAGE_SIZE, base_channels: int = 12, hidden: int = 128, embedding_dim: int = 32
    ) -> None:
        super().__init__()
        self.backbone = _Backbone(image_size, base_channels)
        self.head = nn.Sequential(
            nn.Linear(self.backbone.out_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, embedding_dim)
        )

    def forward(self, image: Tensor) -> Tensor:
        return F.normalize(self.head(self.backbone(image)), dim=1)


def supervised_contrastive_loss(embedding: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """Khosla et al. 2020, eq. 2 (L^sup_out): for each anchor i, the mean over its positives p of
    -log(exp(z_i.z_p / t) / sum_{a != i} exp(z_i.z_a / t)), averaged over anchors with a positive.

    Args:
        embedding: float [B, D], L2-normalised.
        labels: int [B], equal for the same person.
        temperature: t > 0.
    Returns:
        the loss, a scalar tensor (nats).
    """
    logits = embedding @ embedding.T / temperature
    eye = torch.eye(len(labels), dtype=torch.bool, device=embedding.device)
    logits = logits.masked_fill(eye, -torch.inf)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~eye
    count = positive.sum(dim=1)
    per_anchor = -(log_prob.masked_fill(~positive, 0.0)).sum(dim=1) / count.clamp(min=1)
    return per_anchor[count > 0].mean()


# -- data ------------------------------------------------------------------------------------------


def identity_pool(identities: int, renders: int, seed: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render `identities` people `renders` times each: identity factors once per person, every
    other factor afresh per render.

    Args:
        identities: people (>= 0).
        renders: renders of each (>= 1).
        seed: `sample_factors`'s seed (the same seed gives the same pool, bit for bit).
        size: pixels per side.
    Returns:
        images uint8 [identities * renders, size, size, 3], factors float32 [n, len(FACTOR_NAMES)],
        person int64 [n] (renders of one person are contiguous).
    """
    factors = sample_factors(identities * renders, seed)
    person = np.repeat(np.arange(identities), renders)
    columns = [FACTOR_NAMES.index(name) for name in IDENTITY_FACTORS]
    factors[:, columns] = factors[person * renders][:, columns]  # each person's first render's identity
    images = np.empty((len(factors), size, size, 3), dtype=np.uint8)
    for start in range(0, len(factors), EVAL_BATCH):
        images[start : start + EVAL_BATCH] = render(factors[start : start + EVAL_BATCH], size)
    return images, factors, person


def _as_float(images: np.ndarray, device: torch.device) -> Tensor:
    """uint8 [B, S, S, 3] -> float32 [B, 3, S, S] in [0, 1] on `device`."""
    return torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def random_blur(batch: Tensor, max_sigma_px: float, rng: np.random.Generator) -> Tensor:
    """Each image blurred by its own separable Gaussian, sigma ~ U(0, max_sigma_px) pixels
    (truncated at 3 sigma of the largest; borders replicated). Augmentation, written here because
    it must draw from the step's seeded generator so that a resumed run stays bit for bit.

    Args:
        batch: float32 [B, C, H, W].
        max_sigma_px: the largest standard deviation, in pixels (0: `batch` unchanged).
        rng: draws the B sigmas.
    Returns:
        float32 [B, C, H, W].
    """
    if max_sigma_px <= 0.0:
        return batch
    b, c, h, w = batch.shape
    sigma = rng.uniform(0.0, max_sigma_px, size=b)
    radius = max(1, math.ceil(3.0 * max_sigma_px))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (offsets[None, :] / np.maximum(sigma[:, None], 1e-6)) ** 2)
    weights /= weights.sum(axis=1, keepdims=True)  # sigma ~ 0: a delta, the image unchanged
    kernel = torch.from_numpy(np.repeat(weights, c, axis=0).astype(np.float32)).to(batch.device)  # [B*C, K]
    x = batch.reshape(1, b * c, h, w)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel[:, None, None, :], groups=b * c)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel[:, None, :, None], groups=b * c)
    return x.reshape(b, c, h, w)


def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step) % (2**63)


def _chunks(count: int) -> Iterator[slice]:
    for start in range(0, count, EVAL_BATCH):
        yield slice(start, min(start + EVAL_BATCH, count))


# -- metrics ---------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_readers(
    regressor: Regressor, identity: IdentityEmbedding, images: np.ndarray, factors: np.ndarray, person: np.ndarray,
    mean_attributes: np.ndarray, device: torch.device | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Validation metrics of both readers on held-out people.

    Args:
        regressor, identity: the models (put in eval mode here).
        images: uint8 [n, S, S, 3]; factors: float32 [n, F]; person: int [n].
        mean_attributes: float [7], the training targets' mean (the trivial predictor's output).
        device: where to run (default: the regressor's).
    Returns:
        {"regressor_mae": {attribute: mean absolute error}, "regressor_mae_mean": float,
         "mean_predictor_mae": {attribute: MAE of predicting mean_attributes},
         "identity": {"same_cosine", "different_cosine", "gap": their difference, "auc": probability
         that a same-person pair is more similar than a different-person pair (Mann-Whitney),
         "rank1": share of renders whose nearest other render is the same person}}.
    """
    device = device or next(regressor.parameters()).device
    regressor.eval()
    identity.eval()
    predicted, embedded = [], []
    for part in _chunks(len(images)):
        batch = _as_float(images[part], device)
        predicted.append(regressor(batch).cpu().numpy())
        embedded.append(identity(batch).cpu().numpy())
    attributes = np.concatenate(predicted).astype(np.float64)
    target = factors[:, : len(ATTRIBUTE_NAMES)].astype(np.float64)
    mae = np.abs(attributes - target).mean(axis=0)
    baseline = np.abs(target - np.asarray(mean_attributes, dtype=np.float64)[None]).mean(axis=0)
    z = np.concatenate(embedded).astype(np.float64)
    similarity = z @ z.T
    upper = np.triu(np.ones_like(similarity, dtype=bool), k=1)
    same = (person[:, None] == person[None, :]) & upper
    different = (person[:, None] != person[None, :]) & upper
    same_s, different_s = similarity[same], similarity[different]
    ranks = np.argsort(np.argsort(np.concatenate([same_s, different_s]), kind="stable"), kind="stable") + 1.0
    auc = (ranks[: len(same_s)].sum() - len(same_s) * (len(same_s) + 1) / 2) / (len(same_s) * len(different_s))
    np.fill_diagonal(similarity, -np.inf)
    rank1 = float((person[similarity.argmax(axis=1)] == person).mean())
    return {
        "regressor_mae": {name: float(v) for name, v in zip(ATTRIBUTE_NAMES, mae, strict=True)},
        "regressor_mae_mean": float(mae.mean()),
        "mean_predictor_mae": {name: float(v) for name, v in zip(ATTRIBUTE_NAMES, baseline, strict=True)},
        "identity": {
            "same_cosine": float(same_s.mean()),
            "different_cosine": float(different_s.mean()),
            "gap": float(same_s.mean() - different_s.mean()),
            "auc": float(auc),
            "rank1": rank1,
        },
    }


# -- training --------------------------------------------------------------------------------------


@dataclasses.dataclass
class ReadersResult:
    """What `train_readers` returns.

    Attributes:
        regressor, identity: the trained models, in eval mode, on the CPU.
        config: the run's config.
        metrics: `evaluate_readers` on the validation people, after the last step.
        history: one dict per checkpoint: step, regression loss (MSE), identity loss (nats), time_s.
        time_s: wall time of the run (a resumed run counts its earlier part too; pool rendering included).
        checkpoint: both models' weights (safetensors; config and metrics in its metadata, `load_readers`).
    """

    regressor: Regressor
    identity: IdentityEmbedding
    config: ReadersConfig
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    time_s: float
    checkpoint: Path


def _models(config: ReadersConfig) -> tuple[Regressor, IdentityEmbedding]:
    torch.manual_seed(config.seed)
    regressor = Regressor(config.image_size, config.base_channels, config.hidden)
    identity = IdentityEmbedding(config.image_size, config.base_channels, config.hidden, config.embedding_dim)
    return regressor, identity


def train_readers(
    config: ReadersConfig, work_dir: Path, progress: bool = True, resume: bool = True, device: str = AUTO, *,
    on_checkpoint: Callable[[Path, dict[str, Any]], None] | None = None,
) -> ReadersResult:  # fmt: skip
    """Train the regressor and the identity embedding on procedural faces of their own.

    Args:
        config: the run.
        work_dir: `state.pt` (every `checkpoint_every` steps) and the result (`readers.safetensors`).
        progress: tqdm bars.
        resume: continue from `work_dir`'s checkpoint when it holds one of this config (False:
            start over, discarding it).
        device: "auto" (CUDA when torch has a GPU), "cpu", "cuda" or "cuda:N" (`training.device`).
            CUDA kernels are not bitwise deterministic: only CPU runs resume bit for bit.
        on_checkpoint: called after each checkpoint with (work_dir, the history entry), e.g. to
            report to Ray Train.
    Returns:
        `ReadersResult`, both models in eval mode on the CPU.
    Raises:
        ValueError: `work_dir` holds a checkpoint of another config and `resume` is True; a device
            torch cannot use here.
    """
    torch_device = resolve_device(device)
    started = time.perf_counter()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    state_path = work_dir / STATE_FILE
    state = resumable_state(state_path, config, resume, [work_dir / name for name in (CHECKPOINT_FILE,)])

    size, renders = config.image_size, config.renders_per_identity
    images, factors, _ = identity_pool(config.train_identities, renders, config.seed, size)
    valid = identity_pool(config.valid_identities, renders, config.seed + 1, size)
    mean_attributes = factors[:, : len(ATTRIBUTE_NAMES)].mean(axis=0)
    targets = torch.from_numpy(factors[:, : len(ATTRIBUTE_NAMES)].copy())

    regressor, identity = _models(config)
    regressor.to(torch_device)
    identity.to(torch_device)
    optimizers = [torch.optim.Adam(m.parameters(), lr=config.lr) for m in (regressor, identity)]
    history: list[dict[str, Any]] = []
    step, elapsed_before = 0, 0.0
    if state is not None:
        regressor.load_state_dict(state["regressor"])
        identity.load_state_dict(state["identity"])
        for optimizer, saved in zip(optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
        history, step, elapsed_before = state["history"], state["step"], state["time_s"]

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - started

    labels = torch.arange(config.identities_per_batch, device=torch_device).repeat_interleave(renders)
    offsets = np.arange(renders)
    window: list[tuple[float, float]] = []
    regressor.train()
    identity.train()
    with tqdm(total=config.steps, initial=step, desc="train readers", unit="step", disable=not progress) as bar:
        while step < config.steps:
            rng = np.random.default_rng(_step_seed(config.seed, step))
            people = rng.choice(config.train_identities, size=config.identities_per_batch, replace=False)
            picks = (people[:, None] * renders + offsets[None, :]).reshape(-1)
            batch = _as_float(images[picks], torch_device)
            lr = config.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * step / config.steps)))
            for optimizer in optimizers:
                for group in optimizer.param_groups:
                    group["lr"] = lr
            regression = F.mse_loss(regressor(batch), targets[picks].to(torch_device))
            blurred = random_blur(batch, config.identity_blur * size / 64.0, rng)
            contrastive = supervised_contrastive_loss(identity(blurred), labels, config.temperature)
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            (regression + contrastive).backward()  # independent models: each gets its own loss's gradient
            for optimizer in optimizers:
                optimizer.step()
            window.append((regression.item(), contrastive.item()))
            step += 1
            bar.update(1)
            bar.set_postfix(mse=f"{window[-1][0]:.4f}", supcon=f"{window[-1][1]:.3f}")
            if step % config.checkpoint_every == 0 or step == config.steps:
                entry = {
                    "step": step,
                    "regression_mse": float(np.mean([w[0] for w in window])),
                    "identity_loss": float(np.mean([w[1] for w in window])),
                    "time_s": elapsed(),
                }
                history.append(entry)
                window = []
                tmp = state_path.with_suffix(".tmp")
                torch.save({"config": config.to_dict(), "step": step, "regressor": regressor.state_dict(),
                            "identity": identity.state_dict(), "optimizers": [o.state_dict() for o in optimizers],
                            "history": history, "time_s": elapsed()}, tmp)  # fmt: skip
                tmp.replace(state_path)
                if on_checkpoint is not None:
                    on_checkpoint(work_dir, entry)

    regressor.to("cpu").eval()
    identity.to("cpu").eval()
    metrics = evaluate_readers(regressor, identity, *valid, mean_attributes, torch.device("cpu"))
    _save(regressor, identity, config, metrics, work_dir / CHECKPOINT_FILE)
    return ReadersResult(regressor, identity, config, metrics, history, elapsed(), work_dir / CHECKPOINT_FILE)


def _save(
    regressor: Regressor, identity: IdentityEmbedding, config: ReadersConfig, metrics: dict[str, Any], path: Path
) -> None:
    from safetensors.torch import save_file

    tensors = {f"regressor.{k}": v.detach().contiguous() for k, v in regressor.state_dict().items()}
    tensors.update({f"identity.{k}": v.detach().contiguous() for k, v in identity.state_dict().items()})
    tmp = path.with_suffix(".tmp")
    save_file(
        tensors, str(tmp), metadata={"readers_config": json.dumps(config.to_dict()), "metrics": json.dumps(metrics)}
    )
    tmp.replace(path)


def load_readers(path: Path) -> tuple[Regressor, IdentityEmbedding, ReadersConfig, dict[str, Any]]:
    """The models (eval mode, CPU), config and validation metrics of a `ReadersResult.checkpoint`.

    Raises:
        ValueError: not a readers checkpoint.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as fh:
        metadata = dict(fh.metadata() or {})
    if "readers_config" not in metadata:
        raise ValueError(f"{path} is not a readers checkpoint (no readers_config metadata)")
    config = ReadersConfig.from_dict(json.loads(metadata["readers_config"]))
    regressor, identity = _models(config)
    tensors = load_file(str(path))
    for prefix, module in (("regressor.", regressor), ("identity.", identity)):
        module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        module.eval()
    return regressor, identity, config, json.loads(metadata.get("metrics", "{}"))
