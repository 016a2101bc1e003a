"""kill -9 of a service under locust load: the launcher restarts it, the SDK's retries hide the
gap from callers whose deadline has time left, and no acknowledged upsert is lost.

A real retrieval service runs under the launcher's `Supervisor` (as `facet up` runs it); a real
headless locust process runs the project's retrieval scenario (`load/scenarios/retrieval.py`:
Search with and without a filter, Embed, Upsert, through the SDK with its default 30 s deadline),
with a retry budget (`FACET_RETRY_BUDGET_S`) longer than a restart on this machine. Mid-load the
service gets SIGKILL (a crash: no drain). What a user can rely on, asserted here:

- every call locust made succeeded (0 failures for every RPC): a call that met the dead port got
  UNAVAILABLE, was retried by the SDK and answered by the restarted service;
- the launcher restarted the service on the same port (a new pid, SERVING), once;
- every upsert acknowledged before or after the crash is there afterwards (Get by id).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from services.model_repository import ModelRepository
from tests.faults.locust_run import (
    SCENARIOS,
    LocustRun,
    SupervisedService,
    ack_count,
    acknowledged,
    lost_upserts,
    service_env,
    wait_for,
)

pytestmark = pytest.mark.integration

# the SDK's retries may last up to the calls' 30 s deadline: longer than a restart here (2-6 s
# on a quiet machine, more when it is busy)
RETRY_ENV = {"FACET_RETRY_BUDGET_S": "30"}
ACKS = 5  # acknowledged upserts (of 8 documents each) before the crash, and again after the restart


def test_a_killed_service_is_restarted_and_loses_no_acknowledged_upsert(
    model_repository: ModelRepository, tmp_path: Path
) -> None:
    env = service_env(model_repository.root, tmp_path / "data")
    ack_log = tmp_path / "acks.jsonl"
    with SupervisedService("retrieval", env, tmp_path / "logs") as service:
        first_pid = service.pid
        assert first_pid is not None
        load_env = {**RETRY_ENV, "FACET_LOAD_ACK_LOG": str(ack_log), "FACET_RETRIEVAL_ADDR": service.address}
        with LocustRun(
            service.address, tmp_path, users=4, env=load_env, locustfile=SCENARIOS, user_class="RetrievalUser"
        ) as load:
            wait_for(
                lambda: ack_count(ack_log) >= ACKS or load.process.poll() is not None,
                120,
                "upserts acknowledged before the crash",
            )
            os.kill(first_pid, signal.SIGKILL)
            acked_at_crash = ack_count(ack_log)
            wait_for(lambda: service.pid not in (None, first_pid), 60, "the launcher to start the service again")
            wait_for(lambda: ack_count(ack_log) >= acked_at_crash + ACKS or load.process.poll() is not None, 180,
                     "upserts acknowledged after the restart")  # fmt: skip
            load.stop()
        stats, failures = load.stats(), load.failures()
        restarts = service.supervisor.services["retrieval"].restarts
        acked = acknowledged(ack_log)
        lost = lost_upserts(service.address, acked)  # asked of the restarted service

    assert {"Retrieval/Search", "Retrieval/Embed", "Retrieval/Upsert"} <= stats.keys(), (
        f"locust called {sorted(stats)}; output:\n{load.log()[-2000:]}"
    )
    assert all(row.failures == 0 for row in stats.values()), f"calls failed across the crash: {failures}"
    assert restarts == 1
    assert ack_count(ack_log) >= acked_at_crash + ACKS
    assert not lost, f"{len(lost)} of {sum(map(len, acked.values()))} acknowledged documents lost: {lost[:10]}"
