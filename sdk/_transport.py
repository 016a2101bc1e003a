"""Sending `Call`s: channels, stubs, retries, metadata, deadlines and error mapping.

Nothing here names a capability. A capability module subclasses `SyncTransport` and
`AsyncTransport` with a mixin that sets `_service` (an `sdk._call.Service`) and whose methods
build `Call`s and hand them to `_run` (unary) or `_stream` (server streaming). A client class
composes one mixin per capability; the transport finds their services in its MRO, so it takes
an address keyword for each and opens one channel per service, lazily, reused until `close()`.

Every call gets a request id (sent as `x-request-id`; the server logs under it) and one deadline
(`timeout_s`) that covers all of its attempts. A call that fails with UNAVAILABLE is sent again
when its RPC is in its service's `idempotent` set, after a pause from the client's `RetryPolicy`
(`sdk._retry`); a stream only until its first message. A reply that the call's parse function
rejects is `ProtocolError`, never the caller's InvalidArgument.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any, ClassVar, Self, TypeVar

import grpc
import grpc.aio

from sdk import _arguments as check
from sdk._call import Call, Service
from sdk._contract import API_KEY_ENV, MAX_MESSAGE_BYTES, REQUEST_ID_METADATA, default_address
from sdk._errors import FacetError, ProtocolError, ResourceExhausted, Unavailable, error_from_rpc
from sdk._retry import RetryPolicy
from sdk._tls import PemSource, channel_credentials, connection_hint

R = TypeVar("R")
C = TypeVar("C", bound=type)

DEFAULT_TIMEOUT_S = 30.0

# What a parse function raises on a reply that breaks the contract (sdk._tensors raises
# InvalidArgument; a missing field or a wrong type shows as the others).
_BAD_REPLY = (FacetError, ValueError, TypeError, KeyError, IndexError, OverflowError)


def _channel_options(max_message_bytes: int, retry: RetryPolicy) -> list[tuple[str, Any]]:
    # Retries are the SDK's own (RetryPolicy: idempotent calls only), not gRPC's service-config
    # policy, which caps attempts at 5 and cannot tell which calls are safe to repeat. gRPC's
    # transparent retries (a request that never left the client) stay on. The reconnect backoff
    # is capped at the policy's longest pause: a channel whose server went away tries again as
    # often as the SDK retries, so the first retry after a restart finds the server.
    # Each channel owns its connections (no process-wide subchannel pool): close() closes them,
    # and a reopened channel connects afresh.
    reconnect_ms = max(100, int(retry.max_backoff_s * 1000))
    return [
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.initial_reconnect_backoff_ms", min(100, reconnect_ms)),
        ("grpc.min_reconnect_backoff_ms", min(100, reconnect_ms)),
        ("grpc.max_reconnect_backoff_ms", reconnect_ms),
    ]


# The clock and the pauses between attempts; tests replace these to watch the schedule.
def _now() -> float:
    return time.monotonic()


def _pause(seconds: float) -> None:
    time.sleep(seconds)


async def _apause(seconds: float) -> None:
    await asyncio.sleep(seconds)


def _parsed(call: Call[R], response: Any, request_id: str) -> R:
    """The call's result, or ProtocolError when the reply fails the SDK's checks (a server bug,
    never the caller's InvalidArgument)."""
    try:
        return call.parse(response)
    except _BAD_REPLY as exc:
        reason = exc.message if isinstance(exc, FacetError) else f"{type(exc).__name__}: {exc}"
        raise ProtocolError(
            f"the server's reply to {call.method} failed the SDK's checks ({reason}); "
            f"this is a server bug, logged there under request id {request_id}",
            request_id=request_id,
        ) from None


# UNAVAILABLE: the service is down, starting or draining. CANCELLED reaches the SDK only from the
# server's side (a caller's own cancellation raises asyncio.CancelledError, not an RpcError):
# gRPC cancels the calls that a stopping server had accepted but never started, so such a call
# was not served either.
RETRIED_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})


