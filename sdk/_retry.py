"""When the SDK retries a call: `RetryPolicy`, and the environment variables that set it.

A call is retried only when all of these hold:

- it failed with UNAVAILABLE (the service is down, restarting, starting or draining: the
  request was not served), or with a CANCELLED the server sent (gRPC cancels the calls a
  stopping server accepted but never started; a caller's own cancellation is
  `asyncio.CancelledError`, never retried). No other status is retried: INVALID_ARGUMENT,
  INTERNAL, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, ... come back at once;
- its RPC is idempotent: sending it twice leaves the same state as sending it once (each
  capability lists its idempotent RPCs in its `Service`; reads, Embed, Upsert and delete of
  documents by id, simulations and predictions are; CreateCollection and DeleteCollection are
  not: a retry after a lost reply would say AlreadyExists / NotFound). A server stream (Rollout)
  is retried only until its first message arrives, never after;
- the retry starts within `budget_s` of the call's first attempt, and before the call's deadline
  (`timeout_s`, which covers every attempt and every pause between them).

Pauses grow exponentially from `initial_backoff_s` by `multiplier` up to `max_backoff_s`, each
scaled by a random factor in [1 - jitter, 1 + jitter] so that many clients do not retry in step.
The defaults ride out a restart of about 10 s: 0.1, 0.2, 0.4, 0.8, then 1 s pauses.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
from collections.abc import Iterator, Mapping

from sdk._errors import InvalidArgument

# Environment variables read by `RetryPolicy.from_env` (and so by every Client built without
# `retry=`), one per field.
RETRY_ENV = {
    "budget_s": "FACET_RETRY_BUDGET_S",
    "initial_backoff_s": "FACET_RETRY_INITIAL_BACKOFF_S",
    "max_backoff_s": "FACET_RETRY_MAX_BACKOFF_S",
    "multiplier": "FACET_RETRY_MULTIPLIER",
    "jitter": "FACET_RETRY_JITTER",
    "max_attempts": "FACET_RETRY_MAX_ATTEMPTS",
}


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How a client retries calls that failed with UNAVAILABLE (idempotent calls only).

    `sdk.Client(retry=sdk.RetryPolicy(budget_s=30))`; `sdk.RetryPolicy(max_attempts=1)` turns
    retries off. Without `retry=`, a client takes `RetryPolicy.from_env()`: these defaults,
    each overridden by its `FACET_RETRY_*` environment variable.

    Attributes:
        budget_s: seconds after the first attempt within which a retry may start (default 10:
            a typical service restart). The call's deadline (`timeout_s`) caps it too.
        initial_backoff_s: pause before the first retry, in seconds.
        max_backoff_s: longest pause between attempts, in seconds.
        multiplier: each pause is the previous one times this (>= 1).
        jitter: each pause is scaled by a random factor in [1 - jitter, 1 + jitter]; 0 to 1.
        max_attempts: attempts at most, the first included (1: no retries).
    """

    budget_s: float = 10.0
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 1.0
    multiplier: float = 2.0
    jitter: float = 0.2
    max_attempts: int = 100

    def __post_init__(self) -> None:
        for name in ("budget_s", "initial_backoff_s", "max_backoff_s", "multiplier", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidArgument(f"RetryPolicy.{name} must be a finite number, got {value!r}")
        if self.budget_s < 0 or self.initial_backoff_s < 0:
            raise InvalidArgument(
                f"RetryPolicy.budget_s and initial_backoff_s must be >= 0, got {self.budget_s}, {self.initial_backoff_s}"
            )
        if self.max_backoff_s < self.initial_backoff_s:
            raise InvalidArgument(
                f"RetryPolicy.max_backoff_s must be >= initial_backoff_s ({self.initial_backoff_s}), got {self.max_backoff_s}"
            )
        if self.multiplier < 1:
            raise InvalidArgument(f"RetryPolicy.multiplier must be >= 1, got {self.multiplier}")
        if not 0 <= self.jitter <= 1:
            raise InvalidArgument(f"RetryPolicy.jitter must be between 0 and 1, got {self.jitter}")
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise InvalidArgument(f"RetryPolicy.max_attempts must be an integer >= 1, got {self.max_attempts!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RetryPolicy:
        """The defaults, each overridden by its environment variable when set: FACET_RETRY_BUDGET_S,
        FACET_RETRY_INITIAL_BACKOFF_S, FACET_RETRY_MAX_BACKOFF_S, FACET_RETRY_MULTIPLIER,
        FACET_RETRY_JITTER, FACET_RETRY_MAX_ATTEMPTS.

        Args:
            environ: where to read them; None reads `os.environ`.
        Returns:
            The policy.
        Raises:
            InvalidArgument: a variable that is not a number (the message names it), or a
                value out of range.
        """
        env = os.environ if environ is None else environ
        values: dict[str, float | int] = {}
        for field, variable in RETRY_ENV.items():
            raw = env.get(variable, "").strip()
            if not raw:
                continue
            try:
                values[field] = int(raw) if field == "max_attempts" else float(raw)
            except ValueError:
                kind = "an integer" if field == "max_attempts" else "a number"
                raise InvalidArgument(f"{variable} must be {kind}, got {raw!r}") from None
        return cls(**values)  # type: ignore[arg-type]

    def backoffs_s(self) -> Iterator[float]:
        """The pauses before retries 1, 2, 3, ... without jitter.

        Returns:
            An endless iterator of seconds: initial_backoff_s, times multiplier each time, capped
            at max_backoff_s.
        """
        pause = self.initial_backoff_s
        while True:
            yield min(pause, self.max_backoff_s)
            pause = min(pause * self.multiplier, self.max_backoff_s)

    def pause_s(self, retry: int, rng: random.Random | None = None) -> float:
        """The pause before one retry, jitter applied.

        Args:
            retry: which retry, 1 for the first.
            rng: the random source of the jitter; None uses the `random` module's.
        Returns:
            Seconds: the retry's entry of `backoffs_s()` times a factor in [1 - jitter, 1 + jitter].
        """
        base = min(self.initial_backoff_s, self.max_backoff_s)
        for _ in range(retry - 1):
            if base >= self.max_backoff_s:
                break
            base = min(base * self.multiplier, self.max_backoff_s)
        factor = 1.0 + self.jitter * (2.0 * (rng or random).random() - 1.0)
        return base * factor
