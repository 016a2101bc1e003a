"""The SDK's promises about a call's life, against a real grpc.aio server on loopback (port 0) whose
servicers fail on a script and record every attempt: retries happen, with growing pauses, on
UNAVAILABLE only and for idempotent RPCs only, within the call's deadline; every call carries a
deadline and a request id; a server bug reaches the caller as InternalError with the request id and
no stack trace; a reply that breaks the contract is ProtocolError, never the caller's InvalidArgument.

The pauses are watched through the transport's clock and pause hooks (`sdk._transport._now`,
`_pause`): the schedule is asserted, never a wall-clock time."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import numpy as np
import pytest

import sdk
from sdk import _transport
from sdk._contract import REQUEST_ID_METADATA
from sdk._proto.facet.v1 import (
    nextframe_pb2,
    nextframe_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
    sae_pb2,
    sae_pb2_grpc,
)
from sdk._tensors import tensor_from_numpy
from services.runtime.interceptor import FacetInterceptor

OK = grpc.StatusCode.OK
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


@dataclass
class Attempt:
    method: str
    request_id: str
    time_remaining: float | None


@dataclass
class Script:
    """What the stand-in servicers answer: per method, the status of each attempt in turn
    (OK once the list runs out), and every attempt they saw."""

    failures: dict[str, list[grpc.StatusCode]] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    bug: bool = False  # raise an unexpected exception (a server bug) instead
    frames_before_failure: int = 0  # Rollout: frames sent before a scripted failure

    def count(self, method: str) -> int:
        return sum(a.method == method for a in self.attempts)

    async def enter(self, method: str, context: grpc.aio.ServicerContext) -> grpc.StatusCode:
        metadata = {m.key: m.value for m in context.invocation_metadata() or ()}
        self.attempts.append(Attempt(method, str(metadata.get(REQUEST_ID_METADATA, "")), context.time_remaining()))
        if self.bug:
            raise ZeroDivisionError("secret detail of the server's bug")
        planned = self.failures.get(method, [])
        return planned.pop(0) if planned else OK


class StandInRetrieval(retrieval_pb2_grpc.RetrievalServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    async def _answer(self, method: str, context: grpc.aio.ServicerContext) -> None:
        code = await self.script.enter(method, context)
        if code != OK:
            await context.abort(code, f"scripted {code.name}")

    async def ListCollections(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._answer("ListCollections", context)
        return retrieval_pb2.ListCollectionsResponse()

    async def CreateCollection(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._answer("CreateCollection", context)
        return retrieval_pb2.Collection(name=request.name, dimension=4)

    async def Embed(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._answer("Embed", context)
        values = np.full((len(request.texts), 4), np.nan if request.texts[0] == "nan please" else 0.5, np.float32)
        return retrieval_pb2.EmbedResponse(embeddings=tensor_from_numpy(values))


class StandInNextFrame(nextframe_pb2_grpc.NextFrameServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    async def Rollout(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        code = await self.script.enter("Rollout", context)
        for step in range(1, request.horizon + 1):
            if code != OK and step > self.script.frames_before_failure:
                await context.abort(code, f"scripted {code.name}")
            frame = tensor_from_numpy(np.full((64, 64), step, np.uint8))
            yield nextframe_pb2.RolloutFrame(step=step, frame=frame)


class StandInSae(sae_pb2_grpc.SaeServicer):
    """Answers Reconstruct as the issue saw it: OK, with a squared error of inf."""

    def __init__(self, script: Script) -> None:
        self.script = script

    async def Reconstruct(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.script.enter("Reconstruct", context)
        rows = np.frombuffer(request.activations.data, np.float32).reshape(tuple(request.activations.shape))
        return sae_pb2.ReconstructResponse(
            reconstruction=tensor_from_numpy(rows), squared_error=[float("inf")] * len(rows)
        )


class AioServer:
    """A grpc.aio server with the stand-ins (and optionally Facet's interceptor) on its own
    event loop in a thread, so sync and async clients alike can call it."""

    def __init__(self, script: Script, interceptors: tuple[Any, ...] = ()) -> None:
        self.script = script
        self.interceptors = interceptors
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: grpc.aio.Server | None = None
        self.address = ""

    async def _start(self) -> int:
        self.server = grpc.aio.server(futures.ThreadPoolExecutor(2), interceptors=self.interceptors)
        retrieval_pb2_grpc.add_RetrievalServicer_to_server(StandInRetrieval(self.script), self.server)
        nextframe_pb2_grpc.add_NextFrameServicer_to_server(StandInNextFrame(self.script), self.server)
        sae_pb2_grpc.add_SaeServicer_to_server(StandInSae(self.script), self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return port

    def __enter__(self) -> AioServer:
        self.thread.start()
        port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        self.address = f"127.0.0.1:{port}"
        return self

    def __exit__(self, *_: object) -> None:
        assert self.server is not None
        asyncio.run_coroutine_threadsafe(self.server.stop(None), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def server(script: Script) -> Iterator[AioServer]:
    with AioServer(script) as running:
        yield running


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses the transport takes between attempts, recorded; a fake clock advances by each
    pause instead of sleeping (so a 10 s retry budget is walked through at once)."""
    taken: list[float] = []
    clock = [1000.0]

    def pause(seconds: float) -> None:
        taken.append(seconds)
        clock[0] += seconds

    async def apause(seconds: float) -> None:
        pause(seconds)

    monkeypatch.setattr(_transport, "_now", lambda: clock[0])
    monkeypatch.setattr(_transport, "_pause", pause)
    monkeypatch.setattr(_transport, "_apause", apause)
    return taken


FAST = sdk.RetryPolicy(initial_backoff_s=0.01, max_backoff_s=0.04, multiplier=2.0, jitter=0.0)


def test_unavailable_is_retried_with_growing_pauses_until_ok(
    server: AioServer, script: Script, pauses: list[float]
) -> None:
    script.failures["ListCollections"] = [UNAVAILABLE] * 4
    with sdk.Client(server.address, retry=FAST) as client:
        assert client.list_collections() == []
    assert script.count("ListCollections") == 5
    assert pauses == [0.01, 0.02, 0.04, 0.04]  # exponential, capped at max_backoff_s
    assert len({a.request_id for a in script.attempts}) == 1 and script.attempts[0].request_id  # one call, one id


def test_the_default_policy_backs_off_with_jitter_and_rides_out_about_ten_seconds(
    server: AioServer, script: Script, pauses: list[float]
) -> None:
    script.failures["ListCollections"] = [UNAVAILABLE] * 1000  # down for good
    with sdk.Client(server.address) as client, pytest.raises(sdk.Unavailable) as caught:
        client.list_collections()
    policy = sdk.RetryPolicy()
    expected = list(zip(range(len(pauses)), policy.backoffs_s(), strict=False))
    for (i, base), taken in zip(expected, pauses, strict=True):
        assert base * (1 - policy.jitter) <= taken <= base * (1 + policy.jitter), (i, taken)
    assert pauses[:4] == sorted(pauses[:4])  # growing while below the cap
    # a restart of up to ~10 s is ridden out: retries go on until the next pause would pass the budget
    assert policy.budget_s - policy.max_backoff_s * (1 + policy.jitter) < sum(pauses) <= policy.budget_s == 10.0
    assert script.count("ListCollections") == len(pauses) + 1
    assert caught.value.request_id == script.attempts[0].request_id
    assert f"after {len(pauses) + 1} attempts over" in caught.value.message


def test_a_cancelled_sent_by_the_server_is_retried(server: AioServer, script: Script, pauses: list[float]) -> None:
    # gRPC cancels the calls a stopping server accepted but never started: they were not served
    script.failures["ListCollections"] = [grpc.StatusCode.CANCELLED] * 2
    with sdk.Client(server.address, retry=FAST) as client:
        assert client.list_collections() == []
    assert script.count("ListCollections") == 3 and pauses == [0.01, 0.02]


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    ],
)
def test_other_statuses_are_not_retried(
    server: AioServer, script: Script, pauses: list[float], code: grpc.StatusCode
) -> None:
    script.failures["ListCollections"] = [code]
    with sdk.Client(server.address, retry=FAST) as client, pytest.raises(sdk.FacetError) as caught:
        client.list_collections()
    assert caught.value.code == code
    assert script.count("ListCollections") == 1 and pauses == []


