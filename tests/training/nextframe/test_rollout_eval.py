"""Rollout scoring: SSIM, the baselines, per-step curves and the figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from services.nextframe.simulators import simulate
from training.nextframe.model import CONTEXT, FrameModelConfig, FrameUNet
from training.nextframe.rollout_eval import baselines, plot_rollouts, score_rollouts, ssim


def test_ssim_is_one_for_identical_frames_and_lower_for_different_ones() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 64, 64, generator=g)
    torch.testing.assert_close(ssim(a, a), torch.ones(2, 3))
    noisy = (a + 0.3 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    assert (ssim(a, noisy) < 0.9).all()
    assert ssim(a, noisy).shape == (2, 3)


def test_linear_extrapolation_continues_a_constant_change() -> None:
    context = torch.stack([torch.full((64, 64), 0.1 * i) for i in range(CONTEXT)])[None]
    out = baselines(context, 3)
    torch.testing.assert_close(out["linear"][0, :, 0, 0], torch.tensor([0.5, 0.6, 0.7]))
    torch.testing.assert_close(out["copy_last"][0, :, 0, 0], torch.full((3,), 0.4))


def test_an_untrained_model_scores_as_copy_last_and_the_figure_is_written(tmp_path: Path) -> None:
    videos = simulate("colliding_blocks", np.array([1.0, -2.0]), frames=CONTEXT + 6, seed=0).frames
    model = FrameUNet(FrameModelConfig(base_channels=8, depth=2))  # its zero head copies the last frame
    scores = score_rollouts(model, videos, horizon=6)
    assert scores.mse["model"].shape == (6,)
    np.testing.assert_allclose(scores.mse["model"], scores.mse["copy_last"], rtol=1e-5, atol=1e-7)
    assert scores.mse["copy_last"][-1] > scores.mse["copy_last"][0]  # errors grow with the horizon
    assert (scores.ssim["model"] <= 1 + 1e-6).all()
    png = plot_rollouts(model, videos, 6, tmp_path / "rollouts.png", videos=2, every=2)
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="need 16 frames"):
        score_rollouts(model, videos, horizon=11)
