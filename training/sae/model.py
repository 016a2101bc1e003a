"""The sparse autoencoder module: one class, the architecture chosen by its config."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from training.sae.config import SaeConfig


@dataclasses.dataclass
class SaeOutput:
    reconstruction: torch.Tensor  # [n, d_in]
    latents: torch.Tensor  # [n, d_sae], sparse activations
    loss: torch.Tensor  # total training loss
    mse: torch.Tensor  # mean over tokens of the summed squared error
    sparsity_loss: torch.Tensor  # L1 (relu) or L0 (jumprelu) term, 0 otherwise
    aux_loss: torch.Tensor  # dead-latent auxiliary loss (topk variants), 0 otherwise


def _rectangle(x: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
    return (((x - threshold) / bandwidth).abs() < 0.5).to(x.dtype)


class _JumpReLU(torch.autograd.Function):
    """z · H(z − θ): exact gradient to z; a rectangle-kernel pseudo-derivative to θ
    (Rajamanoharan et al., 2024, eq. 11)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:  # type: ignore[no-untyped-def, override]
        ctx.save_for_backward(z, threshold)
        ctx.bandwidth = bandwidth
        return z * (z > threshold).to(z.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:  # type: ignore[no-untyped-def, override]
        z, threshold = ctx.saved_tensors
        grad_z = grad * (z > threshold).to(z.dtype)
        grad_threshold = (grad * -(threshold / ctx.bandwidth) * _rectangle(z, threshold, ctx.bandwidth)).sum(0)
        return grad_z, grad_threshold, None


class _Step(torch.autograd.Function):
    """H(z − θ) for the L0 penalty: no gradient to z, a pseudo-derivative to θ (eq. 12)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:  # type: ignore[no-untyped-def, override]
        ctx.save_for_backward(z, threshold)
        ctx.bandwidth = bandwidth
        return (z > threshold).to(z.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor, None]:  # type: ignore[no-untyped-def, override]
        z, threshold = ctx.saved_tensors
        return None, (grad * -(1.0 / ctx.bandwidth) * _rectangle(z, threshold, ctx.bandwidth)).sum(0), None


class Sae(nn.Module):
    """x ≈ decode(encode(x)), with `encode(x) = σ((x − b_dec) W_enc + b_enc)`."""

    threshold: torch.Tensor
    threshold_initialised: torch.Tensor
    tokens_since_fired: torch.Tensor

    def __init__(self, config: SaeConfig) -> None:
        super().__init__()
        self.config = config
        d_in, d_sae = config.d_in, config.d_sae
        w_dec = torch.randn(d_sae, d_in)
        w_dec = w_dec / w_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec)
        self.W_enc = nn.Parameter(w_dec.t().clone())  # tied initialisation (Gao et al.)
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        if config.architecture == "jumprelu":
            self.log_threshold = nn.Parameter(torch.full((d_sae,), float(torch.tensor(config.jumprelu_init_threshold).log())))
        # batchtopk: the inference threshold (running mean of the smallest kept activation)
        self.register_buffer("threshold", torch.tensor(0.0))
        self.register_buffer("threshold_initialised", torch.tensor(False))
        # dead-latent tracking: tokens seen since each latent last fired
        self.register_buffer("tokens_since_fired", torch.zeros(d_sae, dtype=torch.long))

    # -- encoding ----------------------------------------------------------------------------

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Sparse latents of `x` [n, d_in] as used at inference (batch-independent)."""
        pre = self.pre_activations(x)
        arch = self.config.architecture
        if arch == "relu":
            return torch.relu(pre)
        if arch == "topk":
            return _topk_per_row(torch.relu(pre), self.config.k)
        if arch == "batchtopk":
            if self.training:
                return _topk_over_batch(torch.relu(pre), self.config.k)
            return torch.relu(pre) * (pre > self.threshold)
        threshold = self.log_threshold.exp()
        return torch.relu(pre) * (pre > threshold)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents @ self.W_dec + self.b_dec

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    # -- training ----------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> SaeOutput:
        """Reconstruction and losses for a training batch; updates dead-latent counters in training."""
        cfg = self.config
        if self.training and cfg.architecture in ("topk", "batchtopk"):
            return self._sparse_forward(x)
        pre = self.pre_activations(x)
        zero = x.new_zeros(())
        sparsity, aux = zero, zero
        if cfg.architecture == "jumprelu":
            threshold = self.log_threshold.exp()
            latents = _JumpReLU.apply(pre, threshold, cfg.jumprelu_bandwidth)
            sparsity = cfg.l0_coefficient * _Step.apply(pre, threshold, cfg.jumprelu_bandwidth).sum(-1).mean()
        else:
            latents = self.encode(x)
        reconstruction = self.decode(latents)
        error = x - reconstruction
        mse = error.pow(2).sum(-1).mean()
        if cfg.architecture == "relu":
            sparsity = cfg.l1_coefficient * (latents * self.W_dec.norm(dim=1)).sum(-1).mean()
        if self.training:
            self._track_firing(latents, x.shape[0])
        loss = mse + sparsity + cfg.aux_coefficient * aux
        return SaeOutput(reconstruction, latents, loss, mse, sparsity, aux)

    def _sparse_forward(self, x: torch.Tensor) -> SaeOutput:
        """Training step of the top-k variants with a sparse decoder: the encoder's dense
        pre-activations pick the active (token, latent) pairs, and only those pairs are decoded,
        with `embedding_bag`. The loss and gradients equal the dense computation's, while three
        of the six [batch × d_in × d_sae] matrix products of a dense step (decoder forward, and
        both decoder gradients) become sums over batch × k pairs."""
        cfg = self.config
        pre = torch.addmm(self.b_enc, x - self.b_dec, self.W_enc)
        with torch.no_grad():
            acts = torch.relu(pre)
            if cfg.architecture == "batchtopk":
                keep = min(cfg.k * acts.shape[0], acts.numel())
                smallest = acts.flatten().topk(keep, sorted=False).values.min()
                rows, cols = ((acts >= smallest) & (acts > 0)).nonzero().unbind(1)  # row-major: sorted rows
            else:
                top = acts.topk(cfg.k, dim=-1, sorted=False).indices
                rows = torch.arange(acts.shape[0], device=acts.device).repeat_interleave(top.shape[1])
                cols = top.flatten()
                active = acts[rows, cols] > 0
                rows, cols = rows[active], cols[active]
        values = _pairs(pre, rows, cols)
        reconstruction = _sparse_decode(values, rows, cols, self.W_dec, x.shape[0]) + self.b_dec
        error = x - reconstruction
        mse = error.pow(2).sum(-1).mean()
        latents = torch.zeros_like(acts).index_put_((rows, cols), values.detach())
        aux = self._sparse_aux_loss(pre, acts, error, self.dead_mask)  # dead as of the tokens before this batch
        if cfg.architecture == "batchtopk":
            self._update_threshold(latents)
        self._track_firing(latents, x.shape[0])
        zero = x.new_zeros(())
        return SaeOutput(reconstruction, latents, mse + cfg.aux_coefficient * aux, mse, zero, aux)

    def _sparse_aux_loss(self, pre: torch.Tensor, acts: torch.Tensor, error: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
        """`_aux_loss`, sparsely: the top aux_k dead latents of each token reconstruct the error."""
        n_dead = int(dead.sum())
        if n_dead == 0:
            return acts.new_zeros(())
        with torch.no_grad():
            dead_acts = acts * dead.to(acts.dtype)
            top = dead_acts.topk(min(self.config.effective_aux_k, n_dead), dim=-1, sorted=False).indices
            rows = torch.arange(acts.shape[0], device=acts.device).repeat_interleave(top.shape[1])
            cols = top.flatten()
            active = dead_acts[rows, cols] > 0
            rows, cols = rows[active], cols[active]
        values = _pairs(pre, rows, cols)
        aux_reconstruction = _sparse_decode(values, rows, cols, self.W_dec, acts.shape[0])
        target = error.detach()
        scale = target.pow(2).sum(-1).mean().clamp(min=1e-12)
        return (aux_reconstruction - target).pow(2).sum(-1).mean() / scale

    def _track_firing(self, latents: torch.Tensor, tokens: int) -> None:
        fired = (latents > 0).any(0)
        with torch.no_grad():
            self.tokens_since_fired += tokens
            self.tokens_since_fired[fired] = 0

    @property
    def dead_mask(self) -> torch.Tensor:
        return self.tokens_since_fired >= self.config.dead_after_tokens

    def _update_threshold(self, latents: torch.Tensor) -> None:
        """Running mean of the smallest positive activation the batch top-k kept."""
        positive = latents[latents > 0]
        if positive.numel() == 0:
            return
        smallest = positive.min().detach()
        with torch.no_grad():
            if not bool(self.threshold_initialised):
                self.threshold.copy_(smallest)
                self.threshold_initialised.fill_(True)
            else:
                m = self.config.threshold_momentum
                self.threshold.mul_(m).add_((1 - m) * smallest)

    @torch.no_grad()
    def fold_input_scale(self, scale: float) -> None:
        """Make an SAE trained on `scale * x` work on `x` itself (the encoder's pre-activations,
        and so thresholds and latents, are unchanged; decoder rows shrink by `scale`)."""
        self.W_enc.mul_(scale)
        self.W_dec.div_(scale)
        self.b_dec.div_(scale)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Unit-norm decoder rows (topk variants), after each optimiser step."""
        if self.config.architecture in ("topk", "batchtopk"):
            self.W_dec.data /= self.W_dec.data.norm(dim=1, keepdim=True).clamp(min=1e-12)

    @torch.no_grad()
    def remove_parallel_gradient(self) -> None:
        """Project out the decoder-gradient component along each (unit) row, before the step."""
        if self.config.architecture in ("topk", "batchtopk") and self.W_dec.grad is not None:
            w = self.W_dec.data
            self.W_dec.grad -= (self.W_dec.grad * w).sum(1, keepdim=True) * w


def _topk_per_row(values: torch.Tensor, k: int) -> torch.Tensor:
    top = values.topk(k, dim=-1)
    return torch.zeros_like(values).scatter(-1, top.indices, top.values)


def _topk_over_batch(values: torch.Tensor, k: int) -> torch.Tensor:
    flat = values.flatten()
    keep = min(k * values.shape[0], flat.numel())
    top = flat.topk(keep)
    return torch.zeros_like(flat).scatter(0, top.indices, top.values).view_as(values)


def _pairs(pre: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """pre[rows, cols] as a gather (its gradient is a scatter-add, no index sort)."""
    return pre.reshape(-1).gather(0, rows * pre.shape[1] + cols)


def _sparse_decode(values: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, w_dec: torch.Tensor, n: int) -> torch.Tensor:
    """Σ over each row's (latent, value) pairs of value · W_dec[latent], as [n, d_in]; `rows`
    sorted. `embedding_bag` fuses the gather and the sum (no [pairs, d_in] intermediate)."""
    offsets = torch.searchsorted(rows, torch.arange(n, device=rows.device))
    return torch.nn.functional.embedding_bag(cols, w_dec, offsets, mode="sum", per_sample_weights=values)