def test_a_call_that_is_not_idempotent_is_not_retried(server: AioServer, script: Script, pauses: list[float]) -> None:
    script.failures["CreateCollection"] = [UNAVAILABLE]
    with sdk.Client(server.address, retry=FAST) as client, pytest.raises(sdk.Unavailable):
        client.create_collection("c")
    assert script.count("CreateCollection") == 1 and pauses == []


def test_retries_stop_at_the_calls_deadline(server: AioServer, script: Script, pauses: list[float]) -> None:
    script.failures["ListCollections"] = [UNAVAILABLE] * 1000
    with sdk.Client(server.address, timeout_s=2.0) as client, pytest.raises(sdk.Unavailable):
        client.list_collections()
    assert sum(pauses) < 2.0 < sum(pauses) + sdk.RetryPolicy().max_backoff_s * 1.2 + 1e-9


def test_the_policy_comes_from_the_environment(
    server: AioServer, script: Script, pauses: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACET_RETRY_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("FACET_RETRY_INITIAL_BACKOFF_S", "0.05")
    monkeypatch.setenv("FACET_RETRY_JITTER", "0")
    script.failures["ListCollections"] = [UNAVAILABLE] * 5
    with sdk.Client(server.address) as client, pytest.raises(sdk.Unavailable):
        client.list_collections()
    assert script.count("ListCollections") == 2 and pauses == [0.05]
    monkeypatch.setenv("FACET_RETRY_BUDGET_S", "ten")
    with pytest.raises(sdk.InvalidArgument, match="FACET_RETRY_BUDGET_S"):
        sdk.Client(server.address)


def test_retries_can_be_turned_off(server: AioServer, script: Script, pauses: list[float]) -> None:
    script.failures["ListCollections"] = [UNAVAILABLE]
    with sdk.Client(server.address, retry=sdk.RetryPolicy(max_attempts=1)) as client, pytest.raises(sdk.Unavailable):
        client.list_collections()
    assert script.count("ListCollections") == 1


@pytest.mark.parametrize(
    "bad", [{"budget_s": -1}, {"jitter": 2}, {"multiplier": 0.5}, {"max_attempts": 0}, {"max_backoff_s": float("nan")}]
)
def test_a_bad_policy_is_refused_naming_the_field(bad: dict[str, float]) -> None:
    with pytest.raises(sdk.InvalidArgument, match=next(iter(bad))):
        sdk.RetryPolicy(**bad)  # type: ignore[arg-type]


async def test_the_async_client_retries_the_same_way(server: AioServer, script: Script, pauses: list[float]) -> None:
    script.failures["ListCollections"] = [UNAVAILABLE] * 2
    script.failures["CreateCollection"] = [UNAVAILABLE]
    async with sdk.AsyncClient(server.address, retry=FAST) as client:
        assert await client.list_collections() == []
        with pytest.raises(sdk.Unavailable):
            await client.create_collection("c")
    assert script.count("ListCollections") == 3 and script.count("CreateCollection") == 1
    assert pauses == [0.01, 0.02]


def test_a_stream_is_retried_before_its_first_message_only(
    server: AioServer, script: Script, pauses: list[float]
) -> None:
    clip = np.zeros((5, 64, 64), np.uint8)
    script.failures["Rollout"] = [UNAVAILABLE]  # fails before the first frame: retried
    with sdk.Client(nextframe=server.address, retry=FAST) as client:
        frames = list(client.rollout("m", clip, horizon=3))
    assert [int(f[0, 0]) for f in frames] == [1, 2, 3] and script.count("Rollout") == 2
    script.attempts.clear()
    script.failures["Rollout"] = [UNAVAILABLE]
    script.frames_before_failure = 2  # fails after two frames: the consumer has them, not retried
    seen = []
    with sdk.Client(nextframe=server.address, retry=FAST) as client, pytest.raises(sdk.Unavailable):
        for frame in client.rollout("m", clip, horizon=3):
            seen.append(int(frame[0, 0]))
    assert seen == [1, 2] and script.count("Rollout") == 1


def test_every_call_carries_the_default_deadline(server: AioServer, script: Script) -> None:
    with sdk.Client(server.address) as client:
        client.list_collections()
        client.list_collections(timeout_s=5)
    default, given = (a.time_remaining for a in script.attempts)
    # gRPC rounds a deadline up on the wire: loose bounds, no timing
    assert default is not None and sdk.DEFAULT_TIMEOUT_S - 10 < default <= sdk.DEFAULT_TIMEOUT_S + 1
    assert given is not None and 0 < given <= 5 + 1 < sdk.DEFAULT_TIMEOUT_S - 10


def test_a_server_bug_is_an_internal_error_with_the_request_id_and_no_stack_trace(script: Script) -> None:
    script.bug = True
    with AioServer(script, interceptors=(FacetInterceptor(),)) as running, sdk.Client(running.address) as client:
        with pytest.raises(sdk.InternalError) as caught:
            client.list_collections()
    error = caught.value
    sent = script.attempts[0].request_id
    assert sent and error.request_id == sent and sent in error.message
    for leak in ("Traceback", "ZeroDivisionError", "secret", 'File "'):
        assert leak not in str(error)
    assert len(script.attempts) == 1  # INTERNAL is not retried


@pytest.mark.parametrize("cls", [sdk.Client, sdk.AsyncClient])
async def test_a_bad_reply_is_a_protocol_error_not_the_callers_invalid_argument(
    server: AioServer, script: Script, cls: type
) -> None:
    client = cls(server.address)
    try:
        with pytest.raises(sdk.ProtocolError) as caught:
            result = client.embed(["nan please"])
            if asyncio.iscoroutine(result):
                await result
    finally:
        closing = client.close()
        if asyncio.iscoroutine(closing):
            await closing
    error = caught.value
    assert isinstance(error, sdk.InternalError) and not isinstance(error, sdk.InvalidArgument)
    assert "Embed" in error.message and "finite" in error.message
    assert error.request_id == script.attempts[0].request_id


# The RPCs that are never retried, and why: sent again after a lost reply, they would answer
# AlreadyExists / NotFound for what the first attempt did. Every other RPC is retried.
NOT_IDEMPOTENT = {"retrieval": {"CreateCollection", "DeleteCollection"}, "sae": set(), "nextframe": set(), "rerank": set(), "paraphrase": set(), "phenotype": set()}


def test_every_rpc_is_classified_as_retried_or_not() -> None:
    from google.protobuf import descriptor_pool

    from sdk._contract import CAPABILITIES
    from sdk._transport import SyncTransport

    services = {m._service.capability: m._service for m in SyncTransport.__subclasses__() if m._service is not None}
    for capability in CAPABILITIES:
        methods = {m.name for m in descriptor_pool.Default().FindServiceByName(capability.service_name).methods}
        retried = services[capability.name].idempotent
        assert retried.isdisjoint(NOT_IDEMPOTENT[capability.name]), capability.name
        assert retried | NOT_IDEMPOTENT[capability.name] == methods, capability.name


def test_a_non_finite_result_from_the_server_is_a_protocol_error(server: AioServer, script: Script) -> None:
    with sdk.Client(sae=server.address) as client, pytest.raises(sdk.ProtocolError) as caught:
        client.reconstruct("s", np.full((1, 4), 1e18, np.float32))
    error = caught.value
    assert "Reconstruct" in error.message and "squared_error" in error.message
    assert error.request_id == script.attempts[0].request_id and error.request_id in error.message


async def test_the_async_stream_is_retried_before_its_first_message_only(
    server: AioServer, script: Script, pauses: list[float]
) -> None:
    clip = np.zeros((5, 64, 64), np.uint8)
    script.failures["Rollout"] = [UNAVAILABLE]
    async with sdk.AsyncClient(nextframe=server.address, retry=FAST) as client:
        frames = [int(f[0, 0]) async for f in client.rollout("m", clip, horizon=3)]
        assert frames == [1, 2, 3] and script.count("Rollout") == 2
        script.attempts.clear()
        script.failures["Rollout"] = [UNAVAILABLE]
        script.frames_before_failure = 1
        seen = []
        with pytest.raises(sdk.Unavailable):
            async for frame in client.rollout("m", clip, horizon=3):
                seen.append(int(frame[0, 0]))
    assert seen == [1] and script.count("Rollout") == 1
