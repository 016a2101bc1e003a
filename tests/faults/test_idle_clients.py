"""Clients that hold a call open and do nothing: a Rollout stream nobody reads, and a call whose
request message is never sent. What a user relies on: the server's memory stays bounded, each
call's deadline ends it on the server too (nothing is left running), and other clients' calls
keep succeeding meanwhile.

Measured on a real next-frame service (ONNX Runtime): its resident memory (/proc/<pid>/status)
before the idle calls and at its peak while they are held; its `facet_requests_in_flight` and
`facet_requests` metrics for what the server did with them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest

import sdk
from tests.faults.conftest import LONG_HORIZON
from tests.faults.locust_run import metric, rss_bytes, wait_for
from tests.serving import ServerProcess

pytestmark = pytest.mark.integration

IDLE_CALLS = 16
IDLE_DEADLINE_S = 5.0
ROLLOUT = "/facet.v1.NextFrame/Rollout"
PREDICT_NEXT = "/facet.v1.NextFrame/PredictNext"
# What IDLE_CALLS idle calls may add to the server's resident memory. Each asks for LONG_HORIZON
# frames (256 MiB of 4 KiB frames) that its reader never takes: the server must stop at gRPC's
# flow-control window, not buffer them. 64 MiB leaves room for the allocator, the windows and
# gRPC's per-call state, and fails if streams buffered without bound.
MAX_GROWTH_BYTES = 64 * 1024 * 1024
NO_RETRY = sdk.RetryPolicy(max_attempts=1)


def _model_and_clip(address: str) -> tuple[str, np.ndarray]:
    with sdk.Client(nextframe=address, timeout_s=60) as client:
        model = next(m for m in client.list_frame_models() if m.dataset == "pendulum")
        clip = client.simulate("pendulum", constant=sum(model.constant_range) / 2, frames=5)
    return model.id, clip


class _Others:
    """A client that keeps calling PredictNext (no retries) while idle calls are held: every
    outcome counted by status."""

    def __init__(self, address: str, model: str, clip: np.ndarray, retry: sdk.RetryPolicy = NO_RETRY) -> None:
        self.outcomes: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(address, model, clip, retry), daemon=True)
        self._thread.start()

    def _run(self, address: str, model: str, clip: np.ndarray, retry: sdk.RetryPolicy) -> None:
        with sdk.Client(nextframe=address, timeout_s=30, retry=retry) as client:
            while not self._stop.is_set():
                try:
                    assert client.predict_next(model, clip).shape == (64, 64)
                    status = "OK"
                except sdk.FacetError as exc:
                    status = exc.code.name
                self.outcomes[status] = self.outcomes.get(status, 0) + 1

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join(60)
        return self.outcomes


def _ended_unfinished(metrics_url: str) -> float:
    """Rollouts the server ended before their last frame: DEADLINE_EXCEEDED (the deadline passed
    while it waited to write), or RESOURCE_EXHAUSTED (deadline admission refused the next frame:
    the deadline was too close to compute it). Errors such as INTERNAL are not counted."""
    return sum(
        metric(metrics_url, "facet_requests_total", method=ROLLOUT, code=c)
        for c in ("DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "CANCELLED")
    )


def _peak_rss_until(pid: int, condition: Callable[[], bool], timeout_s: float, what: str) -> int:
    """The server's peak resident memory (bytes), sampled while polling `condition` (see wait_for)."""
    peak = rss_bytes(pid)

    def sampled() -> bool:
        nonlocal peak
        peak = max(peak, rss_bytes(pid))
        return condition()

    wait_for(sampled, timeout_s, what)
    return peak


