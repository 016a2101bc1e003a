"""What the SDK and the services agree on: the capabilities, their endpoints and the shared limits.

`CAPABILITIES` is the light half of Facet's capability registry: what a client needs to reach a
service (its short name, gRPC service name and default port). The server half (servicer, config
section, default-model build, CLI commands, training entrypoint, demo) is `services.registry`,
one row per capability with the same names, checked against this table by a test.
"""

from __future__ import annotations

import dataclasses
import os

# Largest message either end sends or accepts. Requests above it fail with
# RESOURCE_EXHAUSTED before any work is done.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Capability:
    """One capability as a client sees it.

    Attributes:
        name: short name, used in addresses (`FACET_<NAME>_ADDR`), ports, config sections and
            `python -m services.<name>`, e.g. "retrieval".
        service_name: the fully qualified gRPC service, as health checks report it, e.g.
            "facet.v1.Retrieval".
        default_port: where `facet up` starts it and where the SDK looks for it on localhost.
            Its Prometheus metrics listen on `default_port + METRICS_PORT_OFFSET` under `facet up`.
    """

    name: str
    service_name: str
    default_port: int

    @property
    def address_env(self) -> str:
        """Environment variable that overrides the address, e.g. FACET_RETRIEVAL_ADDR."""
        return f"FACET_{self.name.upper()}_ADDR"

    @property
    def metrics_port(self) -> int:
        return self.default_port + METRICS_PORT_OFFSET


METRICS_PORT_OFFSET = 1000

# The capabilities that are served, in the order `facet up` starts them. Adding one: a row here
# and a row with the same name in `services.registry.CAPABILITIES`.
CAPABILITIES: tuple[Capability, ...] = (
    Capability("sae", "facet.v1.Sae", 50051),
    Capability("nextframe", "facet.v1.NextFrame", 50052),
    Capability("retrieval", "facet.v1.Retrieval", 50053),
    Capability("rerank", "facet.v1.Rerank", 50054),
    Capability("paraphrase", "facet.v1.Paraphrase", 50056),
    Capability("phenotype", "facet.v1.Phenotype", 50055),
)
BY_NAME: dict[str, Capability] = {c.name: c for c in CAPABILITIES}

API_KEY_ENV = "FACET_API_KEY"
# Deepest nesting of a JSON value (metadata, filters: dicts and lists) the SDK sends. A Struct
# nested ~33 levels deep no longer decodes (protobuf's recursion limit of 100 messages).
MAX_JSON_DEPTH = 16
REQUEST_ID_METADATA = "x-request-id"
# Trailing metadata of a call refused by its API key's rate limit: milliseconds (an integer) after
# which the server expects to take it (`sdk.ResourceExhausted.retry_after_s`).
RETRY_AFTER_METADATA = "retry-after-ms"


def capability(name: str) -> Capability:
    """The registry row of `name`. Raises KeyError naming the capabilities that exist."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown capability {name!r}; available: {', '.join(BY_NAME)}") from None


def default_address(name: str) -> str:
    """`host:port` for a capability's service: FACET_<NAME>_ADDR, else localhost and its default port."""
    row = capability(name)
    return os.environ.get(row.address_env) or f"localhost:{row.default_port}"
