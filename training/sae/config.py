"""SAE configuration: a validated dataclass with a `to_dict`/`from_dict` round trip and a
registry of architectures."""

from __future__ import annotations

import dataclasses
from typing import Any

# architecture name -> what it needs; the modules themselves are in training.sae.model
ARCHITECTURES = ("relu", "topk", "batchtopk", "jumprelu")


@dataclasses.dataclass(frozen=True)
class SaeConfig:
    """One sparse autoencoder.

    relu: ReLU encoder with an L1 penalty on activations weighted by the decoder row norms
        (so shrinking decoder rows cannot game the penalty); decoder rows are unconstrained.
    topk: the k largest pre-activations per token (Gao et al., 2024).
    batchtopk: the k * batch largest over a whole batch (Bussmann et al., 2024); at inference
        a single threshold, estimated during training, replaces the batch top-k.
    jumprelu: a learned per-latent threshold, trained with a straight-through estimator and an
        L0 penalty (Rajamanoharan et al., 2024).
    TopK variants are trained with the auxiliary loss of Gao et al. on dead latents; their
    decoder rows are kept at unit norm.
    """

    architecture: str
    d_in: int
    d_sae: int
    k: int = 0  # active latents per token (topk, batchtopk)
    l1_coefficient: float = 0.0  # relu
    l0_coefficient: float = 0.0  # jumprelu
    jumprelu_bandwidth: float = 0.001
    jumprelu_init_threshold: float = 0.001
    aux_k: int = 0  # dead latents used by the auxiliary loss (0: min(d_in // 2, d_sae))
    aux_coefficient: float = 1.0 / 32.0
    dead_after_tokens: int = 1_000_000  # a latent that has not fired for this many tokens is dead
    threshold_momentum: float = 0.99  # batchtopk: running estimate of the inference threshold

    def __post_init__(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(f"SaeConfig: {message}")

        check(self.architecture in ARCHITECTURES, f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        check(self.d_in >= 1 and self.d_sae >= 1, "d_in and d_sae must be positive")
        if self.architecture in ("topk", "batchtopk"):
            check(1 <= self.k <= self.d_sae, f"k must be 1..d_sae for {self.architecture}, got {self.k}")
        if self.architecture == "relu":
            check(self.l1_coefficient > 0, "relu needs l1_coefficient > 0")
        if self.architecture == "jumprelu":
            check(self.l0_coefficient > 0, "jumprelu needs l0_coefficient > 0")
            check(self.jumprelu_bandwidth > 0, "jumprelu_bandwidth must be > 0")
        check(self.aux_k >= 0 and self.aux_coefficient >= 0, "aux_k and aux_coefficient must be >= 0")
        check(self.dead_after_tokens >= 1, "dead_after_tokens must be >= 1")
        check(0.0 <= self.threshold_momentum < 1.0, "threshold_momentum must be in [0, 1)")

    @property
    def effective_aux_k(self) -> int:
        return self.aux_k or min(self.d_in // 2, self.d_sae)

    @property
    def expansion(self) -> float:
        return self.d_sae / self.d_in

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SaeConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"SaeConfig: unknown keys {sorted(unknown)}")
        return cls(**data)
