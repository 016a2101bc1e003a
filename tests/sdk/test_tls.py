"""The SDK over TLS and mTLS against a real retrieval server process (real certificates from
`tests.certificates`, several API keys from a file): the client arguments and their FACET_TLS*
variables, what a user sees when TLS settings do not match the server's, and a rate-limited key's
`retry_after_s`. Also the argument checks, which need no server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import sdk
from sdk import _transport
from tests.certificates import TlsMaterial, make_tls_material, write_encrypted_key
from tests.serving import ServerProcess

NO_RETRY = sdk.RetryPolicy(max_attempts=1)
KEYS = """
[alice]
key = "alice-secret"

[limited]
key = "limited-secret"
requests_per_s = 0.01
burst = 1
"""


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    return make_tls_material(tmp_path_factory.mktemp("sdk-tls"))


@pytest.fixture(scope="module")
def mtls_server(
    start_server: Callable[..., ServerProcess], certs: TlsMaterial, tmp_path_factory: pytest.TempPathFactory
) -> ServerProcess:
    """A retrieval server under mTLS with two API keys; the fixture's own health checks present
    the client certificate (FACET_TLS_* in its environment)."""
    keys = tmp_path_factory.mktemp("keys") / "api-keys.toml"
    keys.write_text(KEYS)
    env = {
        "FACET_SERVER_TLS_CERT_FILE": str(certs.server.cert),
        "FACET_SERVER_TLS_KEY_FILE": str(certs.server.key),
        "FACET_SERVER_TLS_CLIENT_CA_FILE": str(certs.ca.cert),
        "FACET_SERVER_API_KEYS_FILE": str(keys),
        "FACET_TLS_ROOT_CERTIFICATES": str(certs.ca.cert),
        "FACET_TLS_CLIENT_CERT": str(certs.client.cert),
        "FACET_TLS_CLIENT_KEY": str(certs.client.key),
    }
    return start_server(env=env)


def test_a_client_with_the_ca_and_a_client_certificate_calls_over_mtls(
    mtls_server: ServerProcess, certs: TlsMaterial
) -> None:
    tls = {
        "root_certificates": certs.ca.cert,
        "client_cert": str(certs.client.cert),
        "client_key": certs.client.key.read_bytes(),
    }
    with sdk.Client(mtls_server.address, api_key="alice-secret", **tls) as client:
        assert client.tls
        vectors = client.embed(["a sentence over mTLS"])
    assert vectors.shape == (1, 384) and np.isfinite(vectors).all()


async def test_the_async_client_takes_the_same_arguments(mtls_server: ServerProcess, certs: TlsMaterial) -> None:
    tls = {
        "root_certificates": certs.ca.cert.read_bytes(),
        "client_cert": certs.client.cert,
        "client_key": certs.client.key,
    }
    async with sdk.AsyncClient(mtls_server.address, api_key="alice-secret", **tls) as client:
        assert (await client.embed(["async over mTLS"])).shape == (1, 384)


def test_the_facet_tls_variables_configure_a_client(
    mtls_server: ServerProcess, certs: TlsMaterial, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACET_TLS_ROOT_CERTIFICATES", str(certs.ca.cert))  # implies TLS
    monkeypatch.setenv("FACET_TLS_CLIENT_CERT", str(certs.client.cert))
    monkeypatch.setenv("FACET_TLS_CLIENT_KEY", str(certs.client.key))
    monkeypatch.setenv("FACET_API_KEY", "alice-secret")
    with sdk.Client(mtls_server.address) as client:
        assert client.embed(["configured by the environment"]).shape == (1, 384)


def test_the_api_key_is_still_required_over_mtls(mtls_server: ServerProcess, certs: TlsMaterial) -> None:
    tls = {"root_certificates": certs.ca.cert, "client_cert": certs.client.cert, "client_key": certs.client.key}
    for key in ("", "mallory"):
        with (
            sdk.Client(mtls_server.address, api_key=key, **tls) as client,
            pytest.raises(sdk.Unauthenticated, match="API key"),
        ):
            client.embed(["no key"])


def test_a_plaintext_client_is_told_the_server_may_need_tls(
    mtls_server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FACET_TLS", raising=False)
    with sdk.Client(mtls_server.address, api_key="alice-secret", retry=NO_RETRY) as client:
        assert not client.tls
        with pytest.raises(sdk.Unavailable, match=r"if it uses TLS, connect with tls=True \(FACET_TLS=1\)"):
            client.embed(["plaintext"])


@pytest.mark.parametrize("client_cert", ["none", "untrusted"])
def test_a_client_without_a_trusted_certificate_is_told_about_mtls(
    mtls_server: ServerProcess, certs: TlsMaterial, client_cert: str
) -> None:
    pair = (
        {"client_cert": certs.untrusted_client.cert, "client_key": certs.untrusted_client.key}
        if client_cert == "untrusted"
        else {}
    )
    with sdk.Client(
        mtls_server.address, api_key="alice-secret", root_certificates=certs.ca.cert, retry=NO_RETRY, **pair
    ) as client:
        with pytest.raises(
            sdk.Unavailable, match=r"requires client certificates \(mTLS\), pass client_cert= and client_key="
        ):
            client.embed(["no certificate"])


def test_a_key_over_its_rate_gets_retry_after_s_and_is_not_retried(
    mtls_server: ServerProcess, certs: TlsMaterial, monkeypatch: pytest.MonkeyPatch
) -> None:
    pauses: list[float] = []
    monkeypatch.setattr(_transport, "_pause", pauses.append)
    tls = {"root_certificates": certs.ca.cert, "client_cert": certs.client.cert, "client_key": certs.client.key}
    with sdk.Client(mtls_server.address, api_key="limited-secret", **tls) as client:
        client.embed(["the burst's one call"])
        with pytest.raises(
            sdk.ResourceExhausted, match=r"API key 'limited' is over its rate limit .*requests_per_s"
        ) as refused:
            client.embed(["one too many"])
    assert refused.value.retry_after_s is not None and 0 < refused.value.retry_after_s <= 100  # 0.01 calls/s
    assert pauses == []  # RESOURCE_EXHAUSTED is the caller's to handle, never retried


# -- the arguments (no server) --------------------------------------------------------------------


def test_tls_arguments_are_checked_naming_the_argument(
    certs: TlsMaterial, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("FACET_TLS", "FACET_TLS_ROOT_CERTIFICATES", "FACET_TLS_CLIENT_CERT", "FACET_TLS_CLIENT_KEY"):
        monkeypatch.delenv(name, raising=False)
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("hello")
    cases: list[tuple[dict[str, object], str]] = [
        ({"client_cert": certs.client.cert}, r"client_key \(FACET_TLS_CLIENT_KEY\) is missing: client_cert needs it"),
        ({"client_key": certs.client.key}, r"client_cert \(FACET_TLS_CLIENT_CERT\) is missing: client_key needs it"),
        ({"root_certificates": tmp_path / "nowhere.crt"}, r"root_certificates: no file at .*nowhere\.crt"),
        ({"root_certificates": str(not_pem)}, r"root_certificates: .*notes\.txt is not a PEM file"),
        ({"root_certificates": 42}, r"root_certificates must be PEM bytes, a path"),
        ({"tls": False, "root_certificates": certs.ca.cert}, r"tls=False contradicts root_certificates"),
        ({"tls": "yes"}, r"tls must be True, False or None"),
    ]
    for arguments, message in cases:
        with pytest.raises(sdk.InvalidArgument, match=message):
            sdk.Client(**arguments)  # type: ignore[arg-type]
    monkeypatch.setenv("FACET_TLS_CLIENT_CERT", str(certs.client.cert))
    with pytest.raises(
        sdk.InvalidArgument, match=r"client_key \(FACET_TLS_CLIENT_KEY\) is missing: FACET_TLS_CLIENT_CERT needs it"
    ):
        sdk.AsyncClient()
    monkeypatch.delenv("FACET_TLS_CLIENT_CERT")
    monkeypatch.setenv("FACET_TLS", "maybe")
    with pytest.raises(sdk.InvalidArgument, match=r"FACET_TLS must be 1/true/yes/on or 0/false/no/off, got 'maybe'"):
        sdk.Client()
    monkeypatch.setenv("FACET_TLS", "1")
    assert sdk.Client().tls and not sdk.Client(tls=False).tls
    monkeypatch.setenv("FACET_TLS_ROOT_CERTIFICATES", str(tmp_path / "gone.crt"))
    with pytest.raises(sdk.InvalidArgument, match=r"FACET_TLS_ROOT_CERTIFICATES: no file at .*gone\.crt"):
        sdk.Client()


def test_mixed_up_pem_files_are_named_in_the_constructor(
    certs: TlsMaterial, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The usual mistakes with certificate files are one InvalidArgument naming the argument and
    what to fix, before any connection (not gRPC's 'Failed to create security handshaker')."""
    for name in ("FACET_TLS", "FACET_TLS_ROOT_CERTIFICATES", "FACET_TLS_CLIENT_CERT", "FACET_TLS_CLIENT_KEY"):
        monkeypatch.delenv(name, raising=False)
    encrypted = write_encrypted_key(certs.client, tmp_path / "encrypted.key")
    der = tmp_path / "ca.der"
    der.write_bytes(b"0\x82\x01\x86" + b"\x00" * 64)
    mtls = {"root_certificates": certs.ca.cert, "client_cert": certs.client.cert, "client_key": certs.client.key}
    cases: list[tuple[dict[str, object], str]] = [
        ({**mtls, "client_cert": certs.client.key, "client_key": certs.client.cert},
         r"client_cert: .*client\.key holds a private key, not a certificate \(certificate and key swapped\?\)"),
        ({"root_certificates": certs.ca.key}, r"root_certificates: .*ca\.key holds a private key, not a certificate"),
        ({**mtls, "client_key": encrypted}, r"client_key: .*encrypted\.key holds an encrypted private key; give it unencrypted"),
        ({**mtls, "client_key": certs.server.key},
         r"client_cert / client_key: not a certificate and its own private key \(KEY_VALUES_MISMATCH\)"),
        ({"root_certificates": der}, r"root_certificates: .*ca\.der is not a PEM file \(no '-----BEGIN' line; DER\?"),
        ({"root_certificates": ""}, r"root_certificates is an empty path"),
        ({"root_certificates": f"{certs.ca.cert} "}, r"no file at '.*ca\.crt ' \(the value has leading or trailing spaces\)"),
    ]  # fmt: skip
    for arguments, message in cases:
        with pytest.raises(sdk.InvalidArgument, match=message):
            sdk.Client(**arguments)  # type: ignore[arg-type]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(sdk.InvalidArgument, match=rf"root_certificates: no file at '{tmp_path}/certs/ca\.crt'"):
        sdk.Client(root_certificates="certs/ca.crt")  # a relative path: the message says where it was looked for


