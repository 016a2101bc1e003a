"""Retrieval load: embed, upsert and search (with and without a metadata filter) on RAR-b text.

Each locust process fills one collection `load-<process id>` (created by its first user with
`PREFILL` documents), which every task then reads and writes; it is deleted when the run stops
unless `FACET_LOAD_KEEP_COLLECTIONS` or `FACET_LOAD_ACK_LOG` is set. With `FACET_LOAD_ACK_LOG`
set to a path, every acknowledged upsert appends one JSON line
`{"collection": ..., "ids": [...]}` to it (ids are unique: `<process id>-<n>`), so a fault test
can check afterwards that none of them was lost.
"""

from __future__ import annotations

import itertools
import json
import os
import random

from locust import task

import sdk
from load.scenarios import ACK_LOG_ENV
from load.scenarios._data import rarb_sentences
from load.scenarios._user import PROCESS_ID, FacetUser, address_for, shared, shared_value

KEEP_ENV = "FACET_LOAD_KEEP_COLLECTIONS"
PREFILL = 16  # documents in the collection before the tasks start (the users wait for them)
UPSERT_BATCH = 8  # documents per Upsert task
EMBED_BATCH = 4  # texts per Embed task
TOP_K = 10
_ids = itertools.count()


def log_ack(collection: str, ids: list[str]) -> None:
    """Append an acknowledged upsert to `FACET_LOAD_ACK_LOG` (one line, one `O_APPEND` write)."""
    path = os.environ.get(ACK_LOG_ENV)
    if not path:
        return
    line = (json.dumps({"collection": collection, "ids": ids}) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


class RetrievalUser(FacetUser):
    """Tasks (weights): Search 4, Search with a `source` filter 2, Embed 3, Upsert 1."""

    capability = "retrieval"
    rpcs = ("Search", "Embed", "Upsert")

    def setup(self) -> None:
        self.rng = random.Random()
        self.sentences = rarb_sentences()
        self.sources = sorted({source for _, source in self.sentences})
        self.collection = shared("retrieval.collection", self._make_collection)

    def _make_collection(self) -> str | None:
        name = f"load-{PROCESS_ID}"
        if self.call("CreateCollection", self.client.create_collection, name) is None:
            return None
        # in Upsert-sized batches, so the prefill's calls look like the task's
        done = all(self._upsert(name, UPSERT_BATCH) for _ in range(PREFILL // UPSERT_BATCH))
        return name if done else None

    def _upsert(self, collection: str, n: int) -> bool:
        picked = self.rng.sample(self.sentences, n)
        ids = [f"{PROCESS_ID}-{next(_ids)}" for _ in picked]
        metadata = [{"source": source, "long": len(text) > 100} for text, source in picked]
        result = self.call(
            "Upsert", self.client.upsert, collection, ids=ids, texts=[t for t, _ in picked], metadata=metadata
        )
        if result is not None:
            log_ack(collection, ids)
        return result is not None

    @task(4)
    def search(self) -> None:
        if self.collection:
            self.call("Search", self.client.search, self.collection, self.rng.choice(self.sentences)[0], top_k=TOP_K)

    @task(2)
    def search_filtered(self) -> None:
        if self.collection:
            where = {"source": self.rng.choice(self.sources)}
            self.call(
                "Search",
                self.client.search,
                self.collection,
                self.rng.choice(self.sentences)[0],
                top_k=TOP_K,
                filter=where,
            )

    @task(3)
    def embed(self) -> None:
        self.call("Embed", self.client.embed, [t for t, _ in self.rng.sample(self.sentences, EMBED_BATCH)])

    @task(1)
    def upsert(self) -> None:
        if self.collection:
            self._upsert(self.collection, UPSERT_BATCH)

    @classmethod
    def after_run(cls, host: str | None) -> None:
        collection = shared_value("retrieval.collection")
        if collection is None or os.environ.get(KEEP_ENV) or os.environ.get(ACK_LOG_ENV):
            return
        with sdk.Client(retrieval=address_for(cls.capability, host)) as client:
            try:
                client.delete_collection(collection)
            except sdk.FacetError as exc:
                print(f"load: could not delete collection {collection}: {exc}")
