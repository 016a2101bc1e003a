"""Locust entry point: one User class per capability with a scenario, through the SDK.

    locust -f load/locustfile.py --host localhost                      # locust's web UI
    locust -f load/locustfile.py --headless -u 8 -r 8 -t 30s RetrievalUser
    facet load retrieval --users 8 --run-time 30s                      # the same, with defaults

The User classes come from `load/scenarios/<capability>.py` for every row of
`services.registry.CAPABILITIES` that has one (`FACET_LOAD_SERVICES=a,b` keeps only those);
`FACET_LOAD_SHAPE=steps` adds `load.shape.StepShape`. Service addresses: `FACET_<NAME>_ADDR`,
else `--host` at the capability's default port. Runs under gevent: nothing here may import
torch or ray, and gRPC is switched to gevent before any channel exists.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import grpc.experimental.gevent as grpc_gevent
import locust.stats
from locust import events  # importing locust monkey-patches the process with gevent

grpc_gevent.init_gevent()  # before the SDK makes a channel
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from load.scenarios import has_scenario, user_class_name  # noqa: E402
from load.scenarios._user import FacetUser, forget_shared, take_in_flight_at_stop  # noqa: E402
from services import registry  # noqa: E402 - the light half: names only

SERVICES_ENV = "FACET_LOAD_SERVICES"
SHAPE_ENV = "FACET_LOAD_SHAPE"


def user_classes(selected: str | None = None) -> dict[str, type[FacetUser]]:
    """The scenarios' User classes by class name, in registry order.

    Args:
        selected: comma-separated capability names; None or "" for every capability with a scenario.
    Returns:
        {"RetrievalUser": RetrievalUser, ...}.
    Raises:
        KeyError: a selected capability that is not in the registry.
        ImportError: a scenario module without its `user_class_name` class.
    """
    wanted = [name.strip() for name in (selected or "").split(",") if name.strip()]
    for name in wanted:
        registry.get(name)
    classes: dict[str, type[FacetUser]] = {}
    for row in registry.CAPABILITIES:
        if not has_scenario(row.name) or (wanted and row.name not in wanted):
            continue
        module = importlib.import_module(f"load.scenarios.{row.name}")
        cls = getattr(module, user_class_name(row.name), None)
        if not (isinstance(cls, type) and issubclass(cls, FacetUser)):
            raise ImportError(f"load/scenarios/{row.name}.py defines no FacetUser class {user_class_name(row.name)}")
        classes[cls.__name__] = cls
    return classes


globals().update(user_classes(os.environ.get(SERVICES_ENV)))
if os.environ.get(SHAPE_ENV) == "steps":
    from load.shape import StepShape, percentile_window_s

    # the stats history's "current" percentiles then cover one step (less its first seconds)
    locust.stats.CURRENT_RESPONSE_TIME_PERCENTILE_WINDOW = percentile_window_s(StepShape().step_s)


@events.test_stop.add_listener
def _after_run(environment: Any, **_: Any) -> None:
    for cls in environment.user_classes:
        if isinstance(cls, type) and issubclass(cls, FacetUser):
            cls.after_run(environment.host)
    forget_shared()
    options = getattr(environment, "parsed_options", None)
    if environment.stats.total.num_requests == 0 and getattr(options, "headless", False):
        # locust counts completed calls only: a service that accepts connections and never
        # answers would otherwise end a run without a failure, exit status 0
        print(
            "load: no call completed during the run (each was still waiting when it stopped: a service that "
            "accepts connections but does not answer, or a run too short for the first calls); not a pass",
            file=sys.stderr,
        )
        environment.process_exit_code = 1
    waits = take_in_flight_at_stop()
    if waits:  # normal at the end of a closed-loop run (up to one per user); long waits are not
        print(
            f"load: {len(waits)} call(s) in flight when the run stopped are not in the stats "
            f"(the longest had waited {max(waits):.1f} s)",
            file=sys.stderr,
        )
