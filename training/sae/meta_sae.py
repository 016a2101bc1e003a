"""Meta-SAEs (Leask et al., 2025, section 4): a BatchTopK SAE trained on the unit-normalised
decoder rows of another SAE. A latent's meta-latents are its decomposition into more basic
directions ("Einstein" → "scientist", "Germany", "famous person").

Defaults follow the released meta-SAE: k = 4 active meta-latents per latent, a dictionary of
about width / 21, Adam with lr 1e-3, and the dead-latent auxiliary loss.
"""

from __future__ import annotations

import dataclasses

import torch

from training.sae.config import SaeConfig
from training.sae.model import Sae
from training.sae.train import TrainingConfig, train_on_tensor

META_K = 4
META_WIDTH_DIVISOR = 21
META_LR = 1e-3


@dataclasses.dataclass(frozen=True)
class MetaSaeResult:
    meta: Sae
    variance_explained: float  # 1 − FVU on the unit decoder rows
    mean_active: float  # mean meta-latents active per latent (inference threshold)


def unit_decoder_rows(sae: Sae) -> torch.Tensor:
    w = sae.W_dec.detach()
    return w / w.norm(dim=1, keepdim=True).clamp(min=1e-12)


def train_meta_sae(
    sae: Sae,
    *,
    k: int = META_K,
    width: int | None = None,
    epochs: int = 200,
    seed: int = 0,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> MetaSaeResult:
    """Train a meta-SAE on `sae`'s decoder (on `device`; returned on the CPU); variance explained
    is measured on all rows."""
    rows = unit_decoder_rows(sae)
    width = width or max(k + 1, round(len(rows) / META_WIDTH_DIVISOR))
    config = SaeConfig("batchtopk", rows.shape[1], width, k=k, dead_after_tokens=max(len(rows) * 4, 1))
    batch = min(len(rows), 2048)
    training = TrainingConfig(
        tokens=batch * max(1, epochs * len(rows) // batch),
        batch_tokens=batch,
        lr=META_LR,
        lr_warmup_steps=10,
        seed=seed,
        eval_fraction=0.0,
    )
    [meta], [metrics] = train_on_tensor(rows, rows, [config], training, progress=progress, desc="meta-SAE", device=device)
    return MetaSaeResult(meta=meta, variance_explained=1.0 - metrics.fvu, mean_active=metrics.l0)


@dataclasses.dataclass(frozen=True)
class Decomposition:
    latent: int
    meta_latents: list[tuple[int, float]]  # (meta-latent, activation), strongest first
    members: dict[int, list[int]]  # meta-latent -> other latents that use it (strongest first)
    reconstruction_cosine: float  # cosine of the meta-SAE's reconstruction to the latent's direction


@torch.no_grad()
def decompose_latent(sae: Sae, meta: Sae, latent: int, top_n: int = 4, members_per_meta: int = 8) -> Decomposition:
    if not 0 <= latent < sae.config.d_sae:
        raise IndexError(f"latent {latent} is out of range 0..{sae.config.d_sae - 1}")
    rows = unit_decoder_rows(sae)
    codes = meta.eval().encode(rows)  # [d_sae, d_meta]
    code = codes[latent]
    active = [(int(i), float(code[i])) for i in torch.argsort(code, descending=True)[:top_n] if code[i] > 0]
    members = {}
    for m, _ in active:
        users = torch.argsort(codes[:, m], descending=True)
        members[m] = [int(u) for u in users if int(u) != latent and codes[u, m] > 0][:members_per_meta]
    recon = meta.decode(code[None, :])[0]
    cosine = float(torch.nn.functional.cosine_similarity(recon, rows[latent], dim=0))
    return Decomposition(latent, active, members, cosine)
