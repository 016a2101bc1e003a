"""The command line every service shares: python -m services.<name> [--config FILE] [--port N] ..."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from services import registry
from services.runtime.config import ConfigError, FacetConfig, load_config, replace
from services.runtime.server import FacetService, serve


def service_main(name: str, argv: list[str] | None = None) -> int:
    """Parse the shared flags, load the config and serve capability `name` until SIGTERM. Its
    servicer (the registry row's "module:Class", a FacetService) is imported after the config
    loads, so a service's heavy imports stay out of `--help` and out of a bad-config exit."""
    parser = argparse.ArgumentParser(prog=f"python -m services.{name}", description=f"Run the {name} service.")
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
        print(f"facet {name}: bad configuration: {exc}", file=sys.stderr)
        return 2
    make_service: Callable[[FacetConfig], FacetService] = registry.load(registry.get(name).servicer)
    return serve(make_service(config), config, args.port_file)
