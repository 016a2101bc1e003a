"""ONNX exports of the frame model, its probe features and a probe match PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from services.nextframe.simulators import simulate
from training.nextframe.export import export_frame_model, export_probe
from training.nextframe.model import CONTEXT, FrameModelConfig, FrameUNet, to_unit
from training.nextframe.probe import ProbeConfig, fit_probe


def test_exports_match_pytorch_on_real_frames(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = FrameUNet(FrameModelConfig(base_channels=8, depth=2))
    with torch.no_grad():  # a non-zero head, so the exported graph does more than copy a frame
        model.head.weight.normal_(0, 0.1)
    videos = simulate("moon_orbit", np.array([0.1, 0.3, 0.5, 0.2]), frames=CONTEXT, seed=0).frames
    context = to_unit(torch.from_numpy(videos))
    parity = export_frame_model(model, tmp_path, context)
    assert parity["frame_max_abs_error"] < 1e-4 and parity["features_max_relative_error"] < 1e-4
    features = model.probe_features(context).detach()
    probe = fit_probe(features, torch.tensor([0.1, 0.3, 0.5, 0.2]), ProbeConfig(steps=50))
    assert export_probe(probe, tmp_path / "probe.onnx", features) < 1e-4
    assert {p.name for p in tmp_path.iterdir()} == {"frame.onnx", "features.onnx", "probe.onnx"}
