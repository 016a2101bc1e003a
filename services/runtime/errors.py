"""The one error taxonomy. Service and logic code raise these; the interceptor maps
them to gRPC status codes, and the SDK maps the codes back to the same classes."""

from sdk._errors import (
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FacetError,
    FailedPrecondition,
    InternalError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

__all__ = [
    "AlreadyExists",
    "Cancelled",
    "DeadlineExceeded",
    "FacetError",
    "FailedPrecondition",
    "InternalError",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
]
