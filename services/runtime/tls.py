"""TLS and mTLS for a service's one port, from the `server.tls_*` config keys.

    credentials = server_credentials(config.server)   # None: plaintext
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)

- `server.tls_cert_file` + `server.tls_key_file` (PEM): TLS. Health and reflection are served on
  the same port, so they need TLS too.
- `server.tls_client_ca_file` (PEM) on top: mTLS. A client must present a certificate that this CA
  signed; the handshake fails otherwise (the client sees UNAVAILABLE before any call is made).

Each file is read and checked here, at startup, with Python's own `ssl` module (no extra
dependency): a missing or unreadable file, a file that is not PEM, a certificate and key swapped,
an encrypted key (never a passphrase prompt), a key that does not belong to its certificate, an
expired server certificate, a client CA file without a CA certificate each raise a one-line
`ConfigError` naming the config key and the path.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path

import grpc

from sdk._tls import CERTIFICATE, PRIVATE_KEY, pem_problem
from services.runtime.config import ConfigError, ServerConfig


def shown_path(path: str) -> str:
    """`path` for a one-line message: quoted when it has spaces or control characters (a stray
    space or newline in an environment variable), and where a relative path was looked for."""
    text = path if path.isprintable() and path == path.strip() else repr(path)
    if text != path:
        text += " (mind the spaces or line breaks in the value)"
    if not Path(path).is_absolute():
        text += f" (relative to {Path.cwd()})"
    return text


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {shown_path(path)}: {exc.strerror or exc}") from None


def _check_pem(data: bytes, path: str, key: str, expected: str, what: str) -> None:
    """Not PEM, empty, a key where a certificate belongs (or the reverse), an encrypted key: one line."""
    problem = pem_problem(data, expected)
    if problem is not None:
        raise ConfigError(f"{key}: {path} {problem}; it must hold {what}")


def _no_password() -> bytes:
    # Without a callback OpenSSL asks for an encrypted key's passphrase on the terminal (a hang).
    raise ValueError("the private key is encrypted")


def _check_pair(cert_file: str, key_file: str) -> None:
    """The certificate parses and the key is its own (OpenSSL's check, via `ssl`)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_password)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(
            f"server.tls_cert_file / server.tls_key_file: {cert_file} and {key_file} are not a valid PEM certificate "
            f"and its private key ({getattr(exc, 'reason', None) or exc}); check that the key belongs to the "
            "certificate and is not encrypted"
        ) from None


def _check_not_expired(cert_file: str, now: float | None = None) -> None:
    """The first certificate of the file (the server's own) has not expired: every handshake would fail."""
    decode = getattr(ssl._ssl, "_test_decode_cert", None)  # type: ignore[attr-defined]  # CPython's decoder
    if decode is None:
        return
    try:
        not_after = ssl.cert_time_to_seconds(decode(cert_file)["notAfter"])
    except (ssl.SSLError, ValueError, KeyError, OSError):
        return  # _check_pair has reported anything unreadable
    if not_after < (time.time() if now is None else now):
        expired = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(not_after))
        raise ConfigError(
            f"server.tls_cert_file: the certificate in {cert_file} expired on {expired}; every client would refuse "
            "it: renew it (and restart)"
        )


def certificate_names(cert_file: str) -> list[str]:
    """The names the server's certificate (the file's first) carries, as "DNS:host" and
    "IP Address:127.0.0.1" (its subjectAltName): clients must connect to one of them. Logged when
    the service starts serving, since a certificate for the wrong host starts fine and then fails
    every handshake. Empty when the file cannot be decoded here."""
    decode = getattr(ssl._ssl, "_test_decode_cert", None)  # type: ignore[attr-defined]  # CPython's decoder
    if decode is None:
        return []
    try:
        return [f"{kind}:{value}" for kind, value in decode(cert_file).get("subjectAltName", ())]
    except (ssl.SSLError, ValueError, OSError):
        return []


def _check_ca(ca_file: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=ca_file)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"server.tls_client_ca_file: {ca_file} holds no valid PEM CA certificate ({exc.reason or exc})"
        ) from None
    if not context.cert_store_stats().get("x509_ca"):
        raise ConfigError(
            f"server.tls_client_ca_file: {ca_file} holds no CA certificate (basicConstraints CA:TRUE), only "
            "certificates that cannot sign others (a client's or a server's?); give the CA that signs the client "
            "certificates"
        )


def server_credentials(server: ServerConfig) -> grpc.ServerCredentials | None:
    """The port's credentials: None for plaintext (no `server.tls_cert_file`), else TLS, and mTLS
    (client certificates required and verified) when `server.tls_client_ca_file` is set.

    Raises:
        ConfigError: a file cannot be read or is not valid PEM, the certificate and key are
            swapped, the key is encrypted or not the certificate's, the certificate has expired, or
            the client CA file holds no CA; the message names the config key and the path.
    """
    if not server.tls_cert_file:
        return None
    cert = _read(server.tls_cert_file, "server.tls_cert_file")
    key = _read(server.tls_key_file, "server.tls_key_file")
    _check_pem(cert, server.tls_cert_file, "server.tls_cert_file", CERTIFICATE, "the server's certificate (chain)")
    _check_pem(key, server.tls_key_file, "server.tls_key_file", PRIVATE_KEY, "the certificate's private key")
    _check_pair(server.tls_cert_file, server.tls_key_file)
    _check_not_expired(server.tls_cert_file)
    client_ca = None
    if server.tls_client_ca_file:
        client_ca = _read(server.tls_client_ca_file, "server.tls_client_ca_file")
        _check_pem(
            client_ca,
            server.tls_client_ca_file,
            "server.tls_client_ca_file",
            CERTIFICATE,
            "the CA that signs client certificates",
        )
        _check_ca(server.tls_client_ca_file)
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )
