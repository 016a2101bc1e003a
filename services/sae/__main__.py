"""Run the sae service: python -m services.sae [--config FILE] [--port N] [--port-file PATH]."""

from __future__ import annotations

import sys

from services.runtime.config import FacetConfig
from services.runtime.entrypoint import service_main
from services.runtime.server import FacetService


def _service(config: FacetConfig) -> FacetService:
    from services.sae.servicer import SaeService

    return SaeService(config)


if __name__ == "__main__":
    sys.exit(service_main("sae", _service))
