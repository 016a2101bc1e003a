"""The next-frame model: a 2D U-Net that maps CONTEXT frames (as channels) to the next frame,
after the paper's UpDown2D; trained with SmoothL1 on next-frame prediction only.

    model = FrameUNet(FrameModelConfig())
    nxt = model(context)                    # context float [b, 5, 64, 64] in [0, 1] -> [b, 1, 64, 64]
    feats = model.probe_features(context)   # [b, features]: pooled intermediate activations
    video = rollout(model, context, horizon=30)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

CONTEXT = 5


@dataclasses.dataclass(frozen=True)
class FrameModelConfig:
    context: int = CONTEXT
    base_channels: int = 16
    depth: int = 3  # down/up stages; 64 -> 8 at depth 3
    probe_pool: int = 4  # each probed activation is average-pooled to probe_pool × probe_pool

    def __post_init__(self) -> None:
        if self.context < 1 or self.base_channels < 1 or not 1 <= self.depth <= 5 or self.probe_pool < 1:
            raise ValueError(f"invalid FrameModelConfig {self}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _block(cin: int, cout: int) -> nn.Sequential:
    groups = math.gcd(8, cout)  # GroupNorm needs groups that divide the channels
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.SiLU(),
        nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.SiLU(),
    )  # fmt: skip


class FrameUNet(nn.Module):
    def __init__(self, config: FrameModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config.base_channels
        widths = [c * 2**i for i in range(config.depth + 1)]
        self.stem = _block(config.context, widths[0])
        self.down = nn.ModuleList(_block(widths[i], widths[i + 1]) for i in range(config.depth))
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(config.depth)))
        self.merge = nn.ModuleList(_block(2 * widths[i], widths[i]) for i in reversed(range(config.depth)))
        self.head = nn.Conv2d(widths[0], 1, 1)
        with torch.no_grad():  # start as copy-last-frame, learn the change
            self.head.weight.zero_()
            self.head.bias.zero_()  # type: ignore[union-attr]

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(nn.functional.max_pool2d(skips[-1], 2)))
        h = skips[-1]
        probed = list(skips)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1]), strict=True):
            h = merge(torch.cat([up(h), skip], 1))
            probed.append(h)
        # predict the change from the last context frame: most of a frame stays as it was
        out = x[:, -1:] + self.head(h)
        return out, probed

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        """context float [b, CONTEXT, 64, 64] in [0, 1] -> the next frame [b, 1, 64, 64]."""
        return self._run(context)[0]

    def probe_features(self, context: torch.Tensor) -> torch.Tensor:
        """Every stage's activations, average-pooled to probe_pool² and concatenated: [b, features]."""
        _, probed = self._run(context)
        p = self.config.probe_pool
        return torch.cat([nn.functional.adaptive_avg_pool2d(a, p).flatten(1) for a in probed], 1)


def to_unit(frames: torch.Tensor) -> torch.Tensor:
    return frames.float() / 255.0


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8)


@torch.no_grad()
def rollout(model: FrameUNet, context: torch.Tensor, horizon: int) -> torch.Tensor:
    """Autoregressive prediction: context float [b, CONTEXT, 64, 64] -> [b, horizon, 64, 64]; each
    predicted frame (clamped to [0, 1]) becomes the newest context frame."""
    model.eval()
    window = context
    frames = []
    for _ in range(horizon):
        nxt = model(window).clamp(0, 1)
        frames.append(nxt)
        window = torch.cat([window[:, 1:], nxt], 1)
    return torch.cat(frames, 1)
