"""ONNX exports of the frame model, its probe features and a probe match PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from services.nextframe.simulators import simulate
from training.nextframe.export import export_frame_model, export_probe
from training.nextframe.model import CONTEXT, FrameModelConfig, FrameUNet, to_unit
from training.nextframe.probe import ProbeConfig, fit_probe_with_distribution
from training.onnx_export import cpu_session


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
    probe = fit_probe_with_distribution(features, torch.tensor([0.1, 0.3, 0.5, 0.2]), ProbeConfig(steps=50))
    errors = export_probe(probe, tmp_path / "probe.onnx", features)
    assert errors["probe_max_abs_error"] < 1e-4 and errors["ood_score_max_abs_error"] < 1e-4
    # measured here too, not only read from what export_probe reports: both outputs, on other features
    other = features.flip(0) * 1.5 + 0.1
    constant, score = cpu_session(tmp_path / "probe.onnx").run(None, {"features": other.numpy()})
    expected_constant, expected_score = probe.predict(other)
    np.testing.assert_allclose(constant, expected_constant.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(score, expected_score.numpy(), rtol=1e-4, atol=1e-5)
    assert {p.name for p in tmp_path.iterdir()} == {"frame.onnx", "features.onnx", "probe.onnx"}
