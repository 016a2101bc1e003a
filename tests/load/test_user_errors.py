"""What a user who gets `facet load` / `python -m load.slo` wrong is told: one line naming what to
fix and exit status 2, before locust starts; a run whose service went away is not a pass; an
objectives table that names no RPC is refused; a cut-short CSV is named, not judged.

No services: every refusal here happens before anything connects (a free port stands for a
service that is gone).
"""

from __future__ import annotations

import ast
import io
import os
import signal
import socket
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from load import cli, slo
from load.scenarios import SCENARIO_DIR
from tests.serving import free_port

# A locust stats history of a 3 s run: locust wrote one second at its user count before it stopped.
HISTORY_HEADER = (
    "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%,"
    "Total Request Count,Total Failure Count,Total Median Response Time,Total Average Response Time,"
    "Total Min Response Time,Total Max Response Time,Total Average Content Size"
)
STATS_HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,"
    "Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,"
    "99.99%,100%"
)
SHORT_HISTORY = [
    "100,0,,Aggregated,0,0,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,0,0,0,0,0,0,0",
    "101,4,grpc,Retrieval/Search,0,0,0,0,0,0,0,0,0,0,0,0,0,7,1,0,0,0,0,0",
    "101,4,,Aggregated,0,0,0,0,0,0,0,0,0,0,0,0,0,7,1,0,0,0,0,0",
]
SHORT_STATS = [
    "grpc,Retrieval/Search,7,1,60,70,20,200,0,2.3,0.3,60,70,80,80,90,200,200,200,200,200,200",
    ",Aggregated,7,1,60,70,20,200,0,2.3,0.3,60,70,80,80,90,200,200,200,200,200,200",
]
SLO = "[defaults]\np50_ms = 1000.0\np99_ms = 5000.0\nerror_rate = 0.01\n"


@pytest.fixture
def short_run(tmp_path: Path) -> Path:
    prefix = tmp_path / "run"
    slo.history_path(prefix).write_text("\n".join([HISTORY_HEADER, *SHORT_HISTORY]) + "\n")
    slo.stats_path(prefix).write_text("\n".join([STATS_HEADER, *SHORT_STATS]) + "\n")
    (tmp_path / "slo.toml").write_text(SLO)
    return prefix


