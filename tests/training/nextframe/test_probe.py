"""The physical-constant probe: a linear layer on frozen features, the paper's normalised loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.nextframe.datasets import VideoDataset, write_dataset
from training.nextframe.model import FrameModelConfig, FrameUNet
from training.nextframe.probe import (
    EndToEndConfig,
    FittedProbe,
    ProbeConfig,
    end_to_end_loss,
    fit_feature_distribution,
    fit_probe,
    fit_probe_with_distribution,
    probe_comparison,
    video_features,
)


def test_a_linear_probe_recovers_a_linear_target() -> None:
    g = torch.Generator().manual_seed(0)
    features = torch.randn(300, 20, generator=g) * torch.linspace(0.1, 10, 20)
    weights = torch.randn(20, generator=g)
    constants = features @ weights + 7.0
    probe = fit_probe(features[:200], constants[:200], ProbeConfig(steps=1500, lr=1e-2, weight_decay=0.0))
    assert probe.loss(features[200:], constants[200:]) < 1e-3
    np.testing.assert_allclose(probe.predict(features[200:]).numpy(), constants[200:].numpy(), rtol=0.05, atol=0.3)


def test_the_feature_distribution_scores_other_features_far_above_training_like_ones() -> None:
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(8, 300, generator=g)  # 300 features that vary along 8 directions, and a little noise
    def sample(n: int) -> torch.Tensor:
        return torch.randn(n, 8, generator=g) @ basis + 0.3 * torch.randn(n, 300, generator=g)
    train = sample(200)
    distribution = fit_feature_distribution((train - train.mean(0)) / train.std(0))
    def score(x: torch.Tensor) -> torch.Tensor:
        return distribution.score((x - train.mean(0)) / train.std(0))
    held_out = score(sample(100))
    assert float(held_out.max()) < 1.0  # RMS over features: the directions the training data spans weigh little
    assert float(score(torch.zeros(1, 300) + 5 * train.std(0)).min()) > 3 * float(held_out.max())  # a constant offset
    assert float(score(torch.randn(5, 300, generator=g) * 3).min()) > 2 * float(held_out.max())  # off the 8 directions


def test_a_fitted_probe_saves_and_loads_exactly(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(1)
    features = torch.randn(40, 12, generator=g)
    fitted = fit_probe_with_distribution(features, features[:, 0] * 3 + 1, ProbeConfig(steps=50))
    fitted.save(tmp_path / "probe.pt")
    loaded = FittedProbe.load(tmp_path / "probe.pt")
    for a, b in zip(fitted.predict(features), loaded.predict(features), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


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


@pytest.mark.integration
def test_the_end_to_end_reference_learns_the_constant(tmp_path: Path) -> None:
    """Every weight trained on the constant: on its own training videos it must beat always
    predicting the mean by far, and training must move it from where it started."""
    write_dataset("pendulum", tmp_path, videos=30, frames=12, seed=1, progress=False)
    train = VideoDataset(tmp_path, "train")
    config = FrameModelConfig(base_channels=8, depth=2)
    c = torch.from_numpy(train.constants).float()
    predict_mean = float(torch.nn.functional.smooth_l1_loss((c - c.mean()) / c.std(), torch.zeros_like(c)))
    untrained = end_to_end_loss(config, train, train, 3, EndToEndConfig(steps=0))
    trained = end_to_end_loss(config, train, train, 3, EndToEndConfig(steps=150, batch=16))
    assert trained < 0.5 * predict_mean
    assert trained < 0.5 * untrained
