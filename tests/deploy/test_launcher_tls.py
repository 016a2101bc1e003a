"""`facet up` over TLS and mTLS with API keys: the flags reach every service, the launcher's own
health checks and demo work over TLS (trusting `--tls-ca`, else a self-signed certificate itself),
and a bad setting is said in one line before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.model_repository import ModelRepository
from tests.certificates import make_self_signed, make_tls_material
from tests.serving import free_port

pytestmark = pytest.mark.integration

KEYS = '[demo]\nkey = "demo-secret"\nrequests_per_s = 100.0\n\n[ops]\nkey = "ops-secret"\n'


def _up(model_repository: ModelRepository, data_dir: Path, port: int, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FACET_MODEL_REPOSITORY": str(model_repository.root), "FACET_DATA_DIR": str(data_dir),
           "FACET_RETRIEVAL_PORT": str(port), "FACET_SERVER_METRICS_PORT": "0"}  # fmt: skip
    for name in ("FACET_API_KEY", "FACET_TLS", "FACET_TLS_ROOT_CERTIFICATES", "FACET_TLS_CLIENT_CERT", "FACET_TLS_CLIENT_KEY"):
        env.pop(name, None)
    command = [sys.executable, "-m", "deploy.cli", "up", "--services", "retrieval", "--demo", "--exit-after-demo", *flags]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_up_serves_mtls_with_api_keys_and_runs_the_demo_over_it(model_repository: ModelRepository, tmp_path: Path) -> None:
    certs = make_tls_material(tmp_path / "tls")
    keys = tmp_path / "api-keys.toml"
    keys.write_text(KEYS)
    port = free_port()
    flags = ["--tls-cert", str(certs.server.cert), "--tls-key", str(certs.server.key), "--tls-client-ca", str(certs.ca.cert),
             "--tls-ca", str(certs.ca.cert), "--tls-client-cert", str(certs.client.cert), "--tls-client-key", str(certs.client.key),
             "--api-keys-file", str(keys)]  # fmt: skip
    result = _up(model_repository, tmp_path / "data", port, *flags)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "facet: mTLS; API keys: demo, ops" in result.stdout
    assert f"SERVING on localhost:{port}" in result.stdout
    log = (tmp_path / "data" / "logs" / "retrieval.log").read_text()
    assert '"tls": true' in log and '"mtls": true' in log
    assert '"key": "demo"' in log  # the demo's calls, named by the first key of the file


def test_up_trusts_a_self_signed_certificate_without_tls_ca(model_repository: ModelRepository, tmp_path: Path) -> None:
    pem = make_self_signed(tmp_path / "tls")
    port = free_port()
    result = _up(model_repository, tmp_path / "data", port, "--tls-cert", str(pem.cert), "--tls-key", str(pem.key))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "facet: TLS; API keys: none" in result.stdout and f"SERVING on localhost:{port}" in result.stdout


def test_bad_tls_flags_are_one_line_each_before_anything_starts(model_repository: ModelRepository, tmp_path: Path) -> None:
    certs = make_tls_material(tmp_path / "tls")
    result = _up(model_repository, tmp_path / "data", free_port(), "--tls-cert", str(certs.server.cert), "--tls-client-ca", str(certs.ca.cert))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "facet up: server.tls_cert_file and server.tls_key_file go together: set both (TLS) or neither (plaintext), got only server.tls_cert_file",
        "facet up: --demo under mTLS (--tls-client-ca) needs the launcher's own client certificate: --tls-client-cert and --tls-client-key",
    ]
    assert "starting" not in result.stdout


def test_the_launcher_s_own_client_files_are_checked_before_anything_starts(model_repository: ModelRepository, tmp_path: Path) -> None:
    """A key given as --tls-ca, or a client key that is not the client certificate's: one line
    naming the flag, exit 2, nothing started (it was a traceback after 'starting retrieval')."""
    certs = make_tls_material(tmp_path / "tls")
    server = ("--tls-cert", str(certs.server.cert), "--tls-key", str(certs.server.key))
    result = _up(model_repository, tmp_path / "data", free_port(), *server, "--tls-ca", str(certs.ca.key))
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "--tls-ca" in result.stderr and "Traceback" not in result.stderr
    assert "starting" not in result.stdout
    mismatched = ("--tls-client-cert", str(certs.client.cert), "--tls-client-key", str(certs.server.key))
    result = _up(model_repository, tmp_path / "data", free_port(), *server, "--tls-ca", str(certs.ca.cert), *mismatched)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "--tls-client" in result.stderr and "Traceback" not in result.stderr
    assert "starting" not in result.stdout
