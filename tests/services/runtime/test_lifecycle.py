"""Health follows the service's state: NOT_SERVING until the model is warm, NOT_SERVING on
SIGTERM, then in-flight calls drain within the grace period."""

from __future__ import annotations

import json
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import sdk

pytestmark = pytest.mark.integration
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _status(address: str) -> int | None:
    with grpc.insecure_channel(address) as channel:
        try:
            return health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="facet.v1.Retrieval"), timeout=0.5
            ).status
        except grpc.RpcError:
            return None


def test_not_serving_until_warm_then_serving(start_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # a fixed free port so health can be polled before the port file appears
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = start_server(
        env={"FACET_SERVER_PORT": str(port), "FACET_ONNXRUNTIME_WARMUP_RUNS": "30"}, data_dir=tmp_path, wait=False
    )
    seen: list[int | None] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and SERVING not in seen:
        seen.append(_status(f"localhost:{port}"))
        time.sleep(0.02)
    assert NOT_SERVING in seen, f"never saw NOT_SERVING before SERVING: {sorted(set(map(str, seen)))}"
    assert seen[-1] == SERVING
    assert seen.index(NOT_SERVING) < seen.index(SERVING)
    server.terminate()


def test_sigterm_reports_not_serving_and_drains_in_flight_calls(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server(env={"FACET_SERVER_GRACE_PERIOD_S": "20", "FACET_BATCHING_MAX_BATCH_SIZE": "4"})
    texts = ["a fairly long sentence that takes the model some time to embed " * 6] * 256
    results: dict[str, object] = {}

    def slow_call() -> None:
        with sdk.Client(server.address, timeout_s=60) as client:
            try:
                results["shape"] = client.embed(texts).shape
            except sdk.FacetError as exc:
                results["error"] = exc

    watched: list[int] = []

    def watch() -> None:  # a load balancer's view: a health Watch stream opened before SIGTERM
        with grpc.insecure_channel(server.address) as channel:
            stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service="facet.v1.Retrieval"))
            try:
                for reply in stream:
                    watched.append(reply.status)
            except grpc.RpcError:
                pass

    watcher = threading.Thread(target=watch)
    watcher.start()
    thread = threading.Thread(target=slow_call)
    thread.start()
    time.sleep(1.0)  # the call is in flight (64 batches of 4)
    assert server.process is not None
    server.process.send_signal(15)
    thread.join(60)
    code = server.process.wait(30)
    watcher.join(10)
    assert watched[:1] == [SERVING] and NOT_SERVING in watched, f"health stream saw {watched}"
    assert results.get("shape") == (256, 384), f"in-flight call was not drained: {results}"
    assert code == 0
    events = [json.loads(line).get("msg") for line in server.log().splitlines() if line.startswith("{")]
    assert events.index("draining") < events.index("stopped")
