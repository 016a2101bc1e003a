"""The inference engine killed under locust load and started again: a retrieval service on the
triton backend, its tritonserver killed with SIGKILL (the server and its python-backend stubs),
then started again on the same ports, as a process supervisor (Kubernetes, systemd) would.

What a user relies on, asserted here: calls made while Triton is away fail with UNAVAILABLE on
the service (never INTERNAL), which the SDK retries; once Triton is back the service loads its
model there again by itself and the retried calls succeed — no locust call failed within its
60 s deadline; the documents live in the service's store, not in the engine, so every
acknowledged upsert is still there.

The Ray head is not killed here: on 2 cores starting a head and redeploying the Serve
applications takes over a minute, and the session's tests share one head (tests/conftest.py's
`ray_cluster`). A Serve application deleted under a running service is covered by
tests/services/backends/test_ray_backend.py.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

import sdk
from services.model_repository import ModelRepository
from tests.faults.locust_run import LocustRun, ack_count, acknowledged, wait_for
from tests.serving import LocalTriton, ServerProcess

pytestmark = pytest.mark.integration

COLLECTION = "engine"
LOAD_ENV = {"FACET_FAULTS_TIMEOUT_S": "90", "FACET_RETRY_BUDGET_S": "90", "FACET_FAULTS_COLLECTION": COLLECTION}


def test_triton_killed_under_load_loses_no_call_and_no_upsert(
    model_repository: ModelRepository, tmp_path: Path
) -> None:
    triton = LocalTriton(model_repository, tmp_path / "triton")
    triton.server.start(timeout_s=120)
    server = ServerProcess(model_repository.root, tmp_path / "data", triton.env).start(timeout_s=240)
    ack_log = tmp_path / "acks.jsonl"
    try:
        with sdk.Client(server.address, timeout_s=60) as client:
            client.create_collection(COLLECTION)
        with LocustRun(server.address, tmp_path, users=3, env={**LOAD_ENV, "FACET_LOAD_ACK_LOG": str(ack_log)}) as load:
            wait_for(
                lambda: ack_count(ack_log) >= 10 or load.process.poll() is not None,
                120,
                "10 acknowledged upserts before the kill",
            )
            engine = triton.server.process
            assert engine is not None
            os.killpg(engine.pid, signal.SIGKILL)  # tritonserver and its stubs: its own session
            engine.wait(30)
            triton.server.start(timeout_s=120)  # the same ports, no model loaded until the service asks
            acked_at_restart = ack_count(ack_log)
            wait_for(lambda: ack_count(ack_log) >= acked_at_restart + 10 or load.process.poll() is not None, 180,
                     "10 acknowledged upserts after Triton is back")  # fmt: skip
            load.stop()
            stats, failures = load.stats(), load.failures()
            acked = acknowledged(ack_log)[COLLECTION]
            with sdk.Client(server.address, timeout_s=60) as client:
                found = {
                    doc.id
                    for start in range(0, len(acked), 64)
                    for doc in client.get(COLLECTION, acked[start : start + 64])
                }
        log = server.log()
    finally:
        server.terminate(30)
        triton.server.stop()
    assert {"Upsert", "Search", "Embed"} <= stats.keys(), (
        f"locust called {sorted(stats)}; output:\n{load.log()[-2000:]}"
    )
    assert all(row.failures == 0 for row in stats.values()), f"calls failed while Triton was away: {failures}"
    assert '"code": "UNAVAILABLE"' in log, "no call met the missing engine: the kill was not crossed under load"
    assert '"code": "INTERNAL"' not in log
    lost = [doc_id for doc_id in acked if doc_id not in found]
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged upserts lost: {lost[:10]}"
