"""`facet load`: locust load tests of the running services through the SDK (issue #13, in progress)."""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog="facet load", description="load-test the services with locust through the SDK")


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    print("facet load: not available yet")
    return 2
