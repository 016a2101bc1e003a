"""SAE load: encode RAR-b sentences, read the top activations of real latents and decompose them.

The first user of a locust process lists the SAEs and encodes a few sentences with each, so the
latents the tasks ask about are ones that fire on real text (no model names or latents are
written here: a service with other SAEs gets the same load).
"""

from __future__ import annotations

import random

from locust import task

from load.scenarios._data import rarb_sentences
from load.scenarios._user import FacetUser, shared

TOP_K = 8  # latents per token (EncodeText)
CONTEXTS = 5  # contexts per TopActivations
DISCOVERY_TEXTS = 2  # sentences encoded per SAE to find its live latents


class SaeUser(FacetUser):
    """Tasks (weights): EncodeText 5, TopActivations 3, DecomposeLatent 2 (SAEs with a meta-SAE)."""

    capability = "sae"
    rpcs = ("EncodeText", "TopActivations", "DecomposeLatent")

    def setup(self) -> None:
        self.rng = random.Random()
        self.sentences = [text for text, _ in rarb_sentences(max_chars=300)]
        self.latents: dict[str, list[int]] = shared("sae.latents", self._discover) or {}
        self.saes = sorted(self.latents)
        self.meta_saes = sorted(shared("sae.meta", self._meta) or [])

    def _discover(self) -> dict[str, list[int]] | None:
        """Per SAE id, latents active on a few real sentences."""
        saes = self.call("ListSaes", self.client.list_saes)
        if not saes:
            return None
        found: dict[str, list[int]] = {}
        for sae in saes:
            latents: set[int] = set()
            for text in self.sentences[:DISCOVERY_TEXTS]:
                for token in self.call("EncodeText", self.client.encode_text, sae.id, text, top_k=TOP_K) or []:
                    latents.update(token.latents)
            if latents:
                found[sae.id] = sorted(latents)
        return found or None

    def _meta(self) -> list[str] | None:
        saes = self.call("ListSaes", self.client.list_saes)
        return None if saes is None else [s.id for s in saes if s.meta_width and s.id in self.latents]

    def _pick(self, saes: list[str]) -> tuple[str, int]:
        sae = self.rng.choice(saes)
        return sae, self.rng.choice(self.latents[sae])

    @task(5)
    def encode_text(self) -> None:
        if self.saes:
            self.call(
                "EncodeText",
                self.client.encode_text,
                self.rng.choice(self.saes),
                self.rng.choice(self.sentences),
                top_k=TOP_K,
            )

    @task(3)
    def top_activations(self) -> None:
        if self.saes:
            sae, latent = self._pick(self.saes)
            self.call("TopActivations", self.client.top_activations, sae, latent, k=CONTEXTS)

    @task(2)
    def decompose_latent(self) -> None:
        if self.meta_saes:
            sae, latent = self._pick(self.meta_saes)
            self.call("DecomposeLatent", self.client.decompose_latent, sae, latent)