def test_streams_nobody_reads_end_at_their_deadline_in_bounded_memory(frame_server: ServerProcess) -> None:
    address, metrics = frame_server.address, f"http://127.0.0.1:{frame_server.metrics_port}/metrics"
    model, clip = _model_and_clip(address)
    with sdk.Client(nextframe=address, timeout_s=60) as client:  # warm: the model loaded, one full stream read
        assert len(list(client.rollout(model, clip, horizon=8))) == 8
    pid = frame_server.process.pid  # type: ignore[union-attr]
    before = rss_bytes(pid)
    ended_before = _ended_unfinished(metrics)

    # the SDK's default retries: a Rollout is retried only until its first frame (16 connections
    # opened at once on a saturated 2-core machine: one connection attempt in ~12 runs timed out)
    clients = [sdk.Client(nextframe=address, timeout_s=IDLE_DEADLINE_S) for _ in range(IDLE_CALLS)]
    streams: list[Iterator[np.ndarray]] = [c.rollout(model, clip, horizon=LONG_HORIZON) for c in clients]
    others = _Others(address, model, clip)
    try:
        for stream in streams:  # each reads its first frame, then nobody reads
            assert next(stream).shape == (64, 64)
        opened = time.monotonic()
        peak = _peak_rss_until(
            pid,
            lambda: (
                metric(metrics, "facet_requests_in_flight", method=ROLLOUT) == 0
                and time.monotonic() - opened > IDLE_DEADLINE_S
            ),
            120,
            "the unread streams to end on the server",
        )
        outcomes = others.stop()
        seen: dict[str, int] = {}
        for stream in streams:  # what the idle reader finds when it comes back
            try:
                for _ in stream:
                    pass
                seen["OK"] = seen.get("OK", 0) + 1
            except sdk.FacetError as exc:
                seen[exc.code.name] = seen.get(exc.code.name, 0) + 1
    finally:
        others.stop()
        for c in clients:
            c.close()
    ended = _ended_unfinished(metrics) - ended_before
    print(f"unread streams: server RSS {before / 2**20:.1f} MiB before, peak {peak / 2**20:.1f} MiB; others {outcomes}")
    assert seen == {"DEADLINE_EXCEEDED": IDLE_CALLS}, f"the idle readers saw {seen}"
    assert ended >= IDLE_CALLS, f"the server ended {ended} of {IDLE_CALLS} unread streams"
    assert outcomes.get("OK", 0) >= 1 and set(outcomes) == {"OK"}, f"other clients' PredictNext calls: {outcomes}"
    assert peak - before < MAX_GROWTH_BYTES, (
        f"server memory grew by {(peak - before) / 2**20:.1f} MiB with {IDLE_CALLS} unread streams"
    )


def test_calls_whose_request_never_comes_end_at_their_deadline(frame_server: ServerProcess) -> None:
    address = frame_server.address
    model, clip = _model_and_clip(address)
    pid = frame_server.process.pid  # type: ignore[union-attr]
    before = rss_bytes(pid)
    never = threading.Event()

    def no_request() -> Iterator[bytes]:  # headers go out, the request message never does
        never.wait()
        yield b""

    channel = grpc.insecure_channel(address)
    send_nothing = channel.stream_unary(PREDICT_NEXT, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    held = [send_nothing.future(no_request(), timeout=IDLE_DEADLINE_S) for _ in range(IDLE_CALLS)]
    others = _Others(address, model, clip)
    try:
        opened = time.monotonic()
        peak = _peak_rss_until(
            pid, lambda: all(f.done() for f in held) and time.monotonic() - opened > 1, 120, "the silent calls to end"
        )
        outcomes = others.stop()
        codes = {f.code().name for f in held}  # type: ignore[union-attr]
    finally:
        never.set()
        others.stop()
        channel.close()
    print(f"silent calls: server RSS {before / 2**20:.1f} MiB before, peak {peak / 2**20:.1f} MiB; others {outcomes}")
    assert codes == {"DEADLINE_EXCEEDED"}, f"calls that never sent their request ended with {codes}"
    assert outcomes.get("OK", 0) >= 1 and set(outcomes) == {"OK"}, f"other clients' PredictNext calls: {outcomes}"
    assert peak - before < MAX_GROWTH_BYTES, (
        f"server memory grew by {(peak - before) / 2**20:.1f} MiB with {IDLE_CALLS} silent calls"
    )


def test_a_stream_nobody_reads_without_a_deadline_holds_nothing_on_the_server(frame_server: ServerProcess) -> None:
    """A Rollout read once and then not for an hour (a deadline an hour away: the SDK always sets
    one): its 256 frames (4 KiB each, the default `nextframe.max_horizon`) fit in gRPC's flow-control
    windows, so the server finishes the stream (OK) and holds nothing for it; the frames wait in
    the client's buffers, and the reader gets all of them when it comes back. (A call held open
    with nothing to send is ended by the connection age, `server.max_connection_age_s`: see
    tests/services/runtime/test_connections.py.)"""
    address, metrics = frame_server.address, f"http://127.0.0.1:{frame_server.metrics_port}/metrics"
    model, clip = _model_and_clip(address)
    finished_before = metric(metrics, "facet_requests_total", method=ROLLOUT, code="OK")
    with sdk.Client(nextframe=address, timeout_s=3600, retry=NO_RETRY) as idle:
        stream = idle.rollout(model, clip, horizon=256)
        assert next(stream).shape == (64, 64)  # then nobody reads
        others = _Others(address, model, clip)
        try:
            wait_for(
                lambda: (
                    metric(metrics, "facet_requests_total", method=ROLLOUT, code="OK") > finished_before
                    and metric(metrics, "facet_requests_in_flight", method=ROLLOUT) == 0
                ),
                120,
                "the server to finish the unread stream",
            )
            outcomes = others.stop()
        finally:
            others.stop()
        assert len(list(stream)) == 255  # the rest, from the client's buffers
    assert outcomes.get("OK", 0) >= 1 and set(outcomes) == {"OK"}, f"other clients' PredictNext calls: {outcomes}"
