"""Stitching on SAEs with a known relation: the larger one holds the smaller one's latents plus
novel ones (orthonormal directions, so every cosine is exactly 0 or 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.sae.config import SaeConfig
from training.sae.model import Sae
from training.sae.stitching import inserted_mse, insertion_delta_mse, linked_groups, stitch

D = 64


def _sae(directions: torch.Tensor) -> Sae:
    sae = Sae(SaeConfig("relu", D, len(directions), l1_coefficient=1.0))
    with torch.no_grad():
        sae.W_dec.copy_(directions)
        sae.W_enc.copy_(directions.T)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()


@pytest.fixture(scope="module")
def pair_and_data() -> tuple[Sae, Sae, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(D, D, generator=g))
    basis = basis.T  # rows orthonormal
    small, large = _sae(basis[:32]), _sae(basis[:48])  # 16 novel latents in the larger SAE
    codes = torch.zeros(2000, 48)
    for row in codes:
        row[torch.randperm(48, generator=g)[:4]] = torch.rand(4, generator=g) + 0.5
    return small, large, codes @ basis[:48]


def test_novel_and_reconstruction_latents_are_told_apart(pair_and_data: tuple[Sae, Sae, torch.Tensor]) -> None:
    small, large, x = pair_and_data
    result = stitch(small, large, x, threshold=0.7)
    np.testing.assert_allclose(result.max_cosine[:32], 1.0, atol=1e-5)
    assert (result.max_cosine[32:] < 1e-5).all()
    assert result.novel_share[0.5] == pytest.approx(16 / 48)
    assert (result.delta_mse[32:] < 0).all()  # the novel latents each improve the smaller SAE
    assert (result.delta_mse[:32] > 0).all()  # the smaller SAE has these already: adding one counts it twice
    assert result.swap_mse[0] == pytest.approx(result.small_mse)
    assert result.swap_mse[-1] == pytest.approx(result.large_mse, abs=1e-4)
    assert result.large_mse < 1e-6 < result.small_mse
    assert np.all(np.diff(result.swap_mse) <= 1e-6)  # best groups first: never worse


def test_closed_form_delta_matches_real_insertion(pair_and_data: tuple[Sae, Sae, torch.Tensor]) -> None:
    small, large, x = pair_and_data
    # perturb the smaller SAE so its errors overlap the larger latents in non-trivial ways
    with torch.no_grad():
        noisy = _sae(small.W_dec + 0.1 * torch.randn_like(small.W_dec, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        base = float((x - noisy.decode(noisy.encode(x))).pow(2).sum(1).mean())
    delta = insertion_delta_mse(noisy, large, x)
    for latent in (0, 5, 31, 32, 40, 47):
        assert inserted_mse(noisy, large, x, latent) - base == pytest.approx(float(delta[latent]), rel=1e-3, abs=1e-5)


def test_linked_groups_are_bipartite_components() -> None:
    cos = np.array([[0.9, 0.1, 0.0], [0.8, 0.0, 0.0], [0.0, 0.0, 0.95], [0.1, 0.2, 0.3]])
    groups = sorted((sorted(a), sorted(b)) for a, b in linked_groups(cos, 0.7))
    assert groups == [([0, 1], [0]), ([2], [2]), ([3], [])]


def test_different_widths_are_refused() -> None:
    with pytest.raises(ValueError, match="different widths"):
        stitch(Sae(SaeConfig("relu", 8, 16, l1_coefficient=1.0)), Sae(SaeConfig("relu", 9, 32, l1_coefficient=1.0)), torch.zeros(4, 8))


def test_the_swap_curve_ends_at_the_larger_sae_when_smaller_latents_have_no_counterpart(
    pair_and_data: tuple[Sae, Sae, torch.Tensor],
) -> None:
    """Smaller latents that no larger latent resembles are swapped out (removed), so the curve
    still ends at the larger SAE's MSE instead of double-counting."""
    _, large, x = pair_and_data
    g = torch.Generator().manual_seed(2)
    stray, _ = torch.linalg.qr(torch.randn(D, D, generator=g))
    small = _sae(torch.cat([large.W_dec[:24], stray.T[:8]]))  # 8 latents with no counterpart
    result = stitch(small, large, x, threshold=0.7)
    assert result.swap_mse[0] == pytest.approx(result.small_mse)
    assert result.swap_mse[-1] == pytest.approx(result.large_mse, abs=1e-4)
    assert len(result.swap_mse) == 1 + 48 + 8 + 1  # every larger latent alone, each stray removed, the bias
    assert min(result.swap_mse) <= result.large_mse + 1e-4