class _Attempts:
    """One call's attempts: its request id, its deadline, and whether a failure is retried."""

    def __init__(self, call: Call[Any], timeout_s: float, retry: RetryPolicy, rng: random.Random, tls: bool) -> None:
        self.call = call
        self.tls = tls
        self.request_id = uuid.uuid4().hex
        self.started = _now()
        self.deadline = self.started + timeout_s
        self.retry = retry
        self.rng = rng
        self.count = 1

    def remaining_s(self) -> float:
        return max(0.001, self.deadline - _now())

    def pause_before_retry(self, error: grpc.RpcError) -> float | None:
        """Seconds to wait before the next attempt, or None: raise `error`."""
        code = error.code() if hasattr(error, "code") else None
        if code not in RETRIED_CODES or self.call.method not in self.call.service.idempotent:
            return None
        if self.count >= self.retry.max_attempts:
            return None
        pause = self.retry.pause_s(self.count, self.rng)
        now = _now()
        if now + pause - self.started > self.retry.budget_s or now + pause >= self.deadline:
            return None
        self.count += 1
        return pause

    def error(self, error: grpc.RpcError) -> FacetError:
        """The FacetError for the last attempt's failure; after retries, its message says how many."""
        facet_error = error_from_rpc(error, self.request_id)
        if isinstance(facet_error, Unavailable):
            facet_error.message += connection_hint(facet_error.message, self.tls)
        if self.count > 1:
            facet_error.message += f" (after {self.count} attempts over {_now() - self.started:.1f} s)"
            facet_error.args = (facet_error.message,)
        return facet_error


def docstrings_from(sync_methods: type) -> Callable[[C], C]:
    """Class decorator for an async mixin: each public method without a docstring takes the one
    of its sync twin in `sync_methods`, so each docstring is written once.

    Raises:
        TypeError: a public method of the decorated class has no twin in `sync_methods`.
    """

    def decorate(cls: C) -> C:
        for name, member in vars(cls).items():
            if name.startswith("_") or not callable(member):
                continue
            twin = getattr(sync_methods, name, None)
            if twin is None:
                raise TypeError(f"{cls.__name__}.{name} has no sync twin in {sync_methods.__name__}")
            if member.__doc__ is None:
                member.__doc__ = twin.__doc__
        return cls

    return decorate


class _Transport:
    """What both transports share: addresses, API key, deadlines, channel options, stubs."""

    # Set by a capability mixin; collected from the MRO into `_services` for each class.
    _service: ClassVar[Service | None] = None
    _services: ClassVar[dict[str, Service]] = {}
    # The capability a positional address belongs to (`sdk.Client("host:port")`), if any.
    _positional_capability: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        services = [vars(klass)["_service"] for klass in cls.__mro__ if vars(klass).get("_service") is not None]
        cls._services = {s.capability: s for s in services}

    def __init__(
        self,
        address: str | None = None,
        /,
        *,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        retry: RetryPolicy | None = None,
        tls: bool | None = None,
        root_certificates: PemSource | None = None,
        client_cert: PemSource | None = None,
        client_key: PemSource | None = None,
        **addresses: str | None,
    ) -> None:
        unknown = sorted(set(addresses) - set(self._services))
        if unknown:
            raise TypeError(
                f"{type(self).__name__}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
                f"it takes the addresses of {', '.join(self._services)}, and api_key, timeout_s, max_message_bytes, "
                "retry, tls, root_certificates, client_cert, client_key"
            )
        if address is not None:
            positional = self._positional_capability
            if positional is None:
                raise TypeError(
                    f"{type(self).__name__}() takes service addresses as keywords: {', '.join(self._services)}"
                )
            if addresses.get(positional) is not None:
                raise TypeError(f"{type(self).__name__}() got the {positional} address twice (positional and keyword)")
            addresses[positional] = address
        for name, value in addresses.items():
            if value is not None:
                check.text(value, name)
        self._addresses = {name: addresses.get(name) or default_address(name) for name in self._services}
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
        check.text(key, "api_key")
        if any(not 0x21 <= ord(c) <= 0x7E for c in key):
            raise check.InvalidArgument("api_key must be printable ASCII without spaces (it is sent as a header)")
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {key}"),) if key else ()
        seconds = check.timeout(timeout_s)
        if seconds is None:
            raise check.InvalidArgument("timeout_s must be a number of seconds > 0, got None")
        self.timeout_s = seconds
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise check.InvalidArgument(f"retry must be an sdk.RetryPolicy or None, got {type(retry).__name__}")
        self.retry = retry if retry is not None else RetryPolicy.from_env()
        message_bytes = check.integer(max_message_bytes, "max_message_bytes", low=1)
        self.max_message_bytes = message_bytes
        self._options = _channel_options(message_bytes, self.retry)
        self._credentials = channel_credentials(tls, root_certificates, client_cert, client_key)
        self.tls = self._credentials is not None
        self._rng = random.Random()
        self._channels: dict[str, Any] = {}
        self._stubs: dict[str, Any] = {}

    def address(self, name: str) -> str:
        """The `host:port` this client uses for a capability's service.

        Args:
            name: a capability's name in `sdk._contract.CAPABILITIES`, as the constructor's
                address keywords.
        Returns:
            The address from the constructor, else `FACET_<NAME>_ADDR`, else localhost and the
            capability's default port (where `facet up` starts it).
        Raises:
            KeyError: `name` is not a capability this client speaks; the message lists those it does.
        """
        try:
            return self._addresses[name]
        except KeyError:
            raise KeyError(f"unknown capability {name!r}; this client speaks {', '.join(self._addresses)}") from None

    def _open_channel(self, address: str) -> Any:
        raise NotImplementedError

    def _stub(self, service: Service) -> Any:
        name = service.capability
        if name not in self._stubs:
            self._channels[name] = self._open_channel(self._addresses[name])
            self._stubs[name] = service.stub(self._channels[name])
        return self._stubs[name]

    def _attempts(self, call: Call[Any], timeout_s: float | None) -> _Attempts:
        """A new call's bookkeeping: `timeout_s` checked (None: the client's) and a request id."""
        seconds = check.timeout(timeout_s)
        size = call.request.ByteSize()
        if size > self.max_message_bytes:  # gRPC would say only "Sent message larger than max"
            raise ResourceExhausted(
                f"this {call.method} request is {size:,} bytes, over the client's message limit of "
                f"{self.max_message_bytes:,} bytes (sdk.Client(max_message_bytes=...); the server's is "
                "server.max_message_bytes): split it into smaller calls"
            )
        return _Attempts(call, self.timeout_s if seconds is None else seconds, self.retry, self._rng, self.tls)

    def _send(self, attempts: _Attempts) -> Any:
        """Start one attempt; a unary call returns its response (or awaitable), a stream its
        iterator. Every attempt carries the call's request id and what is left of its deadline."""
        call = attempts.call
        method = getattr(self._stub(call.service), call.method)
        metadata = (*self._metadata, (REQUEST_ID_METADATA, attempts.request_id))
        return method(call.request, timeout=attempts.remaining_s(), metadata=metadata)


