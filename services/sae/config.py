"""The `[sae]` config section (`FACET_SAE_*`): the limits of every Sae RPC, checked before any
work is done, and the service's analysis defaults."""

from __future__ import annotations

import dataclasses

from services.runtime.config import check


@dataclasses.dataclass(frozen=True)
class SaeConfig:
    """Attributes:
    max_text_chars: characters per EncodeText text.
    max_text_tokens: tokens per EncodeText text (the LM runs on all of them at once).
    max_rows: residual-stream rows per EncodeActivations or Reconstruct call.
    max_top_k: latents per token or row (EncodeText, EncodeActivations).
    max_top_n: meta-latents per DecomposeLatent.
    max_members: member latents listed per meta-latent.
    max_abs_activation: largest magnitude of an activation entry sent to EncodeActivations or
        Reconstruct; larger inputs are refused (INVALID_ARGUMENT) because the SAE's outputs and
        squared errors would overflow float32 (a residual-stream entry of SmolLM2 is at most a few
        thousand). Raised above ~1e17, an input can overflow the squared error: the call then
        fails with INTERNAL (the service never answers OK with a non-finite number).
    massive_norm_factor: a token whose residual norm exceeds this many times the median is not
        encoded (marked excluded), as such tokens were left out of the SAE's training data
        (SmolLM2's first-token residual norm is ~100x the others in middle layers).
    default_threshold: decoder cosine that separates novel from reconstruction latents in
        CompareSaes when the request gives none (paper: "Sparse Autoencoders Do Not Find
        Canonical Units of Analysis", SAE stitching, 0.7).
    """

    max_text_chars: int = 4096
    max_text_tokens: int = 512
    max_rows: int = 4096
    max_top_k: int = 64
    max_top_n: int = 16
    max_members: int = 32
    max_abs_activation: float = 1e6
    massive_norm_factor: float = 10.0
    default_threshold: float = 0.7

    def __post_init__(self) -> None:
        for key in ("max_text_chars", "max_text_tokens", "max_rows", "max_top_k", "max_top_n", "max_members"):
            check(getattr(self, key) >= 1, f"sae.{key} must be >= 1")
        check(0 < self.max_abs_activation < 3.4e38, "sae.max_abs_activation must be in (0, 3.4e38) (float32's range)")
        check(self.massive_norm_factor > 1, "sae.massive_norm_factor must be > 1")
        check(0 < self.default_threshold < 1, "sae.default_threshold must be in (0, 1)")
