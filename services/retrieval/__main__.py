"""Run the retrieval service: python -m services.retrieval [--config FILE] [--port N] [--port-file PATH]."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from services.runtime.config import ConfigError, load_config, replace
from services.runtime.server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.retrieval", description=__doc__)
    parser.add_argument("--config", help="TOML config file (else FACET_CONFIG)")
    parser.add_argument("--port", type=int, help="gRPC port (0: any free port)")
    parser.add_argument("--metrics-port", type=int, help="/metrics port (0: any free port, -1: off)")
    parser.add_argument("--port-file", type=Path, help="write the bound ports here as JSON once serving")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        server = {k: v for k, v in (("port", args.port), ("metrics_port", args.metrics_port)) if v is not None}
        if server:
            config = replace(config, server=server)
    except ConfigError as exc:
        print(f"facet retrieval: bad configuration: {exc}", file=sys.stderr)
        return 2
    from services.retrieval.servicer import RetrievalService

    return serve(RetrievalService(config), config, args.port_file)


if __name__ == "__main__":
    sys.exit(main())
