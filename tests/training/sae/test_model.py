"""SAE architectures: sparsity rules, losses, dead-latent handling, and that each learns.

Synthetic data with a known sparse structure tests the logic; results users see come from
SAEs trained on a real LM's activations."""

from __future__ import annotations

import pytest
import torch

from training.sae.config import SaeConfig
from training.sae.metrics import reconstruction_metrics
from training.sae.model import Sae

D_IN, D_SAE = 16, 64


def _sparse_data(n: int, seed: int = 0, features: int = 48, active: int = 3) -> torch.Tensor:
    """Each row a sum of `active` random unit directions out of `features`, plus an offset."""
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(features, D_IN, generator=g)
    directions /= directions.norm(dim=1, keepdim=True)
    codes = torch.zeros(n, features)
    idx = torch.stack([torch.randperm(features, generator=g)[:active] for _ in range(n)])
    codes.scatter_(1, idx, torch.rand(n, active, generator=g) * 2 + 0.5)
    return codes @ directions + 3.0  # a large mean, as residual streams have


def _config(arch: str, **kw: float) -> SaeConfig:
    base = {
        "relu": {"l1_coefficient": 0.6},
        "topk": {"k": 3},
        "batchtopk": {"k": 3},
        "jumprelu": {"l0_coefficient": 0.2, "jumprelu_init_threshold": 0.3, "jumprelu_bandwidth": 0.1},
    }
    return SaeConfig(architecture=arch, d_in=D_IN, d_sae=D_SAE, **{**base[arch], **kw})  # type: ignore[arg-type]


def _train(sae: Sae, data: torch.Tensor, steps: int = 600, lr: float = 3e-3) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        sae.b_dec.copy_(data.mean(0))
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    sae.train()
    for _step in range(steps):
        batch = data[torch.randint(0, len(data), (256,))]
        out = sae(batch)
        opt.zero_grad()
        out.loss.backward()
        sae.remove_parallel_gradient()
        opt.step()
        sae.normalize_decoder()
    sae.eval()


def test_config_validates_and_round_trips() -> None:
    cfg = _config("topk", aux_k=8)
    assert SaeConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="architecture"):
        SaeConfig(architecture="gated", d_in=4, d_sae=8)
    with pytest.raises(ValueError, match="k must be"):
        SaeConfig(architecture="topk", d_in=4, d_sae=8, k=9)
    with pytest.raises(ValueError, match="l1_coefficient"):
        SaeConfig(architecture="relu", d_in=4, d_sae=8)
    with pytest.raises(ValueError, match="unknown keys"):
        SaeConfig.from_dict({**cfg.to_dict(), "lr": 1})


def test_topk_keeps_k_per_token_and_batchtopk_k_per_token_on_average() -> None:
    x = _sparse_data(32)
    topk = Sae(_config("topk")).eval()
    assert ((topk.encode(x) > 0).sum(1) <= 3).all()
    batchtopk = Sae(_config("batchtopk")).train()
    latents = batchtopk(x).latents
    assert int((latents > 0).sum()) <= 3 * 32
    assert (latents > 0).sum(1).max() > 3 or (latents > 0).sum(1).min() < 3  # not per token


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "jumprelu"])
def test_every_architecture_learns_a_sparse_reconstruction(arch: str) -> None:
    data = _sparse_data(4096)
    sae = Sae(_config(arch))
    before = reconstruction_metrics(data, *_encode_decode(sae, data))
    _train(sae, data)
    after = reconstruction_metrics(data, *_encode_decode(sae, data))
    assert after.fvu < 0.25 < before.fvu, (arch, before, after)
    assert after.l0 < D_SAE / 4 and after.l0 <= before.l0, (arch, before, after)  # sparse (3 features a row)


