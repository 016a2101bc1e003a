"""The one server interceptor: request id, auth, error mapping, logging and metrics.

Kept as a single wrapper around each handler so a call pays for one layer, not five.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from sdk._contract import REQUEST_ID_METADATA
from services.runtime.errors import FacetError
from services.runtime.logs import REQUEST_ID
from services.runtime.metrics import METRICS

log = logging.getLogger("facet.rpc")

# Health and reflection stay open when an API key is required.
_OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class _UndecodableRequest:
    """Stands in for a request whose bytes are not a valid message."""

    def __init__(self, message: str) -> None:
        self.message = message


def _safe_deserializer(deserialize: Callable[[bytes], Any] | None, method: str) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def run(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # noqa: BLE001 - any decode failure is the caller's input
            return _UndecodableRequest(
                f"the request to {method} is not a valid message ({type(exc).__name__}); "
                "check that every string field is valid UTF-8 and that client and server use the same protos"
            )

    return run


def _metadata_value(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for item in context.invocation_metadata() or ():
        if item.key == key:
            return str(item.value)
    return None


class FacetInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, api_key: str = "") -> None:
        self._expected_auth = f"Bearer {api_key}".encode() if api_key else None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(_OPEN_PREFIXES):
            return handler
        deserialize = _safe_deserializer(handler.request_deserializer, method)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, handler.unary_unary), deserialize, handler.response_serializer
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, handler.unary_stream), deserialize, handler.response_serializer
            )
        return handler  # client-streaming methods: none yet

    def _check_auth(self, context: grpc.aio.ServicerContext) -> bool:
        if self._expected_auth is None:
            return True
        given = (_metadata_value(context, "authorization") or "").encode()
        return hmac.compare_digest(given, self._expected_auth)

    def _begin(self, request: Any, context: grpc.aio.ServicerContext) -> contextvars.Token[str]:
        """Tag the call with a request id, then refuse it if unauthenticated or undecodable."""
        request_id = _metadata_value(context, REQUEST_ID_METADATA) or uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        context.set_trailing_metadata(((REQUEST_ID_METADATA, request_id),))
        if not self._check_auth(context):
            raise _Reject(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or wrong API key: send metadata 'authorization: Bearer <key>' (sdk.Client(api_key=...))",
            )
        if isinstance(request, _UndecodableRequest):
            raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        return token

    async def _fail(self, exc: BaseException, context: grpc.aio.ServicerContext, method: str) -> None:
        if isinstance(exc, _Reject):
            code, message = exc.code, exc.message
        elif isinstance(exc, FacetError):
            code, message = exc.code, exc.message
        else:
            log.error("unhandled error in %s", method, exc_info=exc)
            code = grpc.StatusCode.INTERNAL
            message = f"internal error; the server logged it under request id {REQUEST_ID.get()}"
        await context.abort(code, message)  # raises AbortError

    def _finish(self, method: str, code: grpc.StatusCode, start: float, token: contextvars.Token[str] | None) -> None:
        elapsed = time.perf_counter() - start
        METRICS.requests.labels(method, code.name).inc()
        METRICS.latency.labels(method).observe(elapsed)
        level = logging.INFO if code == grpc.StatusCode.OK else logging.WARNING
        if log.isEnabledFor(level):
            log.log(level, "rpc", extra={"fields": {"method": method, "code": code.name, "latency_ms": round(elapsed * 1e3, 3)}})
        if token is not None:
            REQUEST_ID.reset(token)

    @contextlib.asynccontextmanager
    async def _scope(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        """Around one call: begin (id, auth, decode check), map errors to statuses, record the outcome."""
        start = time.perf_counter()
        code, token = grpc.StatusCode.OK, None
        try:
            token = self._begin(request, context)
            yield
        except asyncio.CancelledError:
            code = _cancel_code(context)
            raise
        except grpc.aio.AbortError:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to a status, never a stack trace
            code = _code_of(exc)
            await self._fail(exc, context, method)
        finally:
            self._finish(method, code, start, token)

    def _wrap_unary(self, method: str, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def run(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with self._scope(method, request, context):
                return await behavior(request, context)

        return run

    def _wrap_stream(self, method: str, behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
        async def run(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with self._scope(method, request, context):
                async for item in behavior(request, context):
                    METRICS.stream_messages.labels(method).inc()
                    yield item

        return run


class _Reject(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _code_of(exc: BaseException) -> grpc.StatusCode:
    if isinstance(exc, (_Reject, FacetError)):
        return exc.code
    return grpc.StatusCode.INTERNAL


def _cancel_code(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED
