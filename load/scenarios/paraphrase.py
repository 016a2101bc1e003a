"""Paraphrase load: real Quora questions (the test split), as a writing assistant sends them —
three diverse paraphrases per call most of the time, a single beam-search paraphrase, and a
streamed greedy paraphrase read to its last token."""

from __future__ import annotations

import random

from locust import task

from load.scenarios._data import quora_questions
from load.scenarios._user import FacetUser

N_DIVERSE = 3  # paraphrases per diverse-beam call


class ParaphraseUser(FacetUser):
    """Tasks (weights): Paraphrase n=3 diverse beam 3, Paraphrase n=1 beam 1, ParaphraseStream greedy 1."""

    capability = "paraphrase"
    rpcs = ("Paraphrase", "ParaphraseStream")

    def setup(self) -> None:
        self.rng = random.Random()
        self.questions = quora_questions()

    def _question(self) -> str:
        return self.rng.choice(self.questions)

    @task(3)
    def diverse(self) -> None:
        self.call("Paraphrase", self.client.paraphrase, self._question(), n=N_DIVERSE, strategy="diverse_beam", truncate=True)

    @task(1)
    def beam(self) -> None:
        self.call("Paraphrase", self.client.paraphrase, self._question(), truncate=True)

    @task(1)
    def stream(self) -> None:
        self.call("ParaphraseStream", self.client.paraphrase_stream, self._question(), truncate=True)
