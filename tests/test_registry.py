"""One registry lists the capabilities: its client half (`sdk._contract`) and server half
(`services.registry`) agree, every reference in it resolves, and what is written outside Python —
the Dockerfile's EXPOSE, the Helm values, the `gpu` extra — agrees with it."""

from __future__ import annotations

import importlib
import inspect
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from sdk._contract import CAPABILITIES as CONTRACTS
from services import registry

ROOT = Path(__file__).resolve().parents[1]


def test_both_halves_name_the_same_capabilities_in_the_same_order() -> None:
    assert [c.name for c in CONTRACTS] == registry.names()
    ports = [c.default_port for c in CONTRACTS]
    assert len(set(ports)) == len(ports) and len({c.service_name for c in CONTRACTS}) == len(CONTRACTS)


@pytest.mark.parametrize("row", registry.CAPABILITIES, ids=registry.names())
def test_every_reference_of_a_row_resolves(row: registry.ServerCapability) -> None:
    assert registry.load(row.servicer).name == row.name
    section = registry.load(row.config)
    section()  # the defaults are valid
    for reference in (row.build_defaults, row.has_defaults, row.demo):
        assert callable(registry.load(reference)), reference
    assert list(inspect.signature(registry.load(row.build_defaults)).parameters)[:2] == ["repository", "work_dir"]
    modules = [c.module for c in row.commands] + ([row.train_module] if row.train_module else [])
    for module in modules:
        assert callable(importlib.import_module(module).main), f"{module} has no main(argv)"
    assert (ROOT / "services" / row.name / "__main__.py").is_file()
    assert (ROOT / "protos" / "facet" / "v1" / f"{row.name}.proto").is_file()


def test_an_unknown_capability_is_named_with_the_ones_that_exist() -> None:
    with pytest.raises(KeyError, match="available: sae, nextframe, retrieval"):
        registry.get("rerank-typo")


def test_dockerfile_exposes_every_capability_and_its_metrics_port() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    exposed = {int(p) for line in re.findall(r"^EXPOSE (.+)$", text, flags=re.MULTILINE) for p in line.split()}
    assert exposed == {p for c in CONTRACTS for p in (c.default_port, c.metrics_port)}


def test_helm_values_have_one_service_per_capability_with_its_ports() -> None:
    services = yaml.safe_load((ROOT / "helm" / "facet" / "values.yaml").read_text())["services"]
    assert list(services) == [c.name for c in CONTRACTS]
    for c in CONTRACTS:
        entry = services[c.name]
        assert (entry["port"], entry["metricsPort"], entry["grpcService"]) == (c.default_port, c.metrics_port, c.service_name), c.name


def test_the_gpu_extra_is_the_serve_extra_with_onnxruntime_gpu() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    serve = [r.replace("onnxruntime==", "onnxruntime-gpu==") for r in extras["serve"]]
    assert extras["gpu"] == serve


def test_missing_defaults_build_cheapest_first() -> None:
    """`facet up` builds what is missing in the order of each row's measured `default_build_s`;
    the embedding model (an export, about a minute) comes first, so retrieval serves first."""
    assert all(row.default_build_s > 0 for row in registry.CAPABILITIES)
    order = registry.cheapest_build_first(list(reversed(registry.names())))
    assert [registry.get(name).default_build_s for name in order] == sorted(row.default_build_s for row in registry.CAPABILITIES)
    assert order[0] == "retrieval"
    assert registry.cheapest_build_first(["sae"]) == ["sae"]
