"""Limits and endpoints shared by the SDK and the services (one place, both ends)."""

from __future__ import annotations

import os

# Largest message either end sends or accepts. Requests above it fail with
# RESOURCE_EXHAUSTED before any work is done.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# Port each service listens on when started by `facet up`, and where the SDK looks
# for it when neither an argument nor FACET_<SERVICE>_ADDR says otherwise.
DEFAULT_PORTS: dict[str, int] = {
    "sae": 50051,
    "nextframe": 50052,
    "retrieval": 50053,
    "rerank": 50054,
    "phenotype": 50055,
    "paraphrase": 50056,
}

# Fully qualified gRPC service names, as reported by health checks.
SERVICE_NAMES: dict[str, str] = {
    "sae": "facet.v1.Sae",
    "nextframe": "facet.v1.NextFrame",
    "retrieval": "facet.v1.Retrieval",
}

API_KEY_ENV = "FACET_API_KEY"
REQUEST_ID_METADATA = "x-request-id"


def address_env(service: str) -> str:
    """Environment variable that overrides a service's address, e.g. FACET_RETRIEVAL_ADDR."""
    return f"FACET_{service.upper()}_ADDR"


def default_address(service: str) -> str:
    """`host:port` for a service: FACET_<SERVICE>_ADDR, else the launcher's default port."""
    env = os.environ.get(address_env(service))
    if env:
        return env
    return f"localhost:{DEFAULT_PORTS[service]}"