def test_pem_text_given_as_str_is_taken_as_the_certificate(mtls_server: ServerProcess, certs: TlsMaterial) -> None:
    client = sdk.Client(
        mtls_server.address,
        api_key="alice-secret",
        retry=NO_RETRY,
        root_certificates=certs.ca.cert.read_text(),
        client_cert=certs.client.cert.read_text(),
        client_key=certs.client.key.read_text(),
    )
    with client:
        assert client.embed(["pem text"]).shape == (1, 384)


@pytest.mark.parametrize(
    ("details", "hint"),
    [  # the details gRPC gave against a real server (a certificate from another CA of the same name, an expired one)
        ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Tls handshake failed "
         "(TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1a000064:ECDSA routines:OPENSSL_internal:BAD_SIGNATURE: "
         "certificate signature failure: OK", "is not signed by root_certificates"),
        ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Tls handshake failed "
         "(TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:"
         "CERTIFICATE_VERIFY_FAILED: certificate has expired: OK", "the server's certificate has expired"),
        ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Failed to create security "
         "handshaker.", "client_key the unencrypted private key of client_cert"),
    ],
)  # fmt: skip
def test_a_failed_handshake_is_explained_by_its_cause(details: str, hint: str) -> None:
    from sdk._tls import connection_hint

    explained = connection_hint(details, tls=True)
    assert hint in explained and "mTLS" not in explained
