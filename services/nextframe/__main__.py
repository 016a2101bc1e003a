"""Run the nextframe service: python -m services.nextframe [--config FILE] [--port N] [--port-file PATH]."""

from __future__ import annotations

import sys

from services.runtime.config import FacetConfig
from services.runtime.entrypoint import service_main
from services.runtime.server import FacetService


def _service(config: FacetConfig) -> FacetService:
    from services.nextframe.servicer import NextFrameService

    return NextFrameService(config)


if __name__ == "__main__":
    sys.exit(service_main("nextframe", _service))
