"""The SLO checker on a locust CSV written by hand: per-step numbers, the table, the exit status.

The expected numbers are worked out by hand from the rows below, not by the code under test.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from load import cli, slo
from sdk._contract import CAPABILITIES as CONTRACTS
from services import registry
from tests.serving import REPO_ROOT, free_port

HEADER = (
    "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%,"
    "Total Request Count,Total Failure Count,Total Median Response Time,Total Average Response Time,"
    "Total Min Response Time,Total Max Response Time,Total Average Content Size"
)


def row(ts: int, users: int, name: str, p50: str, p99: str, total: int, failed: int) -> str:
    kind = "" if name == "Aggregated" else "grpc"
    return f"{ts},{users},{kind},{name},0,0,{p50},0,0,0,0,0,0,{p99},0,0,0,{total},{failed},0,0,0,0,0"


# Two steps of a stepped run: 2 users for seconds 100-104, then 4 users for 105-109; one second
# at 3 users in between (the ramp) is not a step of its own.
HISTORY = [
    row(99, 0, "Aggregated", "N/A", "N/A", 0, 0),
    *(row(t, 2, "Aggregated", "10", "20", 0, 0) for t in range(100, 105)),
    row(100, 2, "Retrieval/Search", "0", "0", 3, 0),  # 0: locust's window not filled yet
    row(102, 2, "Retrieval/Search", "40", "90", 11, 0),
    row(104, 2, "Retrieval/Search", "50", "120", 20, 0),
    row(104, 2, "Retrieval/Embed", "200", "400", 5, 1),
    row(105, 3, "Aggregated", "10", "20", 0, 0),
    row(105, 3, "Retrieval/Search", "60", "150", 24, 0),
    *(row(t, 4, "Aggregated", "10", "20", 0, 0) for t in range(106, 110)),
    row(107, 4, "Retrieval/Search", "70", "300", 40, 0),
    row(109, 4, "Retrieval/Search", "80", "1200", 56, 2),
    row(109, 4, "Retrieval/Embed", "250", "500", 9, 1),
]
SLO = """
[defaults]
p50_ms = 1000.0
p99_ms = 5000.0
error_rate = 0.5

