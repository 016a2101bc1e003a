"""`facet check`: health and one SDK call per service (issue #13, in progress)."""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog="facet check", description="check each service's health and make one SDK call")


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    print("facet check: not available yet")
    return 2
