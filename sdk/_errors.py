"""Errors raised by the Facet SDK.

Every error is a `FacetError` and carries the gRPC status code, the server's
message and the request id (for finding the call in the server's logs)::

    FacetError
    ├── InvalidArgument       the request is wrong; the message says what to fix
    ├── NotFound              unknown collection, model or document
    ├── AlreadyExists         e.g. a collection created twice
    ├── FailedPrecondition    the request does not fit the current state
    ├── ResourceExhausted     overload, full queue, message too large
    ├── Unavailable           the service is down, starting or draining (retried)
    ├── DeadlineExceeded      the call ran past its deadline
    ├── Cancelled             the call was cancelled
    ├── Unauthenticated       missing or wrong API key
    ├── PermissionDenied
    └── InternalError         a bug on the server; the message is generic
"""

from __future__ import annotations

import grpc


class FacetError(Exception):
    """Base class of every error the SDK raises."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgument(FacetError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(FacetError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(FacetError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(FacetError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(FacetError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


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


def error_from_rpc(error: grpc.RpcError) -> FacetError:
    """Translate a gRPC error (sync or aio) into the matching `FacetError` subclass."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    request_id = None
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailing or ():
        if key == "x-request-id":
            request_id = value
    cls = _BY_CODE.get(code, FacetError)
    err = cls(details or code.name, request_id=request_id)
    if cls is FacetError:
        err.code = code
    return err
