"""`facet check` over TLS and mTLS against a real retrieval service (certificates from
`tests.certificates`): the Helm test's form (health + SDK call) and the TLS probe's form
(`--health-only --tls-server-name`), and what fails without the right material."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from deploy import check
from tests.certificates import TlsMaterial, make_tls_material, write_encrypted_key
from tests.serving import ServerProcess, free_port


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    return make_tls_material(tmp_path_factory.mktemp("check-tls"))


def _serving_over_tls(start_server: Callable[..., ServerProcess], certs: TlsMaterial, mtls: bool) -> str:
    """A retrieval service with TLS (mTLS when `mtls`) on a fixed free port; polled until SERVING
    over TLS (the process helper's own wait speaks plaintext). Returns its address."""
    port = free_port()
    env = {
        "FACET_SERVER_PORT": str(port),
        "FACET_SERVER_TLS_CERT_FILE": str(certs.server.cert),
        "FACET_SERVER_TLS_KEY_FILE": str(certs.server.key),
    }
    if mtls:
        env["FACET_SERVER_TLS_CLIENT_CA_FILE"] = str(certs.ca.cert)
    server = start_server(env=env, wait=False)
    address = f"localhost:{port}"
    tls = check.Tls(True, certs.ca.cert.read_bytes(), certs.client.cert.read_bytes(), certs.client.key.read_bytes())
    deadline = time.monotonic() + 120
    while (problem := check.health(address, "facet.v1.Retrieval", tls, timeout_s=2)) is not None:
        assert server.alive(), f"the TLS service exited: {server.log_tail()}"
        assert time.monotonic() < deadline, problem
        time.sleep(0.2)
    return address


@pytest.fixture(scope="module")
def tls_address(start_server: Callable[..., ServerProcess], certs: TlsMaterial) -> str:
    return _serving_over_tls(start_server, certs, mtls=False)


@pytest.fixture(scope="module")
def mtls_address(start_server: Callable[..., ServerProcess], certs: TlsMaterial) -> str:
    return _serving_over_tls(start_server, certs, mtls=True)


def test_the_helm_test_form_passes_over_tls(
    tls_address: str, certs: TlsMaterial, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check.main([f"retrieval={tls_address}", "--tls", "--root-certificates", str(certs.ca.cert)]) == 0
    assert "SERVING; embed: 1 x 384 float32" in capsys.readouterr().out


def test_a_plaintext_check_of_a_tls_service_fails(tls_address: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert check.main([f"retrieval={tls_address}", "--timeout-s", "3"]) == 1
    assert "if it uses TLS, add --tls --root-certificates <its CA>" in capsys.readouterr().out


def test_the_probe_form_checks_the_certificate_for_the_name_it_is_given(
    tls_address: str, certs: TlsMaterial, capsys: pytest.CaptureFixture[str]
) -> None:
    """The chart's probe connects to 127.0.0.1 and checks the certificate for the Service's name."""
    port = tls_address.rsplit(":", 1)[1]
    probe = [
        "--health-only",
        f"retrieval=127.0.0.1:{port}",
        "--root-certificates",
        str(certs.ca.cert),
        "--timeout-s",
        "3",
    ]
    assert check.main([*probe, "--tls-server-name", "localhost"]) == 0
    wrong_name = [*probe, "--tls-server-name", "demo-facet-retrieval.ml.svc"]  # not a name of this certificate
    assert check.main(wrong_name) == 1
    out = capsys.readouterr().out
    assert "retrieval  ok    127.0.0.1" in out and "retrieval  FAIL  127.0.0.1" in out
    assert "the server's certificate does not name this host" in out


def test_a_certificate_from_another_ca_is_named_as_the_problem(
    tls_address: str, certs: TlsMaterial, capsys: pytest.CaptureFixture[str]
) -> None:
    other_ca = ["--root-certificates", str(certs.untrusted_ca.cert), "--timeout-s", "3"]
    assert check.main([f"retrieval={tls_address}", *other_ca]) == 1
    assert "not signed by --root-certificates" in capsys.readouterr().out


def test_mtls_needs_the_client_certificate(
    mtls_address: str, certs: TlsMaterial, capsys: pytest.CaptureFixture[str]
) -> None:
    root = ["--root-certificates", str(certs.ca.cert), "--timeout-s", "3"]
    assert check.main([f"retrieval={mtls_address}", *root]) == 1
    assert "under mTLS give --client-cert/--client-key" in capsys.readouterr().out
    client = ["--client-cert", str(certs.client.cert), "--client-key", str(certs.client.key)]
    assert check.main([f"retrieval={mtls_address}", *root, *client]) == 0
    assert "SERVING; embed" in capsys.readouterr().out


def test_mixed_up_certificate_files_are_usage_errors_before_any_connection(
    certs: TlsMaterial, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """Swapped files, a key where the CA belongs, an encrypted key, another certificate's key, DER:
    exit 2 naming the flag and the fix (they used to reach gRPC: 'Failed to create security handshaker')."""
    folder = tmp_path_factory.mktemp("mixed-up")
    encrypted = write_encrypted_key(certs.client, folder / "encrypted.key")
    der = folder / "ca.der"
    der.write_bytes(b"0\x82\x01\x86" + bytes(64))
    ca, cert, key = str(certs.ca.cert), str(certs.client.cert), str(certs.client.key)
    cases = [
        (["--root-certificates", str(certs.ca.key)], "--root-certificates", "holds a private key, not a certificate"),
        (["--root-certificates", ca, "--client-cert", key, "--client-key", cert], "--client-cert", "swapped?"),
        (["--root-certificates", ca, "--client-cert", cert, "--client-key", str(encrypted)], "--client-key",
         "holds an encrypted private key; give it unencrypted"),
        (["--root-certificates", ca, "--client-cert", cert, "--client-key", str(certs.server.key)], "--client-key",
         "is not the private key of --client-cert (KEY_VALUES_MISMATCH)"),
        (["--root-certificates", str(der)], "--root-certificates", "is not a PEM file (no '-----BEGIN' line; DER?"),
    ]  # fmt: skip
    for argv, flag, message in cases:
        assert check.main(["retrieval=localhost:1", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"facet check: {flag}") and message in err, err