class SyncTransport(_Transport):
    """Blocking transport on `grpc` channels."""

    def _open_channel(self, address: str) -> grpc.Channel:
        if self._credentials is not None:
            return grpc.secure_channel(address, self._credentials, options=self._options)
        return grpc.insecure_channel(address, options=self._options)

    def _run(self, call: Call[R], timeout_s: float | None) -> R:
        attempts = self._attempts(call, timeout_s)
        while True:
            try:
                response = self._send(attempts)
            except grpc.RpcError as exc:
                pause = attempts.pause_before_retry(exc)
                if pause is None:
                    raise attempts.error(exc) from None
                _pause(pause)
                continue
            return _parsed(call, response, attempts.request_id)

    def _stream(self, call: Call[R], timeout_s: float | None) -> Generator[R, None, None]:
        attempts = self._attempts(call, timeout_s)
        while True:
            responses = self._send(attempts)
            received = False
            try:
                for response in responses:
                    received = True
                    yield _parsed(call, response, attempts.request_id)
                return
            except grpc.RpcError as exc:
                # retried only before the first message: after it, the consumer has seen frames
                pause = None if received else attempts.pause_before_retry(exc)
                if pause is None:
                    raise attempts.error(exc) from None
            finally:
                responses.cancel()  # the consumer stopped early: the server stops too
            _pause(pause)

    def close(self) -> None:
        """Close every channel; closing twice does nothing. The client can be used again
        afterwards: each channel reopens on its service's next call."""
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        self._stubs.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@docstrings_from(SyncTransport)
class AsyncTransport(_Transport):
    """Awaitable transport on `grpc.aio` channels, opened inside the running event loop."""

    def _open_channel(self, address: str) -> grpc.aio.Channel:
        if self._credentials is not None:
            return grpc.aio.secure_channel(address, self._credentials, options=self._options)
        return grpc.aio.insecure_channel(address, options=self._options)

    async def _run(self, call: Call[R], timeout_s: float | None) -> R:
        attempts = self._attempts(call, timeout_s)
        while True:
            try:
                response = await self._send(attempts)
            except grpc.RpcError as exc:
                pause = attempts.pause_before_retry(exc)
                if pause is None:
                    raise attempts.error(exc) from None
                await _apause(pause)
                continue
            return _parsed(call, response, attempts.request_id)

    async def _stream(self, call: Call[R], timeout_s: float | None) -> AsyncGenerator[R, None]:
        attempts = self._attempts(call, timeout_s)
        while True:
            responses = self._send(attempts)
            received = False
            try:
                async for response in responses:
                    received = True
                    yield _parsed(call, response, attempts.request_id)
                return
            except grpc.RpcError as exc:
                pause = None if received else attempts.pause_before_retry(exc)
                if pause is None:
                    raise attempts.error(exc) from None
            finally:
                responses.cancel()
            await _apause(pause)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self._stubs.clear()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()
