"""A locustfile for the fault tests: retrieval users that call the SDK (upsert, search, get,
embed) and log every acknowledged upsert, so a test can check that none was lost.

    FACET_LOAD_ACK_LOG=acks.jsonl FACET_FAULTS_COLLECTION=faults \\
        python -m locust -f tests/faults/locust_retrieval.py --headless -u 4 -r 4 --host 127.0.0.1:50051

Run by `tests.faults.locust_run.LocustRun` in its own process (locust patches the standard
library with gevent; the pytest process must not import it). Environment:

- `FACET_FAULTS_COLLECTION`: the collection the users write to and read from (created beforehand:
  CreateCollection is not idempotent, so it is not retried and does not belong in a load mix).
- `FACET_LOAD_ACK_LOG`: a file to which each acknowledged upsert appends one JSON line,
  `{"collection": ..., "ids": [...]}` (the same format as the load scenarios' ack log).
- `FACET_FAULTS_TIMEOUT_S`: each call's deadline in seconds (default 60); the SDK's retries
  (`FACET_RETRY_*`) fit inside it.

Each task is tagged with its RPC's name in lower case (`--exclude-tags embed` leaves Embed out).
Each call is one locust request named after its RPC; a failure is recorded with the SDK's error
text, which starts with the gRPC status name (`UNAVAILABLE: ...`).
"""

from __future__ import annotations

import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()  # grpc's blocking calls yield to the other users' greenlets

import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

from locust import User, constant, tag, task  # noqa: E402

import sdk  # noqa: E402

COLLECTION = os.environ.get("FACET_FAULTS_COLLECTION", "faults")
ACK_LOG = os.environ.get("FACET_LOAD_ACK_LOG", "")
TIMEOUT_S = float(os.environ.get("FACET_FAULTS_TIMEOUT_S", "60"))
SENTENCES = [
    "The river floods the valley every spring.",
    "A compiler turns source code into machine code.",
    "Bees carry pollen from flower to flower.",
    "The bridge was closed for repairs last winter.",
]


class RetrievalUser(User):
    """One SDK client; writes documents with ids unique to this user, reads them back."""

    wait_time = constant(0.05)

    def on_start(self) -> None:
        self.client = sdk.Client(self.host, timeout_s=TIMEOUT_S)
        self.prefix = uuid.uuid4().hex[:12]
        self.written: list[str] = []

    def on_stop(self) -> None:
        self.client.close()

    def _call(self, name: str, call: Callable[[], Any]) -> bool:
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            call()
        except sdk.FacetError as exc:
            error = exc
        self.environment.events.request.fire(
            request_type="grpc",
            name=name,
            response_time=(time.perf_counter() - started) * 1000.0,
            response_length=0,
            exception=error,
            context={},
        )
        return error is None

    @task(3)
    @tag("upsert")
    def upsert(self) -> None:
        i = len(self.written)
        doc_id = f"{self.prefix}-{i}"
        if self._call(
            "Upsert", lambda: self.client.upsert(COLLECTION, [doc_id], texts=[SENTENCES[i % len(SENTENCES)]])
        ):
            self.written.append(doc_id)
            if ACK_LOG:
                with open(ACK_LOG, "a", encoding="utf-8") as log:
                    log.write(json.dumps({"collection": COLLECTION, "ids": [doc_id]}) + "\n")

    @task(2)
    @tag("search")
    def search(self) -> None:
        self._call("Search", lambda: self.client.search(COLLECTION, "what floods in spring?", top_k=3))

    @task(1)
    @tag("get")
    def get(self) -> None:
        if self.written:
            self._call("Get", lambda: self.client.get(COLLECTION, self.written[-4:]))

    @task(1)
    @tag("embed")
    def embed(self) -> None:
        self._call("Embed", lambda: self.client.embed([SENTENCES[0]]))