def _encode_decode(sae: Sae, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        latents = sae.encode(x)
        return sae.decode(latents), latents


def test_batchtopk_estimates_an_inference_threshold_that_keeps_about_k() -> None:
    data = _sparse_data(4096)
    sae = Sae(_config("batchtopk"))
    _train(sae, data)
    assert bool(sae.threshold_initialised) and float(sae.threshold) > 0
    l0 = float((sae.encode(data) > 0).float().sum(1).mean())  # eval mode: the threshold, not the batch
    assert 1.5 < l0 < 6, l0


def test_relu_penalty_is_weighted_by_decoder_norms() -> None:
    x = _sparse_data(64)
    sae = Sae(_config("relu")).train()
    base = float(sae(x).sparsity_loss.detach())
    with torch.no_grad():  # shrink decoder rows, grow encoder columns: the same reconstruction
        sae.W_dec.mul_(0.1)
        sae.W_enc.mul_(10.0)
        sae.b_enc.mul_(10.0)
    assert float(sae(x).sparsity_loss.detach()) == pytest.approx(base, rel=1e-3)


def test_dead_latents_get_the_auxiliary_loss_gradient() -> None:
    x = _sparse_data(128)
    sae = Sae(_config("topk", dead_after_tokens=10)).train()
    with torch.no_grad():
        sae.tokens_since_fired.fill_(1000)  # everything looks dead
    out = sae(x)
    assert float(out.aux_loss.detach()) > 0
    out.aux_loss.backward()
    assert sae.W_enc.grad is not None and float(sae.W_enc.grad.abs().sum()) > 0
    fired = (out.latents > 0).any(0)
    assert (sae.tokens_since_fired[fired] == 0).all() and (sae.tokens_since_fired[~fired] > 1000).all()


def test_jumprelu_threshold_receives_gradient_from_the_l0_term() -> None:
    x = _sparse_data(128)
    sae = Sae(_config("jumprelu", jumprelu_bandwidth=10.0)).train()
    out = sae(x)
    out.sparsity_loss.backward()
    assert sae.log_threshold.grad is not None and float(sae.log_threshold.grad.abs().sum()) > 0
    assert float(sae.log_threshold.grad.sum()) < 0  # raising thresholds lowers L0


def _dense_reference_loss(sae: Sae, x: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
    """The textbook dense computation of a top-k training loss, written independently of the
    model's sparse path: mask the dense pre-activations, decode with a full matmul."""
    cfg = sae.config
    acts = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)
    if cfg.architecture == "batchtopk":
        flat = acts.flatten()
        mask = torch.zeros_like(flat, dtype=torch.bool)
        mask[flat.detach().topk(cfg.k * len(x)).indices] = True
        latents = acts * mask.view_as(acts)
    else:
        mask = torch.zeros_like(acts, dtype=torch.bool).scatter(1, acts.detach().topk(cfg.k, dim=1).indices, True)
        latents = acts * mask
    error = x - (latents @ sae.W_dec + sae.b_dec)
    loss = error.pow(2).sum(-1).mean()
    if dead.any():
        dead_acts = acts * dead
        k = min(cfg.effective_aux_k, int(dead.sum()))
        aux_mask = torch.zeros_like(acts, dtype=torch.bool).scatter(1, dead_acts.detach().topk(k, dim=1).indices, True)
        target = error.detach()
        aux = ((dead_acts * aux_mask) @ sae.W_dec - target).pow(2).sum(-1).mean() / target.pow(2).sum(-1).mean()
        loss = loss + cfg.aux_coefficient * aux
    return loss


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
@pytest.mark.parametrize("with_dead", [False, True])
def test_sparse_training_step_equals_the_dense_computation(arch: str, with_dead: bool) -> None:
    """The training forward of the top-k variants is computed sparsely for speed; its loss and
    every gradient must equal the dense textbook computation's."""
    x = _sparse_data(96, seed=3)
    sae = Sae(_config(arch, dead_after_tokens=10)).train()
    with torch.no_grad():
        sae.b_dec.copy_(x.mean(0))
        sae.b_enc.uniform_(-0.1, 0.1)
        if with_dead:
            sae.tokens_since_fired[::3] = 1000  # a third of the latents count as dead
    dead = sae.dead_mask.clone()
    reference = _dense_reference_loss(sae, x, dead)
    grads_ref = torch.autograd.grad(reference, list(sae.parameters()))
    out = sae(x)
    assert (float(out.aux_loss.detach()) > 0) == with_dead
    grads = torch.autograd.grad(out.loss, list(sae.parameters()))
    torch.testing.assert_close(out.loss, reference, rtol=1e-5, atol=1e-5)
    for (name, _), g, g_ref in zip(sae.named_parameters(), grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
