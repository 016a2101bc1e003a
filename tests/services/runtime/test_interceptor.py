"""The shared interceptor and drain, on a real grpc.aio server on loopback (in this process, so the
test can see the server's own events and metrics): replies over the message limit, auth before
the request is read, cancelled streams, and the drain's refusals and cut-off."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import grpc
import pytest

from sdk._contract import REQUEST_ID_METADATA
from sdk._proto.facet.v1 import common_pb2
from services.runtime.config import FacetConfig, ServerConfig
from services.runtime.errors import InvalidArgument
from services.runtime.interceptor import (
    CUT_OFF_MESSAGE,
    DRAINING_MESSAGE,
    LOGGED_MESSAGE_CHARS,
    MAX_STATUS_MESSAGE_CHARS,
    STARTING_MESSAGE,
    UNAUTHENTICATED_MESSAGE,
)
from services.runtime.metrics import METRICS
from services.runtime.server import FacetService, RunningServer, start_server
from tests.serving import free_port

SERVICE = "facet.test.Runtime"
REPLY, STREAM, HOLD = (f"/{SERVICE}/{m}" for m in ("Reply", "Stream", "Hold"))
LIMIT = 64 * 1024  # the test server's message limit (server.max_message_bytes)


def _tensor(*shape: int, size: int = 0) -> common_pb2.Tensor:
    return common_pb2.Tensor(shape=list(shape), data=b"\x00" * size)


class RuntimeProbe(FacetService):
    """A service whose methods do what a test asks, and tell the test what they are doing.

    Reply: answers a Tensor of `shape[0]` data bytes (with a `shape[1]`: INVALID_ARGUMENT whose
    message holds `shape[1]` characters). Stream: `shape[0]` messages of `shape[1]`
    bytes each, then (when `shape[2]` is 1) waits until cancelled. Hold: waits until
    `release` is set (or cancelled), then answers an empty Tensor.
    """

    name = "test"

    def __init__(self) -> None:
        self.entered = asyncio.Event()  # a Hold or Stream call is running on the server
        self.release = asyncio.Event()
        self.loading = asyncio.Event()  # start() runs: the port is bound
        self.may_finish_loading = asyncio.Event()
        self.may_finish_loading.set()
        self.streams_closed = 0  # stream generators that ran their cleanup

    @property
    def service_name(self) -> str:
        return SERVICE

    def register(self, server: grpc.aio.Server) -> None:
        handlers = {
            "Reply": grpc.unary_unary_rpc_method_handler(self.reply, common_pb2.Tensor.FromString, common_pb2.Tensor.SerializeToString),
            "Stream": grpc.unary_stream_rpc_method_handler(self.stream, common_pb2.Tensor.FromString, common_pb2.Tensor.SerializeToString),
            "Hold": grpc.unary_unary_rpc_method_handler(self.hold, common_pb2.Tensor.FromString, common_pb2.Tensor.SerializeToString),
        }
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])

    async def start(self) -> None:
        self.loading.set()
        await self.may_finish_loading.wait()

    async def reply(self, request: common_pb2.Tensor, context: grpc.aio.ServicerContext) -> common_pb2.Tensor:
        if len(request.shape) > 1:  # a refusal whose message echoes shape[1] characters of input
            raise InvalidArgument("unknown name " + "n" * request.shape[1])
        return _tensor(size=request.shape[0])

    async def stream(self, request: common_pb2.Tensor, context: grpc.aio.ServicerContext) -> AsyncIterator[common_pb2.Tensor]:
        try:
            for step in range(request.shape[0]):
                yield _tensor(step, size=request.shape[1])
            if len(request.shape) > 2 and request.shape[2]:
                self.entered.set()
                await asyncio.Event().wait()
        finally:
            self.streams_closed += 1

    async def hold(self, request: common_pb2.Tensor, context: grpc.aio.ServicerContext) -> common_pb2.Tensor:
        self.entered.set()
        await self.release.wait()
        return _tensor()


def _count(name: str, method: str, **labels: str) -> float:
    return METRICS.registry.get_sample_value(name, {"method": method, **labels}) or 0.0


async def _until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Poll `condition` on the event loop until it holds; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def probe() -> AsyncIterator[tuple[RuntimeProbe, Callable[..., Awaitable[RunningServer]]]]:
    """(service, start): start(**server_config) -> a RunningServer of the probe on port 0."""
    service = RuntimeProbe()
    running: list[RunningServer] = []

    async def start(api_key: str = "", **server: object) -> RunningServer:
        config = FacetConfig(api_key=api_key, server=ServerConfig(**{"port": 0, **server}))  # type: ignore[arg-type]
        running.append(await start_server(service, config))
        return running[-1]

    yield service, start
    for server in running:
        await server.server.stop(0)


def _channel(server: RunningServer) -> grpc.aio.Channel:
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1), ("grpc.enable_retries", 0)]
    return grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=options)


def _unary(channel: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable:
    return channel.unary_unary(method, common_pb2.Tensor.SerializeToString, common_pb2.Tensor.FromString)


def _stream(channel: grpc.aio.Channel, method: str) -> grpc.aio.UnaryStreamMultiCallable:
    return channel.unary_stream(method, common_pb2.Tensor.SerializeToString, common_pb2.Tensor.FromString)


@pytest.fixture
def rpc_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO)
    yield caplog


def _codes_logged(caplog: pytest.LogCaptureFixture, method: str) -> list[str | None]:
    return [getattr(r, "fields", {}).get("code") for r in caplog.records if getattr(r, "fields", {}).get("method") == method]


# -- item 13: replies above the message limit are errors, counted as errors ---------------------


async def test_a_reply_over_the_message_limit_is_resource_exhausted_counted_and_logged(probe, rpc_log) -> None:  # type: ignore[no-untyped-def]
    service, start = probe
    server = await start(max_message_bytes=LIMIT)
    before = _count("facet_requests_total", REPLY, code="RESOURCE_EXHAUSTED")
    async with _channel(server) as channel:
        fits = LIMIT - 4  # + the data field's tag (1 byte) and length (3 bytes): exactly the limit
        assert len((await _unary(channel, REPLY)(_tensor(fits))).data) == fits
        for size in (LIMIT + 1, 4 * LIMIT):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _unary(channel, REPLY)(_tensor(size))
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            details = info.value.details() or ""
            assert f"{LIMIT:,} bytes" in details and "server.max_message_bytes" in details and "top_k" in details
            assert dict(info.value.trailing_metadata() or ()).get(REQUEST_ID_METADATA)
    assert _count("facet_requests_total", REPLY, code="RESOURCE_EXHAUSTED") - before == 2
    assert _codes_logged(rpc_log, REPLY).count("RESOURCE_EXHAUSTED") == 2
    # the operator reads why in the log line: the status message, cut to LOGGED_MESSAGE_CHARS
    messages = [getattr(r, "fields", {}).get("message") for r in rpc_log.records if getattr(r, "fields", {}).get("code") == "RESOURCE_EXHAUSTED"]
    assert len(messages) == 2 and all(m and "server.max_message_bytes" in m and len(m) <= LOGGED_MESSAGE_CHARS for m in messages)
    assert all("message" not in getattr(r, "fields", {}) for r in rpc_log.records if getattr(r, "fields", {}).get("code") == "OK")


async def test_each_message_of_a_stream_is_sized(probe, rpc_log) -> None:  # type: ignore[no-untyped-def]
    service, start = probe
    server = await start(max_message_bytes=LIMIT)
    async with _channel(server) as channel:
        ok = [m async for m in _stream(channel, STREAM)(_tensor(3, LIMIT // 2))]
        assert len(ok) == 3
        received = []
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for message in _stream(channel, STREAM)(_tensor(3, 2 * LIMIT)):
                received.append(message)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and not received
    assert _codes_logged(rpc_log, STREAM) == ["OK", "RESOURCE_EXHAUSTED"]
    await _until(lambda: service.streams_closed == 2)


# -- item 14: unauthenticated calls are refused before their request is read --------------------


async def test_an_unauthenticated_large_request_is_refused_without_being_parsed(probe) -> None:  # type: ignore[no-untyped-def]
    service, start = probe
    server = await start(api_key="s3cret")
    big = _tensor(1, size=60 * 1024 * 1024)  # 60 MB, under the 64 MiB message limit
    parsed_before = _count("facet_decoded_requests_total", REPLY)
    streams_parsed_before = _count("facet_decoded_requests_total", STREAM)
    async with _channel(server) as channel:
        for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", "s3cret"),)):
            for method in (REPLY, STREAM):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    call = _unary(channel, method)(big, metadata=metadata) if method == REPLY else _stream(channel, method)(big, metadata=metadata)
                    if method == REPLY:
                        await call
                    else:
                        [m async for m in call]
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert info.value.details() == UNAUTHENTICATED_MESSAGE
        assert _count("facet_decoded_requests_total", REPLY) == parsed_before, "an unauthenticated request was parsed"
        assert _count("facet_decoded_requests_total", STREAM) == streams_parsed_before
        assert _count("facet_requests_total", REPLY, code="UNAUTHENTICATED") >= 3
        reply = await _unary(channel, REPLY)(_tensor(5), metadata=(("authorization", "Bearer s3cret"),))
        assert len(reply.data) == 5
    assert _count("facet_decoded_requests_total", REPLY) == parsed_before + 1  # the counter does count


# -- item 21: cancelled calls log no errors ------------------------------------------------------


async def test_cancelled_streams_and_calls_log_no_errors(probe, rpc_log) -> None:  # type: ignore[no-untyped-def]
    service, start = probe
    server = await start()
    cancelled_before = _count("facet_requests_total", STREAM, code="CANCELLED")
    rounds = 15
    async with _channel(server) as channel:
        for i in range(rounds):
            # cancelled while the generator waits inside (odd) or between messages (even)
            call = _stream(channel, STREAM)(_tensor(2 if i % 2 else 1000, 1000, 1))
            await call.read()
            call.cancel()
        for _ in range(3):
            service.entered.clear()
            unary = _unary(channel, HOLD)(_tensor())
            await service.entered.wait()
            unary.cancel()
        await _until(lambda: _count("facet_requests_total", STREAM, code="CANCELLED") - cancelled_before == rounds)
        await _until(lambda: _count("facet_requests_total", HOLD, code="CANCELLED") >= 3)
    await _until(lambda: service.streams_closed == rounds)  # closed by their own calls, not by the GC
    gc.collect()
    errors = [r for r in rpc_log.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    assert "different Context" not in rpc_log.text
    assert "OK" not in _codes_logged(rpc_log, STREAM)  # a cancelled stream is not recorded as OK


# -- items 19 and 23: start and drain ------------------------------------------------------------


async def test_calls_while_the_models_load_get_unavailable(probe) -> None:  # type: ignore[no-untyped-def]
    """Between binding its port and loading its models a server answers UNAVAILABLE (retryable),
    never a half-started service's INTERNAL."""
    service, start = probe
    service.may_finish_loading.clear()
    port = free_port()
    starting = asyncio.ensure_future(start(port=port))
    await service.loading.wait()
    options = [("grpc.enable_retries", 0)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _unary(channel, REPLY)(_tensor(1))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE and info.value.details() == STARTING_MESSAGE
        service.may_finish_loading.set()
        server = await starting
        assert server.port == port
        assert len((await _unary(channel, REPLY)(_tensor(3))).data) == 3



async def test_drain_finishes_calls_in_flight_and_refuses_new_ones(probe) -> None:  # type: ignore[no-untyped-def]
    service, start = probe
    server = await start()
    async with _channel(server) as channel:
        in_flight = asyncio.ensure_future(_unary(channel, HOLD)(_tensor()))
        await service.entered.wait()  # the server is running the call
        assert _count("facet_requests_in_flight", HOLD) == 1
        stopping = asyncio.ensure_future(server.stop(grace_period_s=60))
        await _until(lambda: server.interceptor.calls.draining)
        for method in (REPLY, HOLD):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _unary(channel, method)(_tensor(1))
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE and info.value.details() == DRAINING_MESSAGE
        assert not stopping.done() and not in_flight.done()
        service.release.set()
        assert (await in_flight).data == b""
        await asyncio.wait_for(stopping, 30)
    assert _count("facet_requests_in_flight", HOLD) == 0


async def test_calls_cut_off_by_the_grace_period_get_unavailable(probe, rpc_log) -> None:  # type: ignore[no-untyped-def]
    service, start = probe
    server = await start()
    before = _count("facet_requests_total", HOLD, code="UNAVAILABLE")
    async with _channel(server) as channel:
        held = asyncio.ensure_future(_unary(channel, HOLD)(_tensor()))
        await service.entered.wait()
        service.entered.clear()
        stream = _stream(channel, STREAM)(_tensor(1, 10, 1))
        await stream.read()
        await service.entered.wait()
        await asyncio.wait_for(server.stop(grace_period_s=0.05), 30)  # neither call ever finishes by itself
        for call in (held, stream):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call if call is held else await stream.read()
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value
            assert info.value.details() == CUT_OFF_MESSAGE
    assert _count("facet_requests_total", HOLD, code="UNAVAILABLE") - before == 1
    assert "CANCELLED" not in _codes_logged(rpc_log, HOLD) + _codes_logged(rpc_log, STREAM)
    assert not [r for r in rpc_log.records if r.levelno >= logging.ERROR]


# -- which limit fired, and messages that fit in a header ----------------------------------------


async def test_calls_past_max_concurrent_rpcs_are_refused_naming_the_key(probe) -> None:  # type: ignore[no-untyped-def]
    service, start = probe
    server = await start(max_concurrent_rpcs=2)
    async with _channel(server) as channel:
        held = [asyncio.ensure_future(_unary(channel, HOLD)(_tensor())) for _ in range(2)]
        await _until(lambda: len(server.interceptor.calls) == 2)  # both are running on the server
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _unary(channel, REPLY)(_tensor(8))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "server.max_concurrent_rpcs" in (info.value.details() or "")
        service.release.set()
        await asyncio.gather(*held)
        assert len((await _unary(channel, REPLY)(_tensor(8))).data) == 8  # a free slot serves again


async def test_a_status_message_that_echoes_long_input_is_cut_not_a_transport_error(probe) -> None:  # type: ignore[no-untyped-def]
    _service, start = probe
    server = await start()
    async with _channel(server) as channel:
        for echoed in (100, 14_000, 200_000):  # 14,000 characters used to overflow gRPC's 16 KiB header
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _unary(channel, REPLY)(_tensor(0, echoed))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, echoed
            details = info.value.details() or ""
            assert details.startswith("unknown name nnn") and len(details) <= MAX_STATUS_MESSAGE_CHARS


# -- request ids: the client's is kept only when it looks like one --------------------------------


async def test_a_client_request_id_is_kept_only_when_it_looks_like_one(probe) -> None:  # type: ignore[no-untyped-def]
    """A well-formed id comes back as sent (the SDK's 32 hex digits, or an operator's own); a
    7,000-character one, or one with spaces or line breaks, is replaced by the server's own on the
    call (it would be written into every log line of the call and sent back)."""
    _, start = probe
    server = await start(max_concurrent_rpcs=64)
    async with _channel(server) as channel:
        for given, kept in (("0123abcd" * 4, True), ("trace-42.a:b_c", True), ("x" * 7000, False), ("a b", False), (" ", False)):
            call = _unary(channel, REPLY)(common_pb2.Tensor(shape=[1]), metadata=((REQUEST_ID_METADATA, given),))
            await call
            returned = dict(await call.trailing_metadata() or ()).get(REQUEST_ID_METADATA)
            assert (returned == given) is kept and returned and len(returned) <= 128, (given[:20], returned)
