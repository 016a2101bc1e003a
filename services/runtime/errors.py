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

SHOWN_CHARS = 80  # of a request's value quoted in an error message


class EngineLost(Exception):
    """The service's inference engine (a Ray cluster) has been unreachable longer than it may be:
    the service cannot recover in this process, so it drains and exits 1 ("stopped with an
    error: ..."), and its supervisor (`facet up`, Kubernetes) starts it again, which waits for
    the engine and loads the models on it. Raised by `FacetService.healthy()`; never a status."""


def shown(value: str) -> str:
    """A value from a request as an error message quotes it: at most SHOWN_CHARS characters and
    the full length after a cut (messages stay readable; the interceptor caps every status
    message anyway, `MAX_STATUS_MESSAGE_CHARS`)."""
    return value if len(value) <= SHOWN_CHARS else f"{value[:SHOWN_CHARS]}… ({len(value)} characters)"


__all__ = [
    "AlreadyExists",
    "Cancelled",
    "DeadlineExceeded",
    "EngineLost",
    "FacetError",
    "FailedPrecondition",
    "InternalError",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "SHOWN_CHARS",
    "Unavailable",
    "shown",
]
