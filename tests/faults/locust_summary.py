"""A locustfile without users, loaded beside a scenario (`-f scenario.py,tests/faults/locust_summary.py`):
when locust quits, after its users stopped, it writes every RPC's call and failure counts to the
JSON file `FACET_FAULTS_SUMMARY` names — unlike locust's CSV, which is refreshed every 2 s and
not at a SIGTERM, it counts every call:

    {"requests": {"<rpc>": [calls, failures], ...}, "errors": ["<rpc>: <error text> (<count>)", ...]}
"""

from __future__ import annotations

import json
import os
from typing import Any

from locust import events

SUMMARY = os.environ.get("FACET_FAULTS_SUMMARY", "")
_environment: list[Any] = []


@events.init.add_listener
def _keep_environment(environment: Any, **_kwargs: Any) -> None:
    _environment.append(environment)


@events.quit.add_listener
def _write_summary(**_kwargs: Any) -> None:
    if not SUMMARY or not _environment:
        return
    stats = _environment[0].runner.stats
    summary = {
        "requests": {entry.name: [entry.num_requests, entry.num_failures] for entry in stats.entries.values()},
        "errors": [f"{error.name}: {error.error} ({error.occurrences})" for error in stats.errors.values()],
    }
    with open(SUMMARY, "w", encoding="utf-8") as out:
        json.dump(summary, out)
