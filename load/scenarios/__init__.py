"""Locust scenarios, one module per capability: `load/scenarios/<capability>.py`.

A scenario module defines one `load.scenarios._user.FacetUser` subclass named
`user_class_name(<capability>)` (e.g. `RetrievalUser`) with its weighted tasks; `load/locustfile.py`
imports the module of every row of `services.registry.CAPABILITIES` that has one. This package
itself imports nothing of locust (importing locust monkey-patches the process with gevent), so
`facet load` can name the user classes without importing them.
"""

from __future__ import annotations

from pathlib import Path

SCENARIO_DIR = Path(__file__).resolve().parent
# Environment variables naming a file a scenario writes during the run (retrieval's log of
# acknowledged upserts): `facet load` checks each can be written before locust starts.
ACK_LOG_ENV = "FACET_LOAD_ACK_LOG"
OUTPUT_FILE_ENVS = (ACK_LOG_ENV,)


def user_class_name(capability: str) -> str:
    """The locust User class of a capability's scenario, e.g. "nextframe" -> "NextframeUser"."""
    return "".join(part.capitalize() for part in capability.split("_")) + "User"


def has_scenario(capability: str) -> bool:
    """Whether `load/scenarios/<capability>.py` exists."""
    return (SCENARIO_DIR / f"{capability}.py").is_file()