[rpc."Retrieval/Search"]
p50_ms = 100.0
p99_ms = 1000.0
error_rate = 0.01
"""


@pytest.fixture
def run(tmp_path: Path) -> Path:
    prefix = tmp_path / "run"
    slo.history_path(prefix).write_text("\n".join([HEADER, *HISTORY]) + "\n")
    (tmp_path / "slo.toml").write_text(SLO)
    return prefix


def test_steps_are_stretches_of_one_user_count_with_their_own_calls(run: Path) -> None:
    steps = slo.read_steps(slo.history_path(run))
    assert [(s.users, s.start, s.end) for s in steps] == [(2, 100, 104), (4, 106, 109)]
    first, second = ({r.name: r for r in s.rpcs} for s in steps)
    # step 1: seconds 100..104 = 5 s; Search 20 calls (4/s), percentiles of its last row
    assert first["Retrieval/Search"] == slo.RpcStep("Retrieval/Search", 20, 0, 4.0, 50.0, 120.0)
    assert first["Retrieval/Embed"] == slo.RpcStep("Retrieval/Embed", 5, 1, 1.0, 200.0, 400.0)
    # step 2: after second 104 up to 109 = 5 s (the ramp second counted in); Search 56 - 20 = 36
    # calls, 2 - 0 failed; Embed 9 - 5 = 4 calls, 1 - 1 = 0 failed
    assert second["Retrieval/Search"] == slo.RpcStep("Retrieval/Search", 36, 2, 36 / 5, 80.0, 1200.0)
    assert second["Retrieval/Embed"] == slo.RpcStep("Retrieval/Embed", 4, 0, 0.8, 250.0, 500.0)


def test_each_rpc_is_judged_by_its_own_objective_or_the_defaults(run: Path) -> None:
    objectives = slo.load_objectives(run.parent / "slo.toml")
    verdicts = {(v.step.users, v.rpc.name): v for v in slo.check(slo.read_steps(slo.history_path(run)), objectives)}
    assert verdicts[2, "Retrieval/Search"].passed
    assert verdicts[2, "Retrieval/Embed"].passed  # 1 of 5 failed: 20% <= the defaults' 50%
    assert verdicts[4, "Retrieval/Embed"].passed
    # 1200 ms > 1000 ms, and 2 of 36 failed (5.6%) > 1%
    assert verdicts[4, "Retrieval/Search"].breaches == ("p99 1200 > 1000 ms", "errors 5.6% > 1.0%")


def test_the_table_shows_every_step_and_a_breach_fails_the_check(run: Path) -> None:
    out = io.StringIO()
    assert slo.run_check(run, run.parent / "slo.toml", out) == 1
    lines = out.getvalue().splitlines()
    search = [line.split() for line in lines if "Retrieval/Search" in line]
    assert [fields[:7] for fields in search] == [
        ["1", "2", "Retrieval/Search", "4.0", "50", "120", "0/20"],
        ["2", "4", "Retrieval/Search", "7.2", "80", "1200", "2/36"],
    ]
    assert search[0][7] == "PASS" and search[1][7] == "FAIL"
    assert "FAIL: 1 of 4 rows in 2 step(s)" in lines[-1]


def test_the_checker_command_exits_0_on_pass_1_on_breach_2_on_a_bad_file(run: Path) -> None:
    def check(slo_text: str) -> subprocess.CompletedProcess[str]:
        path = run.parent / "objectives.toml"
        path.write_text(slo_text)
        return subprocess.run(
            [sys.executable, "-m", "load.slo", str(run), "--slo", str(path)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert check(SLO).returncode == 1
    passed = check(SLO.replace("p99_ms = 1000.0", "p99_ms = 1500.0").replace("error_rate = 0.01", "error_rate = 0.1"))
    assert passed.returncode == 0, passed.stdout
    assert "SLO check: PASS: 4 rows in 2 step(s)" in passed.stdout
    bad = check(SLO.replace("p50_ms = 100.0", "p50_ms = -1"))
    assert bad.returncode == 2
    assert 'rpc."Retrieval/Search".p50_ms must be a finite number >= 0' in bad.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[defaults]\np50_ms = 1\np99_ms = 2\n", "defaults.error_rate is missing"),
        ("[defaults]\np50_ms = 1\np99_ms = 2\nerror_rate = 2\n", "defaults.error_rate is a share of calls"),
        ("[defaults]\np50_ms = 1\np99_ms = 2\nerror_rate = 0\np95_ms = 3\n", "defaults: unknown key(s) p95_ms"),
        ("[default]\np50_ms = 1\n", "unknown table(s) default"),
    ],
)
def test_a_bad_objectives_file_names_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "slo.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        slo.load_objectives(path)


def test_the_shipped_objectives_file_loads_and_names_only_rpcs_of_the_scenarios() -> None:
    objectives = slo.load_objectives(cli.DEFAULT_SLO)
    services = {c.service_name.rsplit(".", 1)[-1] for c in CONTRACTS}  # "Retrieval", "Sae", ...
    assert objectives.rpc and all(name.split("/")[0] in services for name in objectives.rpc)


def test_facet_load_refuses_a_service_that_is_not_running_naming_its_address(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()  # nothing listens there
    monkeypatch.setenv("FACET_RETRIEVAL_ADDR", f"localhost:{port}")
    assert cli.main(["retrieval", "--run-time", "5s"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"facet load: no retrieval service at localhost:{port}") and "facet up" in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bogus"], f"unknown service bogus; available: {', '.join(registry.names())} or all"),
        (["retrieval", "--run-time", "soon"], "a duration like 30s"),
        (["retrieval", "--shape", "steps", "--steps", "1,0"], "steps must be integers >= 1"),
        (["retrieval", "--users", "0"], "--users must be >= 1"),
    ],
)
def test_facet_load_rejects_bad_arguments_before_starting_locust(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
