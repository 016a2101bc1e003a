"""Train a next-frame model on one dataset's videos (next-frame prediction only, SmoothL1).

The training examples are every window of CONTEXT + 1 consecutive frames of the train split; a
batch draws windows at random. Validation compares with the copy-last-frame baseline.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from training.nextframe.datasets import VideoDataset
from training.nextframe.model import CONTEXT, FrameModelConfig, FrameUNet, to_unit

SMOOTH_L1_BETA = 0.05


@dataclasses.dataclass(frozen=True)
class FrameTrainingConfig:
    steps: int = 1000
    batch: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1 or not 0 < self.lr < 1:
            raise ValueError(f"invalid FrameTrainingConfig {self}")


def windows(frames: np.ndarray) -> np.ndarray:
    """(video, start) of every CONTEXT + 1 window: int [m, 2]."""
    n, t = frames.shape[:2]
    if t < CONTEXT + 1:
        raise ValueError(f"videos need at least {CONTEXT + 1} frames, have {t}")
    v, s = np.meshgrid(np.arange(n), np.arange(t - CONTEXT), indexing="ij")
    return np.stack([v.ravel(), s.ravel()], 1)


def batch_of(frames: np.ndarray, picks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Context [b, CONTEXT, 64, 64] and target [b, 1, 64, 64], floats in [0, 1]."""
    clips = np.stack([frames[v, s : s + CONTEXT + 1] for v, s in picks])
    x = to_unit(torch.from_numpy(clips))
    return x[:, :CONTEXT], x[:, CONTEXT:]


def loss_fn(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.smooth_l1_loss(prediction, target, beta=SMOOTH_L1_BETA)


@torch.no_grad()
def evaluate(model: FrameUNet, data: VideoDataset, batch: int = 64) -> dict[str, float]:
    """Mean next-frame loss on every window of `data`, and the copy-last-frame baseline's."""
    model.eval()
    picks = windows(data.frames)
    total = baseline = 0.0
    for start in range(0, len(picks), batch):
        x, y = batch_of(data.frames, picks[start : start + batch])
        total += float(loss_fn(model(x), y)) * len(x)
        baseline += float(loss_fn(x[:, -1:], y)) * len(x)
    return {"loss": total / len(picks), "copy_last_loss": baseline / len(picks), "windows": float(len(picks))}


def train_frame_model(
    train: VideoDataset, config: FrameModelConfig, training: FrameTrainingConfig, progress: bool = True, device: torch.device | str = "cpu"
) -> FrameUNet:
    """Next-frame training on random windows of `train` (AdamW, linear warm-up over 50 steps, then
    cosine decay). The model is initialised on the CPU (the same weights whatever the device),
    trained on `device` and returned on the CPU, in eval mode."""
    from tqdm import tqdm

    torch.manual_seed(training.seed)
    rng = np.random.default_rng(training.seed)
    model = FrameUNet(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=training.lr, weight_decay=training.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / training.steps))
    )
    picks = windows(train.frames)
    model.train()
    with tqdm(total=training.steps, unit="step", desc=f"frame model ({train.manifest.dataset})", disable=not progress) as bar:
        for _ in range(training.steps):
            x, y = batch_of(train.frames, picks[rng.integers(len(picks), size=training.batch)])
            loss = loss_fn(model(x.to(device)), y.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4g}")
    return model.cpu().eval()
