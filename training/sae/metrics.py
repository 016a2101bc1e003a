"""SAE quality metrics, defined once.

FVU (fraction of variance unexplained) is measured about the mean of the activations:
    FVU = Σ‖x − x̂‖² / Σ‖x − x̄‖²
(dividing by Σ‖x‖² instead, i.e. about zero, flatters an SAE whenever the activations have a
large mean, as residual streams do).
"""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass(frozen=True)
class ReconstructionMetrics:
    mse: float  # mean over tokens of the summed squared error ‖x − x̂‖²
    fvu: float  # fraction of variance unexplained, about the mean
    l0: float  # mean active latents per token
    dead_fraction: float  # latents that fired on none of these tokens

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


class MetricsAccumulator:
    """Streams batches; variance about the mean is computed exactly with running sums."""

    def __init__(self, d_in: int, d_sae: int) -> None:
        self.tokens = 0
        self.squared_error = 0.0
        self.sum_x = torch.zeros(d_in, dtype=torch.float64)
        self.sum_x_squared = 0.0
        self.active = 0.0
        self.fired = torch.zeros(d_sae, dtype=torch.bool)

    @torch.no_grad()
    def add(self, x: torch.Tensor, reconstruction: torch.Tensor, latents: torch.Tensor) -> None:
        x64 = x.to(torch.float64)
        self.tokens += x.shape[0]
        self.squared_error += float((x64 - reconstruction.to(torch.float64)).pow(2).sum())
        self.sum_x += x64.sum(0)
        self.sum_x_squared += float(x64.pow(2).sum())
        active = latents != 0
        self.active += float(active.sum())
        self.fired |= active.any(0).cpu()

    def result(self) -> ReconstructionMetrics:
        if self.tokens == 0:
            raise ValueError("no tokens were added")
        # Σ‖x − x̄‖² = Σ‖x‖² − n‖x̄‖²
        total_variance = self.sum_x_squared - float(self.sum_x.pow(2).sum()) / self.tokens
        return ReconstructionMetrics(
            mse=self.squared_error / self.tokens,
            fvu=self.squared_error / total_variance if total_variance > 0 else float("nan"),
            l0=self.active / self.tokens,
            dead_fraction=float((~self.fired).float().mean()),
        )


def reconstruction_metrics(x: torch.Tensor, reconstruction: torch.Tensor, latents: torch.Tensor) -> ReconstructionMetrics:
    """Metrics of one batch (see MetricsAccumulator for streams)."""
    acc = MetricsAccumulator(x.shape[1], latents.shape[1])
    acc.add(x, reconstruction, latents)
    return acc.result()
