"""`StepShape`: stepped concurrency for locust, e.g. 1, 2, 4, 8, 16 users per service, N s each.

The locustfile exports it only when `FACET_LOAD_SHAPE=steps` (`facet load --shape steps`): locust
runs any shape class it finds in the locustfile instead of `--users`. Configured by environment
(the locust process has no other channel from `facet load`):

- `FACET_LOAD_STEPS`: users per service at each step, comma-separated ("1,2,4,8,16,32,64");
- `FACET_LOAD_STEP_S`: seconds per step (10);
- `FACET_LOAD_SPAWN_RATE`: users started per second at a step change (100: at once).

With several services (`facet load all`) each step runs that many users of every service's
User class (locust spreads the total evenly over the classes, whose weights are equal).
"""

from __future__ import annotations

import os

from locust import LoadTestShape

from load.cli import parse_steps

STEPS_ENV = "FACET_LOAD_STEPS"
STEP_S_ENV = "FACET_LOAD_STEP_S"
SPAWN_RATE_ENV = "FACET_LOAD_SPAWN_RATE"
DEFAULT_STEPS = (1, 2, 4, 8, 16, 32, 64)
DEFAULT_STEP_S = 10.0
DEFAULT_SPAWN_RATE = 100.0


def percentile_window_s(step_s: float) -> int:
    """The window of locust's "current" percentiles for steps of `step_s` seconds: the step less
    its first 2 s (the ramp), at least 1 s. The stats history row at a step's last second then
    gives that step's p50/p99 alone (`load.slo`)."""
    return max(1, int(step_s) - 2)


class StepShape(LoadTestShape):
    """Holds each step's users for `step_s` seconds, then stops the run."""

    def __init__(self) -> None:
        super().__init__()
        self.steps = parse_steps(os.environ.get(STEPS_ENV) or ",".join(map(str, DEFAULT_STEPS)))
        self.step_s = float(os.environ.get(STEP_S_ENV) or DEFAULT_STEP_S)
        self.spawn_rate = float(os.environ.get(SPAWN_RATE_ENV) or DEFAULT_SPAWN_RATE)
        if self.step_s <= 0 or self.spawn_rate <= 0:
            raise ValueError(f"{STEP_S_ENV} and {SPAWN_RATE_ENV} must be > 0")

    def tick(self) -> tuple[int, float] | None:
        """(total users, spawn rate) for now, or None when the last step is over."""
        step = int(self.get_run_time() // self.step_s)
        if step >= len(self.steps):
            return None
        classes = len(self.runner.environment.user_classes) if self.runner is not None else 1
        return self.steps[step] * max(classes, 1), self.spawn_rate
