"""Rollout quality: per horizon step, MSE and SSIM of the model's autoregressive rollout against
the simulated truth, beside two baselines — copying the last context frame, and extrapolating
linearly from the last two (2·f[t] − f[t−1], clamped) — and a PNG of rollouts next to the truth.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from training.nextframe.model import CONTEXT, FrameUNet, rollout, to_unit


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Mean SSIM per image of frames in [0, 1], [..., h, w] (uniform window, C1/C2 as Wang et al.)."""
    c1, c2 = 0.01**2, 0.03**2
    shape = a.shape
    x, y = a.reshape(-1, 1, *shape[-2:]), b.reshape(-1, 1, *shape[-2:])

    def blur(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(t, window, stride=1)

    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3)).reshape(shape[:-2])


@dataclasses.dataclass(frozen=True)
class RolloutScores:
    mse: dict[str, np.ndarray]  # method -> [horizon] mean over videos
    ssim: dict[str, np.ndarray]


def baselines(context: torch.Tensor, horizon: int) -> dict[str, torch.Tensor]:
    last, before = context[:, -1:], context[:, -2:-1]
    steps = torch.arange(1, horizon + 1, dtype=context.dtype).view(1, -1, 1, 1)
    return {
        "copy_last": last.expand(-1, horizon, -1, -1),
        "linear": (last + steps * (last - before)).clamp(0, 1),
    }


@torch.no_grad()
def score_rollouts(model: FrameUNet, frames: np.ndarray, horizon: int) -> RolloutScores:
    """Videos uint8 [n, t, 64, 64] with t ≥ CONTEXT + horizon; the rollout starts after frame CONTEXT."""
    if frames.shape[1] < CONTEXT + horizon:
        raise ValueError(f"videos need {CONTEXT + horizon} frames for horizon {horizon}, have {frames.shape[1]}")
    clip = to_unit(torch.from_numpy(frames[:, : CONTEXT + horizon]))
    context, truth = clip[:, :CONTEXT], clip[:, CONTEXT:]
    methods = {"model": rollout(model, context, horizon), **baselines(context, horizon)}
    mse = {k: ((v - truth) ** 2).mean(dim=(2, 3)).mean(0).numpy() for k, v in methods.items()}
    sims = {k: ssim(v, truth).mean(0).numpy() for k, v in methods.items()}
    return RolloutScores(mse, sims)


@torch.no_grad()
def plot_rollouts(model: FrameUNet, frames: np.ndarray, horizon: int, path: str | Path, videos: int = 3, every: int = 3) -> Path:
    """A PNG: for each video, the truth (top) and the rollout (bottom), every `every`-th step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clip = to_unit(torch.from_numpy(frames[:videos, : CONTEXT + horizon]))
    predicted = rollout(model, clip[:, :CONTEXT], horizon)
    steps = list(range(0, horizon, every))
    fig, axes = plt.subplots(2 * len(clip), len(steps), figsize=(1.1 * len(steps), 2.3 * len(clip)), squeeze=False)
    for v in range(len(clip)):
        for j, step in enumerate(steps):
            for row, (label, source) in enumerate((("truth", clip[v, CONTEXT + step]), ("rollout", predicted[v, step]))):
                ax = axes[2 * v + row, j]
                ax.imshow(source.numpy(), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(label, fontsize=7)
                if v == 0 and row == 0:
                    ax.set_title(f"+{step + 1}", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
