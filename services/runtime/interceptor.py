"""The one server interceptor: request id, auth, drain, error mapping, reply size, logging and metrics.

Kept as a single wrapper around each handler so a call pays for one layer, not five. What it
guarantees, for every method of every service (health and reflection excepted):

- An unauthenticated call (an API key is configured and the call's `authorization` metadata does
  not match) is refused with UNAUTHENTICATED *before its request is read*: the refusal handler
  never reads the request stream, so its bytes are neither parsed nor buffered beyond HTTP/2 flow
  control, whatever their size.
- A call over its API key's rate (`requests_per_s` in `server.api_keys_file`) is refused with
  RESOURCE_EXHAUSTED naming the key, before its request is read, with trailing metadata
  `retry-after-ms` (`services.runtime.api_keys`). Every authenticated call's log line and
  `facet_requests_by_key` count carry its key's name.
- While the server starts (port bound, models loading) and while it drains (SIGTERM), new calls
  get UNAVAILABLE (retryable); calls still running when the grace period ends are cut off with
  UNAVAILABLE too, never CANCELLED (`InFlightCalls`).
- A reply, or a message of a stream, larger than the server's send limit is RESOURCE_EXHAUSTED,
  counted and logged as such (it used to leave as OK and fail on the client).
- More than `server.max_concurrent_rpcs` calls at once: the next is RESOURCE_EXHAUSTED naming
  that key, refused before its request is read.
- A status message is at most `MAX_STATUS_MESSAGE_CHARS` characters: a message that echoes user
  input (a name, a value) can never outgrow gRPC's header limit and turn into a transport error.
- Each call runs in its own asyncio task (one per RPC in grpc.aio): the request id is set in that
  task's context and never reset from another one, and a stream's generator is closed in the
  call's own task when the call ends or is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc

from sdk._contract import MAX_MESSAGE_BYTES, REQUEST_ID_METADATA, RETRY_AFTER_METADATA
from services.backends import deadline
from services.runtime.api_keys import KEY_REQUESTS, ApiKey, KeyRing
from services.runtime.errors import FacetError
from services.runtime.logs import REQUEST_ID
from services.runtime.metrics import METRICS

log = logging.getLogger("facet.rpc")

# Health and reflection stay open when an API key is required, and answer while draining.
_OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# How long calls cut off at the end of the grace period get to send their UNAVAILABLE.
_CUT_OFF_WAIT_S = 5.0

UNAUTHENTICATED_MESSAGE = "missing or wrong API key: send metadata 'authorization: Bearer <key>' (sdk.Client(api_key=...))"
DRAINING_MESSAGE = "the server is shutting down and takes no new calls; retry (the SDK does) on another replica or after the restart"
STARTING_MESSAGE = "the server is starting (loading its models) and takes no calls yet; retry (the SDK does) in a moment"
CONCURRENCY_MESSAGE = (
    "the server is already serving {limit} calls at once (server.max_concurrent_rpcs): retry later, "
    "send fewer calls at a time, or add replicas"
)
RATE_LIMIT_MESSAGE = (
    "API key '{name}' is over its rate limit of {rate:g} calls/s (requests_per_s in server.api_keys_file, "
    "burst {burst:g}): retry in {retry_ms} ms (trailing metadata '" + RETRY_AFTER_METADATA + "'; the SDK's "
    "ResourceExhausted.retry_after_s), or spread the calls out"
)
# gRPC carries the status message in a header (16 KiB by default): keep it well under that.
MAX_STATUS_MESSAGE_CHARS = 2048
CUT_OFF_MESSAGE = "the server shut down before this call finished (its grace period, server.grace_period_s, ended); retry it"


LOGGED_MESSAGE_CHARS = 300  # of a refused call's status message in its log line

class _UndecodableRequest:
    """Stands in for a request whose bytes are not a valid message."""

    def __init__(self, message: str) -> None:
        self.message = message


def _safe_deserializer(deserialize: Callable[[bytes], Any] | None, method: str) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None
    decoded = METRICS.decoded_requests.labels(method)

    def run(data: bytes) -> Any:
        decoded.inc()
        try:
            return deserialize(data)
        except Exception as exc:  # noqa: BLE001 - any decode failure is the caller's input
            return _UndecodableRequest(
                f"the request to {method} is not a valid message ({type(exc).__name__}); "
                "check that every string field is valid UTF-8 and that client and server use the same protos"
            )

    return run


# A client's request id is kept when it looks like one (the SDK sends 32 hex digits); anything
# else (7,000 characters, spaces, line breaks) would be written into every log line of the call
# and sent back, so the call gets an id of the server's own instead.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _request_id(metadata: Iterable[Any] | None) -> str:
    """The call's request id: the client's `x-request-id` when it is 1-128 characters of
    A-Z a-z 0-9 . _ : -, else a new one."""
    given = _metadata_value(metadata, REQUEST_ID_METADATA)
    return given if given is not None and _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


def _metadata_value(metadata: Iterable[Any] | None, key: str) -> str | None:
    for item in metadata or ():
        if item[0] == key:  # grpc's metadata items are (key, value) tuples with .key and .value
            return str(item[1])
    return None


class InFlightCalls:
    """The calls a server has accepted and not finished, and its drain on shutdown.

    `start_drain()` makes every later call UNAVAILABLE; `wait_idle(s)` waits up to `s` seconds for
    the accepted ones to finish; `cut_off()` ends the rest with UNAVAILABLE (retryable), each in
    its own task, and waits until their statuses are sent.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self.starting = False  # set by the server from binding its port until its models are loaded
        self.draining = False
        self.cutting_off = False

    def refusal(self) -> str | None:
        """Why a new call is refused now (UNAVAILABLE), or None when calls are taken."""
        if self.draining:
            return DRAINING_MESSAGE
        if self.starting:
            return STARTING_MESSAGE
        return None

    def __len__(self) -> int:
        return len(self._tasks)

    def add(self, task: asyncio.Task[Any], method: str) -> None:
        """Track the task serving one call of `method` until it is done."""
        gauge = METRICS.in_flight.labels(method)
        gauge.inc()
        self._tasks.add(task)

        def done(finished: asyncio.Task[Any]) -> None:
            self._tasks.discard(finished)
            gauge.dec()

        task.add_done_callback(done)

    def start_drain(self) -> None:
        """Refuse new calls from now on (UNAVAILABLE)."""
        self.draining = True

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the accepted calls to finish; True when none is left."""
        pending = set(self._tasks)
        if pending and timeout_s > 0:
            _done, pending = await asyncio.wait(pending, timeout=timeout_s)
        return not pending

    async def cut_off(self) -> int:
        """End every call still running with UNAVAILABLE; return how many there were."""
        self.cutting_off = True
        pending = set(self._tasks)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=_CUT_OFF_WAIT_S)
        return len(pending)


class FacetInterceptor(grpc.aio.ServerInterceptor):
    """The one interceptor of every Facet server (what it guarantees: the module docstring).

    Args:
        api_key: when not empty, every call but health and reflection needs metadata
            `authorization: Bearer <api_key>` (ignored when `keys` is given).
        max_reply_bytes: the server's send limit (`grpc.max_send_message_length`, from
            `server.max_message_bytes`); a larger reply or stream message is RESOURCE_EXHAUSTED.
        max_concurrent_rpcs: calls served at once (`server.max_concurrent_rpcs`); one more is
            RESOURCE_EXHAUSTED naming the key. None: no limit here.
        keys: the accepted API keys and their rate limits (`KeyRing.from_config`); None: only
            `api_key`.
    """

    def __init__(
        self,
        api_key: str = "",
        max_reply_bytes: int = MAX_MESSAGE_BYTES,
        max_concurrent_rpcs: int | None = None,
        keys: KeyRing | None = None,
    ) -> None:
        self.keys = keys if keys is not None else KeyRing.from_config(api_key)
        self.max_reply_bytes = max_reply_bytes
        self.max_concurrent_rpcs = max_concurrent_rpcs
        self.calls = InFlightCalls()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(_OPEN_PREFIXES):
            return handler
        metadata = handler_call_details.invocation_metadata
        if (why := self.calls.refusal()) is not None:
            return self._refusal(method, metadata, grpc.StatusCode.UNAVAILABLE, why)
        key: str | None = None  # the caller's key name, when keys are required
        if self.keys.required:
            found = self.keys.identify(_metadata_value(metadata, "authorization"))
            if found is None:
                return self._refusal(method, metadata, grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
            key = found.name
            wait_s = self.keys.admit(found)
            if wait_s > 0:
                return self._rate_limited(method, metadata, found, wait_s)
        if self.max_concurrent_rpcs is not None and len(self.calls) >= self.max_concurrent_rpcs:
            message = CONCURRENCY_MESSAGE.format(limit=self.max_concurrent_rpcs)
            return self._refusal(method, metadata, grpc.StatusCode.RESOURCE_EXHAUSTED, message, key)
        deserialize = _safe_deserializer(handler.request_deserializer, method)
        # the wrappers serialize replies themselves (to size them), so grpc gets bytes
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, handler.unary_unary, handler.response_serializer, key), deserialize, None
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, handler.unary_stream, handler.response_serializer, key), deserialize, None
            )
        return handler  # client-streaming methods: none yet

    def _rate_limited(self, method: str, metadata: Iterable[Any] | None, key: ApiKey, wait_s: float) -> grpc.RpcMethodHandler:
        retry_ms = max(1, math.ceil(wait_s * 1000))
        message = RATE_LIMIT_MESSAGE.format(name=key.name, rate=key.requests_per_s, burst=key.burst, retry_ms=retry_ms)
        trailing = ((RETRY_AFTER_METADATA, str(retry_ms)),)
        return self._refusal(method, metadata, grpc.StatusCode.RESOURCE_EXHAUSTED, message, key.name, trailing)

    def _refusal(
        self,
        method: str,
        metadata: Iterable[Any] | None,
        code: grpc.StatusCode,
        message: str,
        key: str | None = None,
        trailing: tuple[tuple[str, str], ...] = (),
    ) -> grpc.RpcMethodHandler:
        """A handler that refuses the call without reading its request. Registered as
        client-streaming (the wire format of every call type is the same) so that grpc hands it
        the request stream unread instead of receiving and parsing the whole message first."""
        request_id = _request_id(metadata)

        async def refuse(_requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
            REQUEST_ID.set(request_id)  # this call's own task: never reset
            context.set_trailing_metadata(((REQUEST_ID_METADATA, request_id), *trailing))
            self._finish(method, code, time.perf_counter(), key, message)
            await context.abort(code, message)

        return grpc.stream_unary_rpc_method_handler(refuse, None, None)

    def _begin(self, request: Any, context: grpc.aio.ServicerContext, method: str) -> None:
        """Tag the call with a request id, refuse it if the server drains or it is undecodable,
        else track it as in flight."""
        request_id = _request_id(context.invocation_metadata())
        REQUEST_ID.set(request_id)  # the call's own task and context (one per RPC): no reset needed
        deadline.enter_call(context.time_remaining())  # what the batcher admits work against
        context.set_trailing_metadata(((REQUEST_ID_METADATA, request_id),))
        if self.calls.draining:  # accepted before the drain, its handler starts after: nothing done yet
            raise _Reject(grpc.StatusCode.UNAVAILABLE, DRAINING_MESSAGE)
        if isinstance(request, _UndecodableRequest):
            raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        task = asyncio.current_task()
        if task is not None:
            self.calls.add(task, method)

    def _serialized(self, method: str, reply: Any, serialize: Callable[[Any], bytes] | None) -> bytes:
        data: bytes = serialize(reply) if serialize is not None else reply
        if len(data) > self.max_reply_bytes:
            raise _Reject(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the reply to {method} would be {len(data):,} bytes, over the server's message limit of "
                f"{self.max_reply_bytes:,} bytes (server.max_message_bytes): ask for less in one call "
                "(fewer rows, texts or frames, a smaller top_k) and split the work over several calls",
            )
        return data

    def _status_of(self, exc: Exception, method: str) -> tuple[grpc.StatusCode, str]:
        if isinstance(exc, (_Reject, FacetError)):
            return exc.code, bounded_message(exc.message)
        log.error("unhandled error in %s", method, exc_info=exc)
        return grpc.StatusCode.INTERNAL, f"internal error; the server logged it under request id {REQUEST_ID.get()}"

    def _finish(self, method: str, code: grpc.StatusCode, start: float, key: str | None = None, message: str | None = None) -> None:
        """Count the call and log it: one line per call, with the status message of a refused one
        (cut to `LOGGED_MESSAGE_CHARS`), so an operator sees why a client was refused."""
        elapsed = time.perf_counter() - start
        METRICS.requests.labels(method, code.name).inc()
        METRICS.latency.labels(method).observe(elapsed)
        if key is not None:
            KEY_REQUESTS.labels(key, code.name).inc()
        level = logging.INFO if code == grpc.StatusCode.OK else logging.WARNING
        if log.isEnabledFor(level):
            fields: dict[str, Any] = {"method": method, "code": code.name, "latency_ms": round(elapsed * 1e3, 3)}
            if key is not None:
                fields["key"] = key
            if message:
                fields["message"] = bounded_message(message, LOGGED_MESSAGE_CHARS)
            log.log(level, "rpc", extra={"fields": fields})

    @contextlib.asynccontextmanager
    async def _scope(self, method: str, request: Any, context: grpc.aio.ServicerContext, key: str | None) -> AsyncIterator[None]:
        """Around one call: begin (id, drain, decode check), map errors to statuses, and record the
        outcome (metrics, log) before the client can learn it: `abort` sends the status at once."""
        start = time.perf_counter()
        try:
            self._begin(request, context, method)
            yield
        except asyncio.CancelledError:
            if not self.calls.cutting_off:
                self._finish(method, _cancel_code(context), start, key)
                raise
            self._finish(method, grpc.StatusCode.UNAVAILABLE, start, key, CUT_OFF_MESSAGE)
            await context.abort(grpc.StatusCode.UNAVAILABLE, CUT_OFF_MESSAGE)
        except grpc.aio.AbortError:  # the servicer aborted the call itself
            self._finish(method, context.code() or grpc.StatusCode.UNKNOWN, start, key, context.details() or None)
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to a status, never a stack trace
            code, message = self._status_of(exc, method)
            self._finish(method, code, start, key, message)
            await context.abort(code, message)  # raises AbortError
        else:
            self._finish(method, grpc.StatusCode.OK, start, key)

    def _wrap_unary(
        self, method: str, behavior: Callable[..., Awaitable[Any]], serialize: Callable[[Any], bytes] | None, key: str | None
    ) -> Callable[..., Awaitable[bytes]]:
        async def run(request: Any, context: grpc.aio.ServicerContext) -> bytes:
            async with self._scope(method, request, context, key):
                return self._serialized(method, await behavior(request, context), serialize)
            raise AssertionError("unreachable: the scope re-raises or aborts")  # pragma: no cover

        return run

    def _wrap_stream(
        self,
        method: str,
        behavior: Callable[..., AsyncGenerator[Any, None]],
        serialize: Callable[[Any], bytes] | None,
        key: str | None,
    ) -> Callable[..., Awaitable[None]]:
        # A coroutine that writes, not an async generator: grpc would leave a cancelled call's
        # generator suspended and close it later from another task (and context).
        async def run(request: Any, context: grpc.aio.ServicerContext) -> None:
            messages = METRICS.stream_messages.labels(method)
            async with self._scope(method, request, context, key):
                stream = behavior(request, context)
                try:
                    async for item in stream:
                        await context.write(self._serialized(method, item, serialize))
                        messages.inc()
                finally:
                    await stream.aclose()

        return run


def bounded_message(message: str, limit: int = MAX_STATUS_MESSAGE_CHARS) -> str:
    """`message`, cut to `limit` (>= 80) characters (the cut is marked)."""
    if len(message) <= limit:
        return message
    return message[: limit - 40] + f" ... [{len(message):,} characters, cut]"


class _Reject(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _cancel_code(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED
