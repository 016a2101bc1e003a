"""`facet check` (the Helm test's command) against real services: health, one SDK call, exit status."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from deploy import check
from services import registry
from tests.serving import REPO_ROOT, ServerProcess, free_port


@pytest.fixture(scope="module")
def retrieval(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    return start_server()


@pytest.fixture(scope="module", params=["FACET_API_KEY", "FACET_SERVER_API_KEYS_FILE"])
def retrieval_with_key(
    request: pytest.FixtureRequest, start_server: Callable[..., ServerProcess], tmp_path_factory: pytest.TempPathFactory
) -> ServerProcess:
    """A retrieval service that wants the key "check-key": its one key, or one of a keys file (the
    chart's apiKeys.secretName)."""
    if request.param == "FACET_API_KEY":
        return start_server(env={"FACET_API_KEY": "check-key"})
    keys = tmp_path_factory.mktemp("keys") / "api-keys.toml"
    keys.write_text('[helm-test]\nkey = "check-key"\n\n[alice]\nkey = "alice-key"\nrequests_per_s = 5.0\n')
    return start_server(env={"FACET_SERVER_API_KEYS_FILE": str(keys)})


def test_a_serving_service_passes_with_its_health_and_one_real_call(
    retrieval: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check.main([f"retrieval={retrieval.address}"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith(f"retrieval  ok    {retrieval.address}  SERVING; embed: 1 x 384 float32"), line


def test_a_dead_address_fails_naming_the_service(retrieval: ServerProcess, capsys: pytest.CaptureFixture[str]) -> None:
    dead = f"127.0.0.1:{free_port()}"
    assert (
        check.main(
            ["--services", "retrieval,nextframe", f"--address-retrieval={retrieval.address}", f"nextframe={dead}"]
        )
        == 1
    )
    out, err = capsys.readouterr()
    lines = dict(line.split(maxsplit=1) for line in out.splitlines())
    assert lines["retrieval"].startswith("ok") and lines["nextframe"].startswith(f"FAIL  {dead}  health: UNAVAILABLE")
    assert f"1 of 2 failed: nextframe at {dead}" in err


def test_an_address_of_another_service_is_named_as_such(
    retrieval: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check.main([f"sae={retrieval.address}"]) == 1
    assert "this server does not serve facet.v1.Sae" in capsys.readouterr().out


def test_the_api_key_is_sent_and_a_missing_one_fails_the_call(
    retrieval_with_key: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check.main([f"retrieval={retrieval_with_key.address}", "--api-key", ""]) == 1
    assert "SERVING, but the SDK call failed: Unauthenticated" in capsys.readouterr().out
    assert check.main([f"retrieval={retrieval_with_key.address}", "--api-key", "check-key"]) == 0


def test_the_probe_form_runs_as_a_module_and_exits_by_health(retrieval: ServerProcess) -> None:
    """What the chart's TLS probes exec (here in plaintext): `python -m deploy.check --health-only`."""

    def probe(address: str) -> subprocess.CompletedProcess[str]:
        command = [
            sys.executable,
            "-m",
            "deploy.check",
            "--health-only",
            "--services",
            "retrieval",
            f"retrieval={address}",
        ]
        return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)

    up = probe(retrieval.address)
    assert up.returncode == 0 and "SERVING" in up.stdout and "embed" not in up.stdout, up.stdout + up.stderr
    assert probe(f"127.0.0.1:{free_port()}").returncode == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nope=localhost:1"], "unknown capability 'nope'"),
        (["retrieval"], "CAPABILITY=HOST:PORT"),
        (["retrieval=a:1", "--address-retrieval", "b:1"], "given twice"),
        (["--services", "retrieval,"], "--services"),
        (["--client-cert", __file__], "--client-cert and --client-key go together"),
        (["--root-certificates", "/nonexistent/ca.crt"], "/nonexistent/ca.crt"),
        (["--tls", "--tls-server-name", "x.svc"], "--tls-server-name goes with --health-only"),
        (["--timeout-s", "0"], "--timeout-s must be a finite number of seconds > 0"),
        (["--timeout-s", "nan"], "--timeout-s must be a finite number of seconds > 0, got nan"),
        (["--timeout-s", "inf"], "--timeout-s must be a finite number of seconds > 0, got inf"),
        (["retrieval=localhost"], "'localhost' is not HOST:PORT (the port is required)"),
        (["retrieval=localhost:99999"], "has port '99999'; a port is a number from 1 to 65535"),
        (["retrieval=localhost:0"], "has port '0'"),
        (["retrieval=localhost:-5"], "has port '-5'"),
        (["retrieval=::1:50053"], "is not HOST:PORT"),
        (["retrieval=http://localhost:50053"], "is a URL; give HOST:PORT"),
        (["--address-retrieval", ""], "--address-retrieval: '' is not HOST:PORT"),
    ],
)
def test_usage_errors_exit_2_with_what_to_change(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check.main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_bad_address_in_the_environment_or_facet_tls_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FACET_RETRIEVAL_ADDR", "localhost")
    assert check.main(["--services", "retrieval"]) == 2
    assert "FACET_RETRIEVAL_ADDR: 'localhost' is not HOST:PORT" in capsys.readouterr().err
    monkeypatch.delenv("FACET_RETRIEVAL_ADDR")
    monkeypatch.setenv("FACET_TLS", "maybe")  # the SDK refuses it too; it used to mean plaintext here
    assert check.main(["retrieval=localhost:1"]) == 2
    assert "FACET_TLS must be 1/true/yes/on or 0/false/no/off, got 'maybe'" in capsys.readouterr().err


def test_gRPC_targets_and_bracketed_ipv6_addresses_are_accepted() -> None:
    for address in ("[::1]:50053", "dns:///facet.example.com:443", "unix:/run/facet.sock", "10.0.0.7:1"):
        assert check.check_address(address, "test") == address


def test_tls_arguments_reach_the_sdk_only_when_asked_for(tmp_path: Path) -> None:
    """A plaintext check passes no TLS argument (any SDK); TLS passes the PEM bytes, not paths."""
    assert check.Tls().sdk_arguments() == {}
    ca = tmp_path / "ca.crt"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    args = check.build_parser().parse_args(["--root-certificates", str(ca)])
    tls = check.tls_options(args)
    assert tls.enabled and tls.sdk_arguments() == {"tls": True, "root_certificates": ca.read_bytes()}


def test_every_capability_has_its_one_cheap_call() -> None:
    """A new capability cannot be forgotten: `check` beside its demo's `run_demo`."""
    for name in registry.names():
        assert callable(check.sdk_check(name)), name
