"""Rerank load: a RAR-b sentence as the query and 32 other RAR-b sentences as its candidates per
call (the size of a search's hits a client reranks), every result, and every fourth call with
`top_n` and `min_probability` as a RAG pipeline sends them."""

from __future__ import annotations

import random

from locust import task

from load.scenarios._data import rarb_sentences
from load.scenarios._user import FacetUser

DOCUMENTS = 32  # candidates per Rerank call
TOP_N = 5


class RerankUser(FacetUser):
    """Tasks (weights): Rerank of 32 documents 3, Rerank of 32 documents with top_n and min_probability 1."""

    capability = "rerank"
    rpcs = ("Rerank",)

    def setup(self) -> None:
        self.rng = random.Random()
        self.sentences = [text for text, _ in rarb_sentences()]

    def _query_and_documents(self) -> tuple[str, list[str]]:
        picked = self.rng.sample(self.sentences, DOCUMENTS + 1)
        return picked[0], picked[1:]

    @task(3)
    def rerank(self) -> None:
        query, documents = self._query_and_documents()
        self.call("Rerank", self.client.rerank, query, documents)

    @task(1)
    def rerank_top(self) -> None:
        query, documents = self._query_and_documents()
        self.call("Rerank", self.client.rerank, query, documents, top_n=TOP_N, min_probability=0.1)
