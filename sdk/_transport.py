"""Sending `Call`s: channels, stubs, retries, metadata, deadlines and error mapping.

Nothing here names a capability. A capability module subclasses `SyncTransport` and
`AsyncTransport` with a mixin that sets `_service` (an `sdk._call.Service`) and whose methods
build `Call`s and hand them to `_run` (unary) or `_stream` (server streaming). A client class
composes one mixin per capability; the transport finds their services in its MRO, so it takes
an address keyword for each and opens one channel per service, lazily, reused until `close()`.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any, ClassVar, Self, TypeVar

import grpc
import grpc.aio

from sdk._call import Call, Service
from sdk._contract import API_KEY_ENV, MAX_MESSAGE_BYTES, capability, default_address
from sdk._errors import error_from_rpc

R = TypeVar("R")
C = TypeVar("C", bound=type)

DEFAULT_TIMEOUT_S = 30.0

# Retries with exponential backoff on UNAVAILABLE only (a server starting, restarting or draining).
_RETRY_POLICY = {
    "maxAttempts": 5,
    "initialBackoff": "0.1s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


def _channel_options(max_message_bytes: int, service_names: list[str]) -> list[tuple[str, Any]]:
    service_config = {"methodConfig": [{"name": [{"service": s} for s in service_names], "retryPolicy": _RETRY_POLICY}]}
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.service_config", json.dumps(service_config)),
        ("grpc.enable_retries", 1),
    ]


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
        **addresses: str | None,
    ) -> None:
        unknown = sorted(set(addresses) - set(self._services))
        if unknown:
            raise TypeError(
                f"{type(self).__name__}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
                f"it takes the addresses of {', '.join(self._services)}, and api_key, timeout_s, max_message_bytes"
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
        self._addresses = {name: addresses.get(name) or default_address(name) for name in self._services}
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {key}"),) if key else ()
        self.timeout_s = timeout_s
        self._options = _channel_options(max_message_bytes, [capability(n).service_name for n in self._services])
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

    def _send(self, call: Call[Any], timeout_s: float | None) -> Any:
        """Start the RPC; a unary call returns its response (or awaitable), a stream its iterator."""
        method = getattr(self._stub(call.service), call.method)
        return method(call.request, timeout=timeout_s or self.timeout_s, metadata=self._metadata)


class SyncTransport(_Transport):
    """Blocking transport on `grpc` channels."""

    def _open_channel(self, address: str) -> grpc.Channel:
        return grpc.insecure_channel(address, options=self._options)

    def _run(self, call: Call[R], timeout_s: float | None) -> R:
        try:
            response = self._send(call, timeout_s)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        return call.parse(response)

    def _stream(self, call: Call[R], timeout_s: float | None) -> Generator[R, None, None]:
        responses = self._send(call, timeout_s)
        try:
            for response in responses:
                yield call.parse(response)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            responses.cancel()  # the consumer stopped early: the server stops too

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
        return grpc.aio.insecure_channel(address, options=self._options)

    async def _run(self, call: Call[R], timeout_s: float | None) -> R:
        try:
            response = await self._send(call, timeout_s)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        return call.parse(response)

    async def _stream(self, call: Call[R], timeout_s: float | None) -> AsyncGenerator[R, None]:
        responses = self._send(call, timeout_s)
        try:
            async for response in responses:
                yield call.parse(response)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            responses.cancel()

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self._stubs.clear()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()
