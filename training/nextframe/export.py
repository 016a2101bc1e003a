"""ONNX export of what the next-frame service runs, each checked against PyTorch:

- the frame model: context float [b, 5, 64, 64] -> next [b, 1, 64, 64];
- its probe features: context -> [b, features] (pooled intermediate activations);
- a probe: features [b, features] -> constant [b] in the constant's units (standardisation and
  the linear layer in one graph), and ood_score [b]: how unlike the training videos' features
  they are (`training.nextframe.probe.FeatureDistribution`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from training.nextframe.model import CONTEXT, FrameUNet
from training.nextframe.probe import FittedProbe
from training.onnx_export import cpu_session, export_module


class _Features(torch.nn.Module):
    def __init__(self, model: FrameUNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.model.probe_features(context)


class _Probe(torch.nn.Module):
    mean: torch.Tensor
    std: torch.Tensor
    centre: torch.Tensor
    components: torch.Tensor
    variances: torch.Tensor

    def __init__(self, fitted: FittedProbe) -> None:
        super().__init__()
        probe, distribution = fitted.probe, fitted.distribution
        self.layer = probe.layer
        self.register_buffer("mean", probe.feature_mean.clone())
        self.register_buffer("std", probe.feature_std.clone())
        self.target_mean, self.target_std = probe.target_mean, probe.target_std
        self.register_buffer("centre", distribution.centre.clone())
        self.register_buffer("components", distribution.components.clone())
        self.register_buffer("variances", distribution.variances.clone())
        self.shrinkage = distribution.shrinkage

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        standardised = (features - self.mean) / self.std
        z = self.layer(standardised).squeeze(1)
        # FeatureDistribution.score, written out so that the graph holds it
        centred = standardised - self.centre
        p = centred @ self.components
        residual = torch.clamp((centred * centred).sum(1) - (p * p).sum(1), min=0.0)
        d2 = (p * p / (self.variances + self.shrinkage)).sum(1) + residual / self.shrinkage
        return z * self.target_std + self.target_mean, torch.sqrt(d2 / centred.shape[1])


def _export(module: torch.nn.Module, example: torch.Tensor, path: Path, inp: str, outs: list[str]) -> None:
    export_module(module, (example,), path, [inp], outs, {inp: {0: "batch"}, **{o: {0: "batch"} for o in outs}})


def _run(path: Path, name: str, x: np.ndarray, output: int = 0) -> np.ndarray:
    return np.asarray(cpu_session(path).run(None, {name: x})[output])


def export_frame_model(model: FrameUNet, directory: Path, parity_context: torch.Tensor) -> dict[str, float]:
    """Writes frame.onnx and features.onnx; returns their max absolute error vs PyTorch on
    `parity_context` (real frames, float [b, 5, 64, 64])."""
    model.eval()
    _export(model, parity_context[:1], directory / "frame.onnx", "context", ["next_frame"])
    _export(_Features(model), parity_context[:1], directory / "features.onnx", "context", ["features"])
    with torch.no_grad():
        expected_next, expected_features = model(parity_context).numpy(), model.probe_features(parity_context).numpy()
    x = parity_context.numpy()
    return {
        "frame_max_abs_error": float(np.abs(_run(directory / "frame.onnx", "context", x) - expected_next).max()),
        "features_max_relative_error": float(
            np.abs(_run(directory / "features.onnx", "context", x) - expected_features).max() / np.abs(expected_features).max()
        ),
    }


def export_probe(fitted: FittedProbe, path: Path, parity_features: torch.Tensor) -> dict[str, float]:
    """Writes the probe (outputs "constant" and "ood_score"); returns the max absolute error of
    each (constant units; score units) vs PyTorch on `parity_features`."""
    _export(_Probe(fitted), parity_features[:1], path, "features", ["constant", "ood_score"])
    constant, score = fitted.predict(parity_features)
    x = parity_features.numpy()
    return {
        "probe_max_abs_error": float(np.abs(_run(path, "features", x) - constant.numpy()).max()),
        "ood_score_max_abs_error": float(np.abs(_run(path, "features", x, 1) - score.numpy()).max()),
    }


__all__ = ["CONTEXT", "export_frame_model", "export_probe"]
