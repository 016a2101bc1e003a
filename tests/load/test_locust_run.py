"""`facet load all`: a short headless locust run against real services of every capability.

One locust process (its own, as `facet load` runs it) drives every scenario at once for a few
seconds; its CSV must show calls of every RPC each scenario's tasks make, and no failure. The
servers are the capabilities' session fixtures (`<capability>_server`, on the onnxruntime
backend), shared with the other suites.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import sdk
from load.scenarios import SCENARIO_DIR, has_scenario, user_class_name
from sdk._contract import capability as contract
from services import registry
from tests.serving import RARB_DATA, REPO_ROOT, ServerProcess

CAPABILITIES = [name for name in registry.names() if has_scenario(name)]
RUN_S = 20  # seconds of load: a fresh server's first model calls take seconds on a busy 2-core machine


# the shared server fixtures are parametrized over every backend: this test takes the onnxruntime
# server of each capability (a parametrize mark overrides a fixture's own params)
ONNXRUNTIME_SERVERS = [
    pytest.mark.parametrize(f"{name}_server", ["onnxruntime"], indirect=True) for name in CAPABILITIES
]


def on_onnxruntime_servers(test: Callable[..., None]) -> Callable[..., None]:
    for mark in ONNXRUNTIME_SERVERS:
        test = mark(test)
    return pytest.mark.usefixtures(*(f"{name}_server" for name in CAPABILITIES))(test)


def scenario_rpcs(capability: str) -> tuple[str, ...]:
    """The `rpcs` a scenario's User class declares, read from its source: importing it here
    would monkey-patch pytest's process with gevent."""
    tree = ast.parse((SCENARIO_DIR / f"{capability}.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == user_class_name(capability))
    value = next(
        s.value
        for s in cls.body
        if isinstance(s, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "rpcs" for t in s.targets)
    )
    return tuple(ast.literal_eval(value))


def test_every_capability_in_the_registry_has_a_scenario() -> None:
    assert CAPABILITIES == registry.names()
    for name in CAPABILITIES:
        assert scenario_rpcs(name), f"load/scenarios/{name}.py declares no rpcs"


@pytest.mark.integration
@on_onnxruntime_servers
def test_a_short_headless_run_calls_every_task_of_every_scenario_without_failures(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    servers: dict[str, ServerProcess] = {name: request.getfixturevalue(f"{name}_server") for name in CAPABILITIES}
    env = {contract(name).address_env: server.address for name, server in servers.items()}
    ack_log = tmp_path / "acks.jsonl"
    prefix = tmp_path / "run"
    argv = [
        "all",
        "--users",
        "2",
        "--run-time",
        f"{RUN_S}s",
        "--csv",
        str(prefix),
        "--html",
        str(tmp_path / "report.html"),
        "--data",
        str(RARB_DATA.parent),
    ]
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from load.cli import main; sys.exit(main(sys.argv[1:]))", *argv],
        cwd=REPO_ROOT,
        env={**_environ(), **env, "FACET_LOAD_ACK_LOG": str(ack_log)},
        capture_output=True,
        text=True,
        timeout=RUN_S + 120,
    )
    output = result.stdout[-4000:] + result.stderr[-4000:]
    assert result.returncode == 0, output
    with (tmp_path / "run_stats.csv").open(newline="") as f:
        stats = {r["Name"]: r for r in csv.DictReader(f)}
    for name in CAPABILITIES:
        service = contract(name).service_name.rsplit(".", 1)[-1]
        for rpc in scenario_rpcs(name):
            assert int(stats.get(f"{service}/{rpc}", {}).get("Request Count", 0)) > 0, (
                f"no {service}/{rpc} calls in {sorted(stats)}\n{output}"
            )
    assert stats["Aggregated"]["Failure Count"] == "0", (tmp_path / "run_failures.csv").read_text()
    assert (tmp_path / "report.html").stat().st_size > 0
    assert Path(f"{prefix}_stats_history.csv").is_file()

    # every upsert acknowledged during the run is in the service (the ack log keeps the collection)
    acks = [json.loads(line) for line in ack_log.read_text().splitlines()]
    assert acks
    collections = {a["collection"] for a in acks}
    assert len(collections) == 1
    with sdk.Client(retrieval=servers["retrieval"].address) as client:
        (collection,) = collections
        ids = [i for a in acks for i in a["ids"]]
        assert len(ids) == len(set(ids))
        found = {d.id for start in range(0, len(ids), 64) for d in client.get(collection, ids[start : start + 64])}
        assert found == set(ids)
        client.delete_collection(collection)


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FACET_LOAD_")}


@pytest.mark.integration
@pytest.mark.parametrize("retrieval_server", ["onnxruntime"], indirect=True)
def test_a_stepped_run_is_checked_step_by_step(retrieval_server: ServerProcess, tmp_path: Path) -> None:
    # objectives every call meets: the check passes and shows each step's users and RPCs
    (tmp_path / "slo.toml").write_text("[defaults]\np50_ms = 600000.0\np99_ms = 600000.0\nerror_rate = 0.0\n")
    argv = ["retrieval", "--shape", "steps", "--steps", "1,2", "--step-time", "4s", "--slo", str(tmp_path / "slo.toml")]
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from load.cli import main; sys.exit(main(sys.argv[1:]))", *argv],
        cwd=REPO_ROOT,
        env={**_environ(), contract("retrieval").address_env: retrieval_server.address},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    rows = [line.split() for line in result.stdout.splitlines() if "Retrieval/Search" in line]
    assert [(r[0], r[1]) for r in rows] == [("1", "1"), ("2", "2")], result.stdout
    assert all(r[7] == "PASS" for r in rows)
    assert "SLO check: PASS" in result.stdout
    # without FACET_LOAD_ACK_LOG or FACET_LOAD_KEEP_COLLECTIONS the run deletes its collection
    with sdk.Client(retrieval=retrieval_server.address) as client:
        assert not [c.name for c in client.list_collections() if c.name.startswith("load-")]


@pytest.mark.integration
def test_the_retrieval_scenario_runs_against_two_services_sharing_one_milvus_at_once(start_server, milvus_uri: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Two retrieval processes on one Milvus (the Milvus store), a locust run against each at the
    same time: no failure in either, and every upsert either run had acknowledged is found
    through the other service."""
    from tests.services.retrieval.fixtures import milvus_database

    with milvus_database(milvus_uri) as database:
        env = {"FACET_RETRIEVAL_STORE": "milvus", "FACET_RETRIEVAL_MILVUS_URI": milvus_uri, "FACET_RETRIEVAL_MILVUS_DATABASE": database}
        servers = [start_server(env=env) for _ in range(2)]
        runs = []
        for i, server in enumerate(servers):
            argv = ["retrieval", "--users", "2", "--run-time", "15s", "--csv", str(tmp_path / f"run{i}"), "--data", str(RARB_DATA.parent)]
            runs.append(
                subprocess.Popen(
                    [sys.executable, "-c", "import sys; from load.cli import main; sys.exit(main(sys.argv[1:]))", *argv],
                    cwd=REPO_ROOT,
                    env={**_environ(), contract("retrieval").address_env: server.address, "FACET_LOAD_ACK_LOG": str(tmp_path / f"acks{i}.jsonl")},
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                )  # fmt: skip
            )
        outputs = [run.communicate(timeout=240)[0] for run in runs]
        for run, output in zip(runs, outputs, strict=True):
            assert run.returncode == 0, output[-4000:]
        for i in range(2):
            with (tmp_path / f"run{i}_stats.csv").open(newline="") as f:
                stats = {r["Name"]: r for r in csv.DictReader(f)}
            assert int(stats["Retrieval/Search"]["Request Count"]) > 0 and int(stats["Retrieval/Upsert"]["Request Count"]) > 0
            assert stats["Aggregated"]["Failure Count"] == "0", (tmp_path / f"run{i}_failures.csv").read_text()
            acks = [json.loads(line) for line in (tmp_path / f"acks{i}.jsonl").read_text().splitlines()]
            assert acks
            other = servers[1 - i]
            with sdk.Client(retrieval=other.address) as client:
                (collection,) = {a["collection"] for a in acks}
                ids = [d for a in acks for d in a["ids"]]
                found = {d.id for start in range(0, len(ids), 64) for d in client.get(collection, ids[start : start + 64])}
                assert found == set(ids), f"run {i}: {len(set(ids) - found)} acknowledged ids not found through the other service"
