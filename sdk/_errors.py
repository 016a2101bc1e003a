"""Errors raised by the Facet SDK.

Every error is a `FacetError` and carries the gRPC status code, the server's
message and the request id (for finding the call in the server's logs)::

    FacetError
    ├── InvalidArgument       the request is wrong; the message names the argument and says what
    │                         to fix (also a ValueError and a TypeError, as Python's own checks)
    ├── NotFound              unknown collection, model or document
    ├── AlreadyExists         e.g. a collection created twice
    ├── FailedPrecondition    the request does not fit the current state
    ├── ResourceExhausted     overload, full queue, message too large, an API key over its
    │                         rate limit (then `retry_after_s` says when to try again)
    ├── Unavailable           the service is down, starting or draining (retried)
    ├── DeadlineExceeded      the call ran past its deadline
    ├── Cancelled             the call was cancelled
    ├── Unauthenticated       missing or wrong API key
    ├── PermissionDenied
    └── InternalError         a bug on the server; the message is generic
        └── ProtocolError     the server's reply broke the contract (e.g. NaN in a result);
                              raised by the SDK, with the call's request id

`request_id` is the id the SDK sent with the call (`x-request-id` metadata; the server logs
under it and echoes it back), so it is set for every error of a call that was sent, even one
that never reached a server. Errors raised before sending (argument checks) have none.
"""

from __future__ import annotations

import grpc

from sdk._contract import REQUEST_ID_METADATA, RETRY_AFTER_METADATA


class FacetError(Exception):
    """Base class of every error the SDK raises."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgument(FacetError, ValueError, TypeError):
    """The request is wrong. Raised by the server (INVALID_ARGUMENT) or by the SDK before
    sending (`sdk._arguments`); a ValueError and a TypeError too, so code written against
    Python's own argument errors keeps working."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(FacetError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(FacetError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(FacetError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(FacetError):
    """The server refused the call for want of capacity, or its API key is over its rate limit.

    Attributes:
        retry_after_s: seconds after which the server expects to take the call (from its
            trailing metadata `retry-after-ms`, sent with a rate-limit refusal), else None. The
            SDK does not retry RESOURCE_EXHAUSTED itself (see `sdk.RetryPolicy`): wait this long,
            or send fewer calls.
    """

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    retry_after_s: float | None = None


class Unavailable(FacetError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(FacetError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(FacetError):
    code = grpc.StatusCode.CANCELLED


class Unauthenticated(FacetError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(FacetError):
    code = grpc.StatusCode.PERMISSION_DENIED


class InternalError(FacetError):
    code = grpc.StatusCode.INTERNAL


class ProtocolError(InternalError):
    """The server answered OK with a reply that fails the SDK's checks (a non-finite number, a
    tensor whose bytes do not match its shape): a bug on the server's side, not the caller's.
    The message names the RPC and what was wrong; `request_id` finds the call in the server's log."""


_BY_CODE: dict[grpc.StatusCode, type[FacetError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Cancelled,
        Unauthenticated,
        PermissionDenied,
        InternalError,
    )
}


def error_from_rpc(error: grpc.RpcError, request_id: str | None = None) -> FacetError:
    """Translate a gRPC error (sync or aio) into the matching `FacetError` subclass.

    Args:
        error: what grpc raised.
        request_id: the id the call was sent with; the server's echo (trailing metadata
            `x-request-id`) wins when there is one.
    """
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    retry_after_s = None
    for key, value in trailing or ():
        if key == REQUEST_ID_METADATA:
            request_id = value
        elif key == RETRY_AFTER_METADATA and str(value).isdigit():
            retry_after_s = int(value) / 1000.0
    cls = _BY_CODE.get(code, FacetError)
    err = cls(details or code.name, request_id=request_id)
    if cls is FacetError:
        err.code = code
    if isinstance(err, ResourceExhausted):
        err.retry_after_s = retry_after_s
    return err
