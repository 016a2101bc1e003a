from __future__ import annotations

import pytest
import torch

from training.sae.metrics import MetricsAccumulator, reconstruction_metrics


def test_fvu_is_about_the_mean_not_about_zero() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 8, generator=g) + 50.0  # large mean, unit variance
    predicting_the_mean = x.mean(0, keepdim=True).expand_as(x)
    latents = torch.zeros(1000, 4)
    m = reconstruction_metrics(x, predicting_the_mean, latents)
    assert m.fvu == pytest.approx(1.0, abs=1e-6)  # explains nothing beyond the mean
    about_zero = float((x - predicting_the_mean).pow(2).sum() / x.pow(2).sum())
    assert about_zero < 0.001  # what the about-zero definition would have reported


def test_l0_dead_fraction_and_streaming_equals_one_batch() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(100, 6, generator=g)
    recon = x + 0.1 * torch.randn(100, 6, generator=g)
    latents = torch.zeros(100, 5)
    latents[:, 0] = 1.0
    latents[::2, 1] = 2.0
    whole = reconstruction_metrics(x, recon, latents)
    assert whole.l0 == pytest.approx(1.5)
    assert whole.dead_fraction == pytest.approx(3 / 5)
    acc = MetricsAccumulator(6, 5)
    for i in range(0, 100, 30):
        acc.add(x[i : i + 30], recon[i : i + 30], latents[i : i + 30])
    streamed = acc.result()
    assert streamed.mse == pytest.approx(whole.mse)
    assert streamed.fvu == pytest.approx(whole.fvu)
    assert streamed.l0 == pytest.approx(whole.l0)
