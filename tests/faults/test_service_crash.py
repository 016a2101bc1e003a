"""kill -9 of a service under locust load: the launcher restarts it, the SDK's retries hide the
gap from callers whose deadline has time left, and no acknowledged upsert is lost.

A real retrieval service runs under the launcher's `Supervisor` (as `facet up` runs it); a real
headless locust process drives SDK users (upsert, search, get, embed) against it, each call with
a 60 s deadline and a 60 s retry budget — longer than a restart on this machine. Mid-load the
service gets SIGKILL (a crash: no drain). What a user can rely on, asserted here:

- every call locust made succeeded (the CSV's failure count is 0 for every RPC): a call that met
  the dead port got UNAVAILABLE, was retried by the SDK and answered by the restarted service;
- the launcher restarted the service on the same port (a new pid, SERVING);
- every upsert that was acknowledged before or after the crash is there afterwards (Get by id
  through the SDK returns each one).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

import sdk
from services.model_repository import ModelRepository
from tests.faults.locust_run import LocustRun, SupervisedService, ack_count, acknowledged, wait_for

pytestmark = pytest.mark.integration

COLLECTION = "crash"
# Each locust call: a deadline and a retry budget well above a restart here (2-6 s quiet, more
# when the machine is busy), so a call that meets the restart is retried, not failed.
LOAD_ENV = {"FACET_FAULTS_TIMEOUT_S": "90", "FACET_RETRY_BUDGET_S": "90", "FACET_FAULTS_COLLECTION": COLLECTION}


def test_a_killed_service_is_restarted_and_loses_no_acknowledged_upsert(
    model_repository: ModelRepository, tmp_path: Path
) -> None:
    env = {
        "FACET_MODEL_REPOSITORY": str(model_repository.root),
        "FACET_DATA_DIR": str(tmp_path / "data"),
        "FACET_API_KEY": "",
    }
    ack_log = tmp_path / "acks.jsonl"
    with SupervisedService("retrieval", env, tmp_path / "logs") as service:
        with sdk.Client(service.address, timeout_s=60) as client:
            client.create_collection(COLLECTION)
        first_pid = service.pid
        with LocustRun(
            service.address, tmp_path, users=4, env={**LOAD_ENV, "FACET_LOAD_ACK_LOG": str(ack_log)}
        ) as load:
            wait_for(
                lambda: ack_count(ack_log) >= 20 or load.process.poll() is not None,
                120,
                "20 acknowledged upserts before the crash",
            )
            assert first_pid is not None
            os.kill(first_pid, signal.SIGKILL)
            acked_at_crash = ack_count(ack_log)
            wait_for(lambda: service.pid not in (None, first_pid), 60, "the launcher to start the service again")
            wait_for(lambda: ack_count(ack_log) >= acked_at_crash + 20 or load.process.poll() is not None, 180,
                     "20 acknowledged upserts after the restart")  # fmt: skip
            load.stop()
            stats, failures = load.stats(), load.failures()
            restarts = service.supervisor.services["retrieval"].restarts
            acked = acknowledged(ack_log)[COLLECTION]
            with sdk.Client(service.address, timeout_s=60) as client:  # the restarted service
                found = {
                    doc.id
                    for start in range(0, len(acked), 64)
                    for doc in client.get(COLLECTION, acked[start : start + 64])
                }

    assert {"Upsert", "Search", "Get", "Embed"} <= stats.keys(), (
        f"locust called {sorted(stats)}; output:\n{load.log()[-2000:]}"
    )
    assert all(row.failures == 0 for row in stats.values()), f"calls failed across the crash: {failures}"
    assert restarts == 1
    assert len(acked) >= acked_at_crash + 20
    lost = [doc_id for doc_id in acked if doc_id not in found]
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged upserts lost: {lost[:10]}"
