"""The RPC being served, as code below the servicer sees it: its deadline, and its identity.

The interceptor opens one `CallScope` per call, from the gRPC context::

    deadline.enter_call(context.time_remaining())   # seconds left, None when the call has no deadline

Each gRPC call runs in its own asyncio task, and the tasks a servicer starts for it (for example
with `asyncio.gather`) copy that task's context, so every `backend.infer` made for the call sees
the same scope, and nothing needs resetting when the call ends. The dynamic batcher reads it to
refuse at once the work that cannot finish before the deadline, and to queue the work of one call
as one flow (`services.backends.fair_queue`). Code that runs outside any call (a warm-up, a unit
test) sees no scope: no deadline, one flow per request.
"""

from __future__ import annotations

import contextvars
import math
import time


class CallScope:
    """One RPC: its deadline and its identity (the object itself, compared by `is`).

    Args:
        deadline: the call's deadline on the `time.monotonic()` clock, in seconds; None when the
            client set none.
    """

    __slots__ = ("deadline", "__weakref__")

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline

    def remaining_s(self, now: float | None = None) -> float | None:
        """Seconds left before the deadline (negative once past it); None without a deadline."""
        if self.deadline is None:
            return None
        return self.deadline - (time.monotonic() if now is None else now)

    def __repr__(self) -> str:
        remaining = self.remaining_s()
        return f"CallScope(remaining_s={'none' if remaining is None else f'{remaining:.3f}'})"


_CURRENT: contextvars.ContextVar[CallScope | None] = contextvars.ContextVar("facet_call_scope", default=None)


def enter_call(time_remaining_s: float | None) -> CallScope:
    """Open the scope of the call this task serves (the interceptor's one line per call).

    Args:
        time_remaining_s: `grpc.aio.ServicerContext.time_remaining()`: seconds until the
            call's deadline, None when it has none.
    Returns:
        The new scope, current in this task's context from now on (and in tasks it starts).
    """
    deadline = None
    if time_remaining_s is not None and math.isfinite(time_remaining_s):
        deadline = time.monotonic() + time_remaining_s
    scope = CallScope(deadline)
    _CURRENT.set(scope)
    return scope


def current_call() -> CallScope | None:
    """The scope of the call being served in this context; None outside any call."""
    return _CURRENT.get()
