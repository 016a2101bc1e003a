"""The runtime's promises on a real service process, on each of the three backends: health follows
readiness (NOT_SERVING until the model is warm), SIGTERM drains (in-flight calls finish, new calls
get UNAVAILABLE, calls past the grace period are cut off with UNAVAILABLE), the API key, deadlines,
overload and the reply size limit.

Every wait is on something the server reports (health, its /metrics, its log), polled with a
deadline; no test sleeps to let something happen."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

import sdk
from sdk._proto.facet.v1 import retrieval_pb2
from services.runtime.interceptor import CUT_OFF_MESSAGE, DRAINING_MESSAGE, UNAUTHENTICATED_MESSAGE
from tests.serving import SERVICE_BACKENDS, ServerProcess, free_port

pytestmark = pytest.mark.integration
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
EMBED = "/facet.v1.Retrieval/Embed"
# 256 texts of ~256 tokens: seconds of work on a small CPU, on every backend
LONG_TEXTS = ["a fairly long sentence that takes the model some time to embed, word after word, " * 4] * 256
API_KEY = "s3cret"
GUARDED_LIMIT_BYTES = 200_000  # server.max_message_bytes of the guarded server: 256 embeddings do not fit


def _health(address: str) -> int | None:
    with grpc.insecure_channel(address) as channel:
        try:
            return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="facet.v1.Retrieval"), timeout=1).status
        except grpc.RpcError:
            return None


def _metric(server: ServerProcess, name: str, **labels: str) -> float:
    """The value of one sample on the server's /metrics (0 when absent)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def _until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s} s")
        time.sleep(0.02)


def _raw_embed(address: str, texts: list[str], timeout_s: float = 120, metadata: tuple[tuple[str, str], ...] = ()) -> grpc.RpcError | retrieval_pb2.EmbedResponse:
    """One Embed attempt, no retries: what the server answered (a reply or the error)."""
    options = [("grpc.enable_retries", 0), ("grpc.max_send_message_length", -1)]
    with grpc.insecure_channel(address, options=options) as channel:
        call = channel.unary_unary(EMBED, retrieval_pb2.EmbedRequest.SerializeToString, retrieval_pb2.EmbedResponse.FromString)
        try:
            return call(retrieval_pb2.EmbedRequest(texts=texts), timeout=timeout_s, metadata=metadata)
        except grpc.RpcError as exc:
            return exc


def _in_background(function: Callable[[], object]) -> tuple[threading.Thread, dict[str, object]]:
    result: dict[str, object] = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", function()))
    thread.start()
    return thread, result


def _log_events(server: ServerProcess) -> list[dict[str, object]]:
    return [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]


