"""ONNX export of what the next-frame service runs, each checked against PyTorch:

- the frame model: context float [b, 5, 64, 64] -> next [b, 1, 64, 64];
- its probe features: context -> [b, features] (pooled intermediate activations);
- a probe: features [b, features] -> constant [b] in the constant's units (standardisation and
  the linear layer in one graph).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from training.nextframe.model import CONTEXT, FrameUNet
from training.nextframe.probe import LinearProbe
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

    def __init__(self, probe: LinearProbe) -> None:
        super().__init__()
        self.layer = probe.layer
        self.register_buffer("mean", probe.feature_mean.clone())
        self.register_buffer("std", probe.feature_std.clone())
        self.target_mean, self.target_std = probe.target_mean, probe.target_std

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = self.layer((features - self.mean) / self.std).squeeze(1)
        return z * self.target_std + self.target_mean


def _export(module: torch.nn.Module, example: torch.Tensor, path: Path, inp: str, out: str) -> None:
    export_module(module, (example,), path, [inp], [out], {inp: {0: "batch"}, out: {0: "batch"}})


def _run(path: Path, name: str, x: np.ndarray) -> np.ndarray:
    return np.asarray(cpu_session(path).run(None, {name: x})[0])


def export_frame_model(model: FrameUNet, directory: Path, parity_context: torch.Tensor) -> dict[str, float]:
    """Writes frame.onnx and features.onnx; returns their max absolute error vs PyTorch on
    `parity_context` (real frames, float [b, 5, 64, 64])."""
    model.eval()
    _export(model, parity_context[:1], directory / "frame.onnx", "context", "next_frame")
    _export(_Features(model), parity_context[:1], directory / "features.onnx", "context", "features")
    with torch.no_grad():
        expected_next, expected_features = model(parity_context).numpy(), model.probe_features(parity_context).numpy()
    x = parity_context.numpy()
    return {
        "frame_max_abs_error": float(np.abs(_run(directory / "frame.onnx", "context", x) - expected_next).max()),
        "features_max_relative_error": float(
            np.abs(_run(directory / "features.onnx", "context", x) - expected_features).max() / np.abs(expected_features).max()
        ),
    }


def export_probe(probe: LinearProbe, path: Path, parity_features: torch.Tensor) -> float:
    """Writes the probe; returns the max absolute error (constant units) vs PyTorch."""
    _export(_Probe(probe), parity_features[:1], path, "features", "constant")
    expected = probe.predict(parity_features).numpy()
    return float(np.abs(_run(path, "features", parity_features.numpy()) - expected).max())


__all__ = ["CONTEXT", "export_frame_model", "export_probe"]
