"""The physical-constant probe: a linear layer on frozen features, the paper's normalised loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.nextframe.datasets import VideoDataset, write_dataset
from training.nextframe.model import FrameModelConfig, FrameUNet
from training.nextframe.probe import ProbeConfig, fit_probe, probe_comparison, video_features


def test_a_linear_probe_recovers_a_linear_target() -> None:
    g = torch.Generator().manual_seed(0)
    features = torch.randn(300, 20, generator=g) * torch.linspace(0.1, 10, 20)
    weights = torch.randn(20, generator=g)
    constants = features @ weights + 7.0
    probe = fit_probe(features[:200], constants[:200], ProbeConfig(steps=1500, lr=1e-2, weight_decay=0.0))
    assert probe.loss(features[200:], constants[200:]) < 1e-3
    np.testing.assert_allclose(probe.predict(features[200:]).numpy(), constants[200:].numpy(), rtol=0.05, atol=0.3)


@pytest.mark.integration
def test_probe_comparison_on_pendulum_videos(tmp_path: Path) -> None:
    write_dataset("pendulum", tmp_path, videos=30, frames=12, seed=1, progress=False)
    train, test = VideoDataset(tmp_path, "train"), VideoDataset(tmp_path, "test")
    config = FrameModelConfig(base_channels=8, depth=2)
    torch.manual_seed(0)
    a, b, c = FrameUNet(config), FrameUNet(config), FrameUNet(config)
    feats = video_features(a, train.frames, windows_per_video=3)
    assert feats.shape == (len(train), (8 + 16 + 32 + 16 + 8) * 16)
    result = probe_comparison(a, [b, c], train, test, ProbeConfig(steps=200))
    assert np.isfinite([result.pretrained_loss, result.random_loss, result.predict_mean_loss]).all()
    assert len(result.random_losses) == 2 and result.random_loss == pytest.approx(np.mean(result.random_losses))
    assert result.ratio == pytest.approx(result.random_loss / result.pretrained_loss)