@pytest.fixture(params=SERVICE_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- readiness ------------------------------------------------------------------------------------


def test_not_serving_until_warm_then_serving(service_on, backend: str) -> None:  # type: ignore[no-untyped-def]
    port = free_port()  # fixed, so health can be polled before the service writes its port file
    server = service_on(backend, {"FACET_SERVER_PORT": str(port), "FACET_ONNXRUNTIME_WARMUP_RUNS": "30"}, wait=False)
    seen: list[int | None] = []
    deadline = time.monotonic() + 300
    while SERVING not in seen:
        assert time.monotonic() < deadline and server.alive(), f"never SERVING: {sorted(set(map(str, seen)))}{server.log_tail()}"
        seen.append(_health(f"localhost:{port}"))
    assert NOT_SERVING in seen, f"never saw NOT_SERVING before SERVING: {sorted(set(map(str, seen)))}"
    assert seen.index(NOT_SERVING) < seen.index(SERVING)
    assert not isinstance(reply := _raw_embed(f"localhost:{port}", ["ready"]), grpc.RpcError), reply  # SERVING means it serves
    server.terminate()


# -- drain on SIGTERM -----------------------------------------------------------------------------


def test_sigterm_drains_in_flight_calls_and_refuses_new_ones(service_on, backend: str) -> None:  # type: ignore[no-untyped-def]
    server = service_on(backend, {"FACET_SERVER_GRACE_PERIOD_S": "120", "FACET_BATCHING_MAX_BATCH_SIZE": "2"})
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
    _until(lambda: watched[:1] == [SERVING], 30, "the health watch saw SERVING")
    slow, result = _in_background(lambda: _raw_embed(server.address, LONG_TEXTS))
    _until(lambda: _metric(server, "facet_requests_in_flight", method=EMBED) >= 1, 60, "the server runs the call")
    server.send_terminate()
    _until(lambda: _health(server.address) == NOT_SERVING, 30, "health says NOT_SERVING while draining")
    refused = _raw_embed(server.address, ["a new call"])
    assert isinstance(refused, grpc.RpcError) and refused.code() == grpc.StatusCode.UNAVAILABLE, refused
    assert refused.details() == DRAINING_MESSAGE
    assert _metric(server, "facet_requests_in_flight", method=EMBED) >= 1, "the slow call ended before the new one was refused"
    slow.join(120)
    reply = result.get("value")
    assert isinstance(reply, retrieval_pb2.EmbedResponse) and list(reply.embeddings.shape) == [256, 384], f"not drained: {reply}"
    assert server.wait(60) == 0
    watcher.join(10)
    assert NOT_SERVING in watched, f"health stream saw {watched}"
    events = [e.get("msg") for e in _log_events(server)]
    assert events.index("draining") < events.index("stopped")
    assert "grace period over" not in events


def test_calls_past_the_grace_period_are_cut_off_with_unavailable(service_on, backend: str) -> None:  # type: ignore[no-untyped-def]
    server = service_on(backend, {"FACET_SERVER_GRACE_PERIOD_S": "0", "FACET_BATCHING_MAX_BATCH_SIZE": "2"})
    slow, result = _in_background(lambda: _raw_embed(server.address, LONG_TEXTS))
    _until(lambda: _metric(server, "facet_requests_in_flight", method=EMBED) >= 1, 60, "the server runs the call")
    server.send_terminate()
    slow.join(60)
    error = result.get("value")
    assert isinstance(error, grpc.RpcError), f"the call finished within a grace period of 0 s: {error}"
    assert error.code() == grpc.StatusCode.UNAVAILABLE and error.details() == CUT_OFF_MESSAGE, error  # retryable, not CANCELLED
    assert server.wait(60) == 0
    cut = [e for e in _log_events(server) if e.get("msg") == "grace period over"]
    assert cut and cut[0]["cut_off_calls"] == 1
    assert any(e.get("method") == EMBED and e.get("code") == "UNAVAILABLE" for e in _log_events(server))


# -- API key, deadlines, overload, reply size: one guarded server per backend ------------------------


@pytest.fixture
def guarded(service_on, backend: str) -> Iterator[ServerProcess]:  # type: ignore[no-untyped-def]
    """A server with an API key, a limit of 2 concurrent calls and a small message limit."""
    server = service_on(backend, {"FACET_API_KEY": API_KEY, "FACET_SERVER_MAX_CONCURRENT_RPCS": "2",
                                  "FACET_SERVER_MAX_MESSAGE_BYTES": str(GUARDED_LIMIT_BYTES)})  # fmt: skip
    yield server
    server.terminate()


def test_the_api_key_guards_every_call_and_unauthenticated_requests_are_not_parsed(guarded: ServerProcess) -> None:
    for key in ("", "wrong"):
        with sdk.Client(guarded.address, api_key=key) as client, pytest.raises(sdk.Unauthenticated, match="API key"):
            client.list_collections()
    parsed = _metric(guarded, "facet_decoded_requests_total", method=EMBED)
    big = ["x" * 100_000] * 600  # a 60 MB request: refused before it is read, whatever the message limit
    refused = _raw_embed(guarded.address, big)
    assert isinstance(refused, grpc.RpcError) and refused.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refused.details() == UNAUTHENTICATED_MESSAGE
    assert _metric(guarded, "facet_decoded_requests_total", method=EMBED) == parsed, "an unauthenticated request was parsed"
    with sdk.Client(guarded.address, api_key=API_KEY) as client:
        assert client.embed(["hi"]).shape == (1, 384)
    assert _metric(guarded, "facet_decoded_requests_total", method=EMBED) == parsed + 1
    assert _health(guarded.address) == SERVING  # health stays open


def test_deadlines_are_honoured(guarded: ServerProcess) -> None:
    with sdk.Client(guarded.address, api_key=API_KEY) as client:
        with pytest.raises(sdk.DeadlineExceeded):
            client.embed(["x"] * 200, timeout_s=1e-4)
        before = _metric(guarded, "facet_requests_total", method=EMBED, code="DEADLINE_EXCEEDED")
        with pytest.raises(sdk.DeadlineExceeded):
            client.embed(LONG_TEXTS[:128], timeout_s=0.3)
        # the server, not only the client, saw the call end at its deadline
        _until(lambda: _metric(guarded, "facet_requests_total", method=EMBED, code="DEADLINE_EXCEEDED") > before, 60,
               "the server records DEADLINE_EXCEEDED")  # fmt: skip
        assert client.embed(["still serving"]).shape == (1, 384)


def test_overload_answers_resource_exhausted(guarded: ServerProcess) -> None:
    texts = ["a long sentence about many different things " * 8] * 64

    def call(_: int) -> str:
        with sdk.Client(guarded.address, api_key=API_KEY, timeout_s=300) as client:
            try:
                client.embed(texts)
                return "ok"
            except sdk.ResourceExhausted as exc:
                return exc.message

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        outcomes = list(pool.map(call, range(12)))
    assert "ok" in outcomes
    refusals = [o for o in outcomes if o != "ok"]
    assert refusals, "12 concurrent calls against a limit of 2 were all accepted"
    # each refusal names the limit that fired; with 2 slots for 12 calls, the concurrent-call limit
    # fires (the engine's own queue may too: Ray Serve's max_ongoing_requests)
    limits = ("server.max_concurrent_rpcs", "batching.max_queue_size", "batching.deadline_admission", "ray.max_ongoing_requests")
    assert all(any(key in o for key in limits) for o in refusals), refusals
    assert any("server.max_concurrent_rpcs" in o for o in refusals), refusals
    with sdk.Client(guarded.address, api_key=API_KEY) as client:
        deadline = time.monotonic() + 30
        while True:  # the server releases finished calls' slots asynchronously
            try:
                assert client.embed(["still serving"]).shape == (1, 384)
                break
            except sdk.ResourceExhausted:
                assert time.monotonic() < deadline, "the server kept refusing calls after the overload ended"


def test_a_reply_over_the_message_limit_is_resource_exhausted_and_counted(guarded: ServerProcess) -> None:
    before = _metric(guarded, "facet_requests_total", method=EMBED, code="RESOURCE_EXHAUSTED")
    with sdk.Client(guarded.address, api_key=API_KEY) as client:
        assert client.embed(["hi"] * 64).shape == (64, 384)  # 98 kB: fits
        with pytest.raises(sdk.ResourceExhausted) as info:
            client.embed(["hi"] * 256)  # 393 kB of embeddings
        assert f"{GUARDED_LIMIT_BYTES:,} bytes" in info.value.message and "server.max_message_bytes" in info.value.message
        assert info.value.request_id
    assert _metric(guarded, "facet_requests_total", method=EMBED, code="RESOURCE_EXHAUSTED") == before + 1
    assert _metric(guarded, "facet_requests_total", method=EMBED, code="OK") >= 1
    logged = [e for e in _log_events(guarded) if e.get("method") == EMBED and e.get("code") == "RESOURCE_EXHAUSTED"]
    assert logged and logged[0]["level"] == "warning"
