"""Result types of the SAE analysis calls. Printing one gives a readable summary."""

from __future__ import annotations

import dataclasses

import numpy as np


def _clean(token: str) -> str:
    return token.replace("\n", "\\n")


@dataclasses.dataclass(frozen=True)
class SaeInfo:
    """One SAE the service holds. `metrics` are on held-out tokens: mse, fvu (about the mean),
    l0, dead_fraction, ce_clean / ce_with_sae / ce_zero_ablation / ce_increase (nats) and
    ce_loss_recovered."""

    id: str
    base_model: str
    layer: int
    hook: str
    d_in: int
    width: int
    architecture: str
    k: int
    family: str
    corpus: str
    training_tokens: int
    metrics: dict[str, float]
    meta_width: int = 0  # 0: no meta-SAE
    meta_variance_explained: float = 0.0
    meta_mean_active: float = 0.0
    top_activations_stored: int = 0


@dataclasses.dataclass(frozen=True)
class TokenLatents:
    """One token of EncodeText: its strongest latents. `excluded`: the SAE was not applied
    (position 0, or a token with a massive residual norm)."""

    position: int
    token_id: int
    token: str
    latents: list[int]
    activations: list[float]
    excluded: bool = False

    def __str__(self) -> str:
        pairs = ", ".join(f"{lat}:{act:.2f}" for lat, act in zip(self.latents, self.activations, strict=True))
        return f"{_clean(self.token)!r:>16}  {'(excluded)' if self.excluded else pairs}"


@dataclasses.dataclass(frozen=True)
class ActivatingContext:
    """Corpus text around a token where a unit fired; `tokens[highlight]` is that token."""

    tokens: list[str]
    highlight: int
    activation: float

    @property
    def text(self) -> str:
        """The context with the firing token in [[ ]]."""
        return "".join(f"[[{t}]]" if i == self.highlight else t for i, t in enumerate(self.tokens)).replace("\n", " ")

    def __str__(self) -> str:
        return f"{self.activation:7.2f}  {self.text}"


@dataclasses.dataclass(frozen=True)
class Explanation:
    top_contexts: list[ActivatingContext]
    top_output_tokens: list[tuple[str, float]]  # tokens its direction promotes, with logit scores

    def lines(self, indent: str = "  ") -> list[str]:
        out = [indent + "promotes: " + " ".join(repr(_clean(t)) for t, _ in self.top_output_tokens[:8])]
        out += [indent + str(c) for c in self.top_contexts]
        return out


@dataclasses.dataclass(frozen=True)
class MetaLatent:
    """A meta-latent: a direction shared by several SAE latents."""

    index: int
    member_latents: list[int]  # latents that use it, strongest first
    member_activations: list[float]
    member_count: int
    explanation: Explanation

    def __str__(self) -> str:
        head = f"meta-latent {self.index}: used by {self.member_count} latents, e.g. {self.member_latents}"
        return "\n".join([head, *self.explanation.lines()])


@dataclasses.dataclass(frozen=True)
class LatentDecomposition:
    """A latent's decomposition by the meta-SAE: `meta_latents` as (meta-latent, activation)."""

    sae: str
    latent: int
    explanation: Explanation
    meta_latents: list[tuple[MetaLatent, float]]
    reconstruction_cosine: float

    def __str__(self) -> str:
        lines = [f"latent {self.latent} of {self.sae}", *self.explanation.lines()]
        lines.append(f"decomposes into {len(self.meta_latents)} meta-latents (reconstruction cosine {self.reconstruction_cosine:.3f}):")
        for meta, weight in self.meta_latents:
            lines.append(f"  {weight:.3f} x " + str(meta).replace("\n", "\n    "))
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class SaeComparison:
    """Stitching of a smaller and a larger SAE. Per larger latent: `max_cosine` to the smaller
    SAE's decoder, its `nearest` smaller latent and `delta_mse` of inserting it (negative helps)."""

    small: str
    large: str
    threshold: float
    novel_latents: int
    reconstruction_latents: int
    novel_shares: dict[float, float]  # threshold -> share of larger latents that are novel
    small_mse: float
    large_mse: float
    swap_mse: np.ndarray  # MSE after 0, 1, 2, ... swaps of linked-latent groups, best first; last: the larger SAE's bias
    swap_threshold: float
    max_cosine: np.ndarray
    nearest: np.ndarray
    delta_mse: np.ndarray
    latents_that_help: float
    evaluation_tokens: int

    def __str__(self) -> str:
        shares = ", ".join(f"{t:.1f}: {s:.1%}" for t, s in sorted(self.novel_shares.items()))
        return (
            f"{self.small} -> {self.large}: {self.novel_latents} novel / {self.reconstruction_latents} reconstruction latents "
            f"at cosine {self.threshold:.2f}\n  novel share by threshold: {shares}\n"
            f"  MSE {self.small_mse:.4g} (small) -> {self.large_mse:.4g} (large) over {len(self.swap_mse) - 2} group swaps; "
            f"{self.latents_that_help:.1%} of larger latents lower the small SAE's MSE when inserted"
        )
