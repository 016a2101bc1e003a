"""Meta-SAEs recover the compositional structure of decoder rows built from known parts."""

from __future__ import annotations

import pytest
import torch

from training.sae.config import SaeConfig
from training.sae.meta_sae import decompose_latent, train_meta_sae
from training.sae.model import Sae

D, PARTS, LATENTS = 32, 24, 504  # 504 / 21 = 24 meta-latents by default


@pytest.fixture(scope="module")
def composed() -> tuple[Sae, torch.Tensor, torch.Tensor]:
    """An SAE whose every decoder row is a positive mix of 2-3 of 24 basic directions."""
    g = torch.Generator().manual_seed(0)
    parts = torch.randn(PARTS, D, generator=g)
    parts /= parts.norm(dim=1, keepdim=True)
    mix = torch.zeros(LATENTS, PARTS)
    for row in mix:
        chosen = torch.randperm(PARTS, generator=g)[: int(torch.randint(2, 4, (1,), generator=g))]
        row[chosen] = torch.rand(len(chosen), generator=g) + 0.5
    sae = Sae(SaeConfig("topk", D, LATENTS, k=8))
    with torch.no_grad():
        sae.W_dec.copy_(mix @ parts)
    return sae, parts, mix


def test_meta_sae_explains_composed_rows_with_few_meta_latents(composed: tuple[Sae, torch.Tensor, torch.Tensor]) -> None:
    sae, parts, mix = composed
    result = train_meta_sae(sae, epochs=300, progress=False)
    assert result.meta.config.d_sae == 24 and result.meta.config.k == 4
    assert result.variance_explained > 0.7, result
    assert 1.0 <= result.mean_active <= 6.0, result

    d = decompose_latent(sae, result.meta, latent=7, top_n=4)
    assert 1 <= len(d.meta_latents) <= 4 and d.reconstruction_cosine > 0.8
    assert all(7 not in users for users in d.members.values())
    # each meta-latent found for latent 7 points close to one of latent 7's true parts
    true_parts = parts[mix[7] > 0]
    meta_dirs = result.meta.W_dec.detach()
    best = [float((true_parts @ (meta_dirs[m] / meta_dirs[m].norm())).max()) for m, _ in d.meta_latents[:2]]
    assert max(best) > 0.8, best


def test_out_of_range_latent_is_refused(composed: tuple[Sae, torch.Tensor, torch.Tensor]) -> None:
    sae, _, _ = composed
    meta = Sae(SaeConfig("batchtopk", D, 24, k=4))
    with pytest.raises(IndexError, match="out of range"):
        decompose_latent(sae, meta, latent=LATENTS)
