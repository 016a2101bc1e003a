"""The SDK rides out a restart: a real retrieval server is stopped (SIGTERM: it drains and exits;
or SIGKILL: a crash) and started again on the same port and data directory while clients keep calling; every call
succeeds, some of them by retrying across the gap, and nothing written before is lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import sdk
from sdk import _transport
from tests.serving import ServerProcess, free_port

IDS = [f"doc-{i}" for i in range(8)]
TEXTS = [f"note number {i} about restarts" for i in range(8)]


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `condition` until it holds; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("how", ["terminate", "kill"])  # SIGTERM (drain), or SIGKILL (a crash)
def test_calls_succeed_across_a_restart_on_the_same_port(
    start_server: Callable[..., ServerProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    port = free_port()
    env = {"FACET_SERVER_PORT": str(port)}
    server = start_server(env=env, data_dir=tmp_path)
    address = f"127.0.0.1:{port}"
    # How long this machine takes to restart a service with its model varies (2-6 s on a quiet
    # machine, more under load): the test gives the retries room, the default's ~10 s budget is
    # asserted in test_retries.
    policy = sdk.RetryPolicy(budget_s=120)
    with sdk.Client(address, retry=policy, timeout_s=150) as setup:
        setup.create_collection("restart")
        setup.upsert("restart", IDS, texts=TEXTS)

    retried = []
    real_pause = _transport._pause

    def counting_pause(seconds: float) -> None:
        retried.append(seconds)
        real_pause(seconds)

    monkeypatch.setattr(_transport, "_pause", counting_pause)

    stop = threading.Event()
    errors: list[BaseException] = []
    calls = [0, 0]

    def worker(index: int) -> None:
        with sdk.Client(address, retry=policy, timeout_s=150) as client:
            i = 0
            while not stop.is_set():
                try:
                    which = i % 4
                    if which == 0:
                        assert client.embed(["ride it out"]).shape == (1, 384)
                    elif which == 1:
                        client.upsert("restart", [IDS[i % 8]], texts=[TEXTS[i % 8]])  # by id: idempotent
                    elif which == 2:
                        assert client.search("restart", "restarts", top_k=3)
                    else:
                        assert [d.id for d in client.get("restart", IDS)] == IDS
                except BaseException as exc:  # noqa: BLE001 - every failure is reported below
                    errors.append(exc)
                    return
                calls[index] += 1
                i += 1

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(2)]
    for thread in threads:
        thread.start()
    _wait_for(lambda: min(calls) >= 5 or bool(errors), 120, "calls before the restart")
    if how == "kill":
        server.kill()
    else:
        server.terminate(60)
    restarted = start_server(env=env, data_dir=tmp_path)
    assert restarted.port == port
    serving = list(calls)
    _wait_for(
        lambda: all(c >= s + 4 for c, s in zip(calls, serving, strict=True)) or bool(errors),
        240,
        "calls after the restart",
    )
    stop.set()
    for thread in threads:
        thread.join(200)

    assert not errors, f"{len(errors)} call(s) failed across the restart: " + "; ".join(
        f"{e!r} (request id {getattr(e, 'request_id', None)})" for e in errors
    )
    assert retried, "no call was retried: the restart was not crossed"
    with sdk.Client(address) as client:  # nothing written before the restart is lost
        assert [d.text for d in client.get("restart", IDS)] == TEXTS
        assert np.isfinite(client.embed(["after"])).all()