def refusal(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """`facet load argv`'s one stderr line, after checking it exits 2."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("rate", ["nan", "inf", "-1", "0"])
def test_a_spawn_rate_that_is_not_a_positive_number_is_refused(rate: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert "--spawn-rate must be a number > 0" in refusal(["retrieval", f"--spawn-rate={rate}"], capsys)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--shape", "steps", "--step-time", "2s"], "--step-time must be at least 3s"),
        (["--shape", "steps", "--step-time", "1"], "--step-time must be at least 3s"),
        (["--web", "--slo"], "--slo checks a headless run"),
    ],
)
def test_settings_that_would_give_a_misleading_check_are_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert message in refusal(["retrieval", *argv], capsys)


FAKE_LOCUST = """
import pathlib, signal, sys, time
out = pathlib.Path(sys.argv[1])
def stop(*_):
    out.write_text("stopped by SIGINT")
    sys.exit(0)
signal.signal(signal.SIGINT, stop)
out.write_text("running")
time.sleep(120)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_terminated_facet_load_stops_locust_first(signum: int, tmp_path: Path) -> None:
    """A job runner's SIGTERM (or a closed terminal's SIGHUP) to `facet load` used to leave locust running."""
    marker = tmp_path / "locust"

    def signal_when_running() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not marker.exists():
            time.sleep(0.05)
        os.kill(os.getpid(), signum)

    sender = threading.Thread(target=signal_when_running)
    sender.start()
    before = signal.getsignal(signum)
    status = cli.run_locust([sys.executable, "-c", FAKE_LOCUST, str(marker)], dict(os.environ), 60.0)
    sender.join()
    assert status == 128 + signum
    assert marker.read_text() == "stopped by SIGINT"  # asked to stop (and write its reports), and waited for
    assert signal.getsignal(signum) == before


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "no RAR-b data in {folder} (no *-test.csv)"),
        ({"piqa-test.csv": "a,b\n1,2\n"}, "{folder}/piqa-test.csv is not a RAR-b MCR file"),
        ({"piqa-test.csv": "queries,documents\nq,[1\n"}, "{folder}/piqa-test.csv: row 1's documents is not a list"),
    ],
)
def test_unusable_benchmark_data_stops_facet_load_before_the_users_start(
    files: dict[str, str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It used to pass the check and fail in every user, a traceback each, exit 1."""
    folder = tmp_path / "rarb-mcr"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    assert refusal(["retrieval", "--data", str(tmp_path)], capsys).startswith(
        "facet load: " + message.format(folder=folder)
    )


def test_a_bare_slo_before_the_service_does_not_swallow_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`facet load --slo retrieval` used to say "the following arguments are required: service"."""
    port = free_port()
    monkeypatch.setenv("FACET_RETRIEVAL_ADDR", f"localhost:{port}")
    assert refusal(["--slo", "retrieval"], capsys).startswith(f"facet load: no retrieval service at localhost:{port}")
    with pytest.raises(SystemExit) as exited:
        cli.main(["--slo"])
    assert exited.value.code == 2
    assert "the service to load is missing" in capsys.readouterr().err


def test_a_service_named_twice_is_loaded_once() -> None:
    assert cli.services_for("retrieval, retrieval") == ["retrieval"]
    assert cli.services_for("sae,retrieval,sae") == ["sae", "retrieval"]


def test_the_web_ui_port_must_be_a_free_port(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--web-port must be a port from 1 to 65535" in refusal(["retrieval", "--web", "--web-port", "99999"], capsys)
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert f"--web-port {port}: in use" in refusal(["retrieval", "--web", "--web-port", str(port)], capsys)


@pytest.mark.parametrize("flag", ["--csv", "--html", "FACET_LOAD_ACK_LOG"])
def test_an_output_that_cannot_be_written_is_refused_naming_its_flag(
    flag: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")

    def argv(path: Path) -> list[str]:
        if flag.startswith("--"):
            return ["retrieval", flag, str(path)]
        monkeypatch.setenv(flag, str(path))
        return ["retrieval"]

    assert refusal(argv(a_file / "out"), capsys) == f"facet load: {flag}: cannot make the folder {a_file} (File exists)"
    if flag != "--csv":  # --csv is a prefix: PREFIX_stats.csv beside the directory is fine
        assert f"facet load: {flag}: {tmp_path} is a directory" in refusal(argv(tmp_path), capsys)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        assert "no write permission" in refusal(argv(locked / "out"), capsys)


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("localhost", "is not HOST:PORT (the port is required)"),
        ("localhost:abc", "has port 'abc'"),
        ("localhost:99999", "has port '99999'"),
        ("http://localhost:50053", "is a URL"),
        (" ", "is not HOST:PORT"),
    ],
)
def test_a_malformed_service_address_is_refused_naming_the_variable(
    address: str, message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FACET_RETRIEVAL_ADDR", address)
    err = refusal(["retrieval"], capsys)
    assert err.startswith(f"facet load: FACET_RETRIEVAL_ADDR: {address!r}") and message in err


@pytest.mark.parametrize("host", ["localhost:50053", "http://gpu-1", "::1", ""])
def test_a_host_with_a_port_or_scheme_is_refused(
    host: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FACET_RETRIEVAL_ADDR", raising=False)
    err = refusal(["retrieval", "--host", host], capsys)
    assert err.startswith(f"facet load: --host: {host!r} is not a host name") and "FACET_RETRIEVAL_ADDR" in err


def test_a_service_gone_after_the_run_makes_it_fail(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()  # nothing listens there any more
    monkeypatch.setenv("FACET_RETRIEVAL_ADDR", f"localhost:{port}")
    assert cli.still_serving(["retrieval"], "localhost") == 1
    err = capsys.readouterr().err
    assert f"the retrieval service at localhost:{port} stopped accepting connections during the run" in err
    assert "not a pass" in err


def test_an_objective_for_a_misspelt_rpc_is_refused_with_the_likely_name(tmp_path: Path) -> None:
    path = tmp_path / "slo.toml"
    path.write_text(SLO + '[rpc."Retrieval/Serch"]\np50_ms = 100.0\n')
    with pytest.raises(ValueError, match=r'rpc\."Retrieval/Serch" names no RPC.*did you mean Retrieval/Search\?'):
        slo.load_objectives(path)
    path.write_text(SLO + '[rpc."Search"]\np50_ms = 100.0\n')
    with pytest.raises(ValueError, match=r"names are <Service>/<Rpc> as in the proto: .*Retrieval/Search"):
        slo.load_objectives(path)


def test_every_request_name_the_scenarios_report_is_an_rpc_of_the_proto() -> None:
    """So a `[rpc."<name>"]` table can name any of them (and README's "named as in the proto" holds)."""
    named = set()
    for path in SCENARIO_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "call"):
                continue
            if node.args and isinstance(node.args[0], ast.Constant):
                named.add(node.args[0].value)
    rpcs = {name.split("/", 1)[1] for name in slo.request_names()}
    assert named and named <= rpcs, named - rpcs


def test_a_run_of_a_few_seconds_is_judged_not_reported_empty(short_run: Path) -> None:
    (step,) = slo.read_steps(slo.history_path(short_run))
    assert (step.users, [(r.name, r.calls, r.failures) for r in step.rpcs]) == (4, [("Retrieval/Search", 7, 1)])
    out = io.StringIO()
    assert slo.run_check(short_run, short_run.parent / "slo.toml", out) == 1  # 1 of 7 failed > 1%
    assert "errors 14.3% > 1.0%" in out.getvalue()


@pytest.mark.parametrize("which", ["history", "stats"])
def test_a_cut_short_csv_is_named_not_judged(which: str, short_run: Path) -> None:
    path = slo.history_path(short_run) if which == "history" else slo.stats_path(short_run)
    text = path.read_text()
    path.write_text(text.rstrip("\n")[:-5])  # the last row loses its last cells
    with pytest.raises(ValueError, match="has too few or too many cells"):
        slo.run_check(short_run, short_run.parent / "slo.toml", io.StringIO())
    path.write_text(text.splitlines()[0] + "\n")  # the header alone
    with pytest.raises(ValueError, match="has a header and no rows"):
        slo.run_check(short_run, short_run.parent / "slo.toml", io.StringIO())


def test_a_prefix_without_files_names_the_csv_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert slo.main([str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert f"no stats history (PREFIX_stats_history.csv) at {tmp_path / 'nothing'}_stats_history.csv" in err
    assert "--csv PREFIX" in err


class _Unanswered(grpc.GenericRpcHandler):
    """Takes every call and answers none until `release` is set (a wedged service)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        def wait(request: bytes, context: grpc.ServicerContext) -> bytes:
            self.release.wait(60)
            context.abort(grpc.StatusCode.UNAVAILABLE, "released")
            return b""  # not reached: abort raises

        return grpc.unary_unary_rpc_method_handler(wait)


def test_a_run_where_no_call_completes_is_not_a_pass(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A service that accepts calls and never answers: locust counts completed calls only, so the
    run used to end with no failure and exit status 0."""
    handler = _Unanswered()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        monkeypatch.setenv("FACET_RETRIEVAL_ADDR", f"127.0.0.1:{port}")
        assert cli.main(["retrieval", "--users", "1", "--run-time", "3s"]) == 1
    finally:
        handler.release.set()
        server.stop(None)
    err = capfd.readouterr().err
    assert "load: no call completed during the run" in err
    assert "load: 1 call(s) in flight when the run stopped are not in the stats" in err
