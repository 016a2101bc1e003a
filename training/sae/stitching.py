"""SAE stitching (Leask et al., 2025, section 3): how the latents of a larger SAE relate to a
smaller one of the same family.

- Each larger latent's maximum decoder cosine similarity to the smaller SAE's latents; below a
  threshold it is *novel* (no counterpart), above it a *reconstruction* latent.
- ΔMSE of inserting one larger latent into the smaller SAE, in closed form for all latents:
  with the smaller SAE's error e = x − x̂_S and the larger latent's activation a_i and decoder
  row d_i, the reconstruction becomes x̂_S + a_i d_i and
      ΔMSE_i = E[a_i²]·‖d_i‖² − 2·E[a_i ⟨e, d_i⟩]
  (negative: inserting it helps).
- Swapping groups of linked latents (connected components of the bipartite graph of decoder
  cosines above the threshold; a novel latent is a group alone, and so is a smaller latent with
  no counterpart, which is removed), best first, traces the MSE from the smaller SAE's to the
  larger's. A group's score is the closed-form ΔMSE of inserting its larger latents plus that of
  removing its smaller ones (E[s_j²]‖d_j‖² + 2·E[s_j⟨e, d_j⟩]).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from training.sae.model import Sae

DEFAULT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8)


@dataclasses.dataclass(frozen=True)
class StitchingResult:
    max_cosine: np.ndarray  # [d_large]: each larger latent's best decoder cosine to the smaller SAE
    nearest: np.ndarray  # [d_large]: index of that smaller latent
    delta_mse: np.ndarray  # [d_large]: ΔMSE of inserting the latent into the smaller SAE
    novel_share: dict[float, float]  # threshold -> share of larger latents that are novel
    swap_mse: np.ndarray  # [groups + 2]: MSE after 0, 1, 2, ... group swaps (best first), then the decoder bias
    small_mse: float
    large_mse: float
    threshold: float

    def summary(self) -> dict[str, object]:
        return {
            "novel_share": {str(t): s for t, s in self.novel_share.items()},
            "threshold": self.threshold,
            "small_mse": self.small_mse,
            "large_mse": self.large_mse,
            "swap_groups": len(self.swap_mse) - 2,
            "latents_that_help": float((self.delta_mse < 0).mean()),
        }


def decoder_cosines(small: Sae, large: Sae) -> torch.Tensor:
    """[d_large, d_small] cosine similarity of decoder rows."""
    a = large.W_dec.detach() / large.W_dec.detach().norm(dim=1, keepdim=True).clamp(min=1e-12)
    b = small.W_dec.detach() / small.W_dec.detach().norm(dim=1, keepdim=True).clamp(min=1e-12)
    return a @ b.T


@torch.no_grad()
def insertion_delta_mse(small: Sae, large: Sae, x: torch.Tensor) -> torch.Tensor:
    """Closed-form ΔMSE (summed over dimensions, mean over tokens) of inserting each larger latent."""
    small.eval()
    large.eval()
    error = x - small.decode(small.encode(x))
    a = large.encode(x)  # [n, d_large]
    d = large.W_dec
    squared = a.pow(2).mean(0) * d.pow(2).sum(1)
    cross = (a * (error @ d.T)).mean(0)
    return squared - 2 * cross


@torch.no_grad()
def inserted_mse(small: Sae, large: Sae, x: torch.Tensor, latent: int) -> float:
    """MSE of the smaller SAE with one larger latent actually added (to check the closed form)."""
    recon = small.decode(small.encode(x)) + large.encode(x)[:, latent : latent + 1] * large.W_dec[latent]
    return float((x - recon).pow(2).sum(1).mean())


def linked_groups(cosines: np.ndarray, threshold: float) -> list[tuple[list[int], list[int]]]:
    """Connected components of the bipartite graph (larger latents, smaller latents) with an edge
    where cosine ≥ threshold. Returns (larger indices, smaller indices) per group with a larger latent."""
    d_large, d_small = cosines.shape
    parent = list(range(d_large + d_small))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(cosines >= threshold), strict=True):
        ra, rb = find(int(i)), find(d_large + int(j))
        if ra != rb:
            parent[ra] = rb
    groups: dict[int, tuple[list[int], list[int]]] = {}
    for i in range(d_large):
        groups.setdefault(find(i), ([], []))[0].append(i)
    for j in range(d_small):
        root = find(d_large + j)
        if root in groups:
            groups[root][1].append(j)
    return list(groups.values())


@torch.no_grad()
def stitch(small: Sae, large: Sae, x: torch.Tensor, threshold: float = 0.7, thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS) -> StitchingResult:
    """Stitching analysis of a smaller/larger pair on activations `x` [n, d_in]."""
    if small.config.d_in != large.config.d_in:
        raise ValueError(f"the SAEs read different widths ({small.config.d_in} vs {large.config.d_in})")
    cos = decoder_cosines(small, large).numpy()
    max_cos, nearest = cos.max(1), cos.argmax(1)
    delta = insertion_delta_mse(small, large, x).numpy()
    groups = linked_groups(cos, threshold)
    linked = {j for _, small_ids in groups for j in small_ids}
    groups += [([], [j]) for j in range(small.config.d_sae) if j not in linked]  # removed, nothing replaces them
    # Encode once; each swap then updates the error by the swapped latents' contributions only.
    s_acts, l_acts = small.encode(x), large.encode(x)
    error = x - small.decode(s_acts)
    removal = (s_acts.pow(2).mean(0) * small.W_dec.pow(2).sum(1) + 2 * (s_acts * (error @ small.W_dec.T)).mean(0)).numpy()
    # a group swaps its smaller latents for its larger ones; best (most negative) ΔMSE first
    groups.sort(key=lambda g: float(delta[g[0]].sum() + removal[g[1]].sum()))
    curve = [float(error.pow(2).sum(1).mean())]
    for large_ids, small_ids in groups:
        li, si = torch.tensor(large_ids, dtype=torch.long), torch.tensor(small_ids, dtype=torch.long)
        if len(large_ids):
            error -= l_acts[:, li] @ large.W_dec[li]
        if len(small_ids):
            error += s_acts[:, si] @ small.W_dec[si]
        curve.append(float(error.pow(2).sum(1).mean()))
    error += small.b_dec - large.b_dec  # last point: the larger SAE's decoder bias, so the curve ends at it
    curve.append(float(error.pow(2).sum(1).mean()))
    # the larger SAE itself (its own decoder bias)
    large_mse = float((x - large.decode(large.encode(x))).pow(2).sum(1).mean())
    return StitchingResult(
        max_cosine=max_cos,
        nearest=nearest,
        delta_mse=delta,
        novel_share={t: float((max_cos < t).mean()) for t in thresholds},
        swap_mse=np.array(curve),
        small_mse=curve[0],
        large_mse=large_mse,
        threshold=threshold,
    )


def plot_swap_curve(result: StitchingResult, path: str | Path, small: str, large: str) -> Path:
    """A PNG of the MSE as groups of linked latents are swapped from `small` into `large`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(np.arange(len(result.swap_mse)), result.swap_mse, color="tab:blue", label="stitched SAE")
    ax.axhline(result.small_mse, color="tab:gray", linestyle="--", linewidth=1, label=f"{small} (small)")
    ax.axhline(result.large_mse, color="tab:red", linestyle="--", linewidth=1, label=f"{large} (large)")
    ax.set_xlabel(f"groups of linked latents swapped in (cosine ≥ {result.threshold:g}), best ΔMSE first")
    ax.set_ylabel("MSE on held-out tokens")
    ax.set_title("SAE stitching: from the smaller SAE to the larger", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
