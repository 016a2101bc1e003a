"""Train a family of SAEs (one width each) from one activation cache, in one pass over the data.

Every batch is read once and used to update every SAE of the family. Runs in one process
(`train_family`) or data-parallel on Ray Train (`training.sae.ray_job`), which calls the same
step function on each worker.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from training.sae.activations import ActivationCache
from training.sae.config import SaeConfig
from training.sae.metrics import MetricsAccumulator, ReconstructionMetrics
from training.sae.model import Sae

log = logging.getLogger(__name__)
CHECKPOINT_FILE = "checkpoint.pt"


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """How a family is trained. `tokens` counts activations seen by each SAE."""

    tokens: int
    batch_tokens: int = 4096
    lr: float = 4e-4
    lr_warmup_steps: int = 100
    lr_decay_fraction: float = 0.2  # linear decay to 0 over the last fraction of steps
    seed: int = 0
    eval_fraction: float = 0.02  # held-out share of the cache, never trained on
    checkpoint_every_steps: int = 500

    def __post_init__(self) -> None:
        if self.tokens < self.batch_tokens or self.batch_tokens < 1:
            raise ValueError("TrainingConfig: tokens must be >= batch_tokens >= 1")
        if not 0 < self.lr < 1:
            raise ValueError("TrainingConfig: lr must be in (0, 1)")
        if not 0 <= self.eval_fraction < 0.5:
            raise ValueError("TrainingConfig: eval_fraction must be in [0, 0.5)")

    @property
    def steps(self) -> int:
        return self.tokens // self.batch_tokens

    def lr_at(self, step: int) -> float:
        warm = min(1.0, (step + 1) / max(1, self.lr_warmup_steps))
        decay_start = int(self.steps * (1 - self.lr_decay_fraction))
        decay = 1.0 if step < decay_start else max(0.0, (self.steps - step) / max(1, self.steps - decay_start))
        return self.lr * warm * decay


@dataclasses.dataclass
class FamilyState:
    saes: list[Sae]
    optimizers: list[torch.optim.Optimizer]
    step: int = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "configs": [s.config.to_dict() for s in self.saes],
            "saes": [s.state_dict() for s in self.saes],
            "optimizers": [o.state_dict() for o in self.optimizers],
        }


def new_family(
    configs: Sequence[SaeConfig], training: TrainingConfig, mean: torch.Tensor | None = None, device: torch.device | str = "cpu"
) -> FamilyState:
    """Fresh SAEs (seeded by `training.seed`, initialised on the CPU, so every device starts from
    the same weights) on `device`, with their optimisers; `mean` [d_in] starts each decoder bias."""
    torch.manual_seed(training.seed)
    saes = []
    for config in configs:
        sae = Sae(config).to(device)
        if mean is not None:
            with torch.no_grad():
                sae.b_dec.copy_(mean)  # start the decoder bias at the data mean
        saes.append(sae)
    optimizers: list[torch.optim.Optimizer] = [torch.optim.Adam(s.parameters(), lr=training.lr, betas=(0.9, 0.999)) for s in saes]
    return FamilyState(saes, optimizers)


def save_checkpoint(state: FamilyState, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (CHECKPOINT_FILE + ".tmp")
    torch.save(state.state_dict(), tmp)
    tmp.replace(directory / CHECKPOINT_FILE)
    return directory / CHECKPOINT_FILE


def load_checkpoint(directory: Path, training: TrainingConfig, device: torch.device | str = "cpu") -> FamilyState | None:
    """The family saved in `directory`, on `device` (whatever device saved it), or None."""
    path = directory / CHECKPOINT_FILE
    if not path.is_file():
        return None
    data = torch.load(path, weights_only=False, map_location=device)
    state = new_family([SaeConfig.from_dict(c) for c in data["configs"]], training, device=device)
    for sae, weights in zip(state.saes, data["saes"], strict=True):
        sae.load_state_dict(weights)
    for opt, opt_state in zip(state.optimizers, data["optimizers"], strict=True):
        opt.load_state_dict(opt_state)
    state.step = int(data["step"])
    return state


def train_step(state: FamilyState, batch: torch.Tensor, training: TrainingConfig, *, sync: Any = None) -> list[float]:
    """One optimiser step of every SAE on `batch`; returns each SAE's loss.

    `sync(sae)` is called after backward (data-parallel gradient averaging on Ray)."""
    lr = training.lr_at(state.step)
    losses = []
    for sae, opt in zip(state.saes, state.optimizers, strict=True):
        sae.train()
        for group in opt.param_groups:
            group["lr"] = lr
        out = sae(batch)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        if sync is not None:
            sync(sae)
        sae.remove_parallel_gradient()
        opt.step()
        sae.normalize_decoder()
        losses.append(float(out.loss.detach()))
    state.step += 1
    return losses


@torch.no_grad()
def evaluate(sae: Sae, batches: Iterable[torch.Tensor]) -> ReconstructionMetrics:
    sae.eval()
    acc = MetricsAccumulator(sae.config.d_in, sae.config.d_sae)
    for batch in batches:
        latents = sae.encode(batch)
        acc.add(batch, sae.decode(latents), latents)
    return acc.result()


def input_scale(rows: torch.Tensor) -> float:
    """√d_in / mean ‖x‖: the factor that gives the rows a mean norm of √d_in."""
    return float(rows.shape[1] ** 0.5 / rows.norm(dim=1).mean().clamp(min=1e-12))


def split_cache(cache: ActivationCache, eval_fraction: float) -> tuple[int, int]:
    """Rows [0, train_rows) train; the last `eval_rows` rows are held out."""
    eval_rows = int(len(cache) * eval_fraction)
    return len(cache) - eval_rows, eval_rows


def training_batches(data: torch.Tensor, training: TrainingConfig, start_step: int = 0) -> Iterator[torch.Tensor]:
    """Shuffled epochs over `data`, one batch per step, resumable at `start_step`."""
    g = torch.Generator().manual_seed(training.seed)  # on the CPU: the same batches on every device
    per_epoch = max(1, len(data) // training.batch_tokens)
    step = 0
    while True:
        order = torch.randperm(len(data), generator=g).to(data.device)
        for i in range(per_epoch):
            if step >= start_step:
                yield data[order[i * training.batch_tokens : (i + 1) * training.batch_tokens]]
            step += 1


def train_family(
    cache: ActivationCache,
    configs: Sequence[SaeConfig],
    training: TrainingConfig,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
    stop_at_step: int | None = None,
    device: torch.device | str = "cpu",
) -> tuple[list[Sae], list[ReconstructionMetrics]]:
    """Train every config on the same batches of a cache (resuming from `checkpoint_dir` if it
    holds one); return the SAEs (on the CPU) and their metrics on the held-out tokens.
    `stop_at_step` ends the run early, as an interruption would; the checkpoint then resumes it
    exactly. `device` is where the SAEs and the training rows live while training."""
    train_rows, _ = split_cache(cache, training.eval_fraction)
    data = cache.all()
    return train_on_tensor(data[:train_rows], data[train_rows:], configs, training, checkpoint_dir, progress, stop_at_step, device=device)


def train_on_tensor(
    train: torch.Tensor,
    held_out: torch.Tensor,
    configs: Sequence[SaeConfig],
    training: TrainingConfig,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
    stop_at_step: int | None = None,
    desc: str = "SAE family",
    device: torch.device | str = "cpu",
) -> tuple[list[Sae], list[ReconstructionMetrics]]:
    """`train_family` on rows already in memory (also used for meta-SAEs on decoder rows).

    Training sees the rows scaled so their mean norm is √d_in (as SAELens does), which keeps
    one learning rate right for residual streams of any scale; the scale is folded back into
    the returned SAEs, which take unscaled activations. Metrics are on unscaled rows.
    """
    from tqdm import tqdm

    scale = input_scale(train)
    train, held_out = train.to(device) * scale, held_out * scale

    state = load_checkpoint(checkpoint_dir, training, device) if checkpoint_dir else None
    if state is None:
        state = new_family(configs, training, mean=train.mean(0), device=device)
    elif [s.config for s in state.saes] != list(configs):
        raise ValueError(f"{checkpoint_dir} holds a checkpoint of other SAEs; use another directory")
    batches = training_batches(train, training, start_step=state.step)
    with tqdm(total=training.steps, initial=state.step, unit="step", desc=desc, disable=not progress) as bar:
        last = training.steps if stop_at_step is None else min(stop_at_step, training.steps)
        while state.step < last:
            losses = train_step(state, next(batches), training)
            bar.update(1)
            bar.set_postfix(loss=f"{min(losses):.3g}..{max(losses):.3g}")
            if checkpoint_dir is not None and state.step % training.checkpoint_every_steps == 0:
                save_checkpoint(state, checkpoint_dir)
    if checkpoint_dir is not None:
        save_checkpoint(state, checkpoint_dir)
    held = (held_out if len(held_out) else train[: training.batch_tokens].cpu()) / scale
    for sae in state.saes:
        sae.cpu()  # metrics, analyses and exports run on the CPU
        sae.fold_input_scale(scale)
    metrics = [evaluate(sae, held.split(training.batch_tokens)) for sae in state.saes]
    for sae, m in zip(state.saes, metrics, strict=True):
        log.info("d_sae=%d %s", sae.config.d_sae, json.dumps(m.to_dict()))
    return state.saes, metrics
