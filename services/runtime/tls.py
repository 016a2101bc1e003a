"""TLS and mTLS for a service's one port, from the `server.tls_*` config keys.

    credentials = server_credentials(config.server)   # None: plaintext
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)

- `server.tls_cert_file` + `server.tls_key_file` (PEM): TLS. Health and reflection are served on
  the same port, so they need TLS too.
- `server.tls_client_ca_file` (PEM) on top: mTLS. A client must present a certificate that this CA
  signed; the handshake fails otherwise (the client sees UNAVAILABLE before any call is made).

Each file is read and checked here, at startup, with Python's own `ssl` module (no extra
dependency): a missing or unreadable file, a file that is not PEM, a key that does not belong to
its certificate each raise a one-line `ConfigError` naming the config key and the path.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from services.runtime.config import ConfigError, ServerConfig


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None


def _check_pem(data: bytes, path: str, key: str, what: str) -> None:
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{key}: {path} is not a PEM file (no '-----BEGIN' line); it must hold {what}")


def _check_pair(cert_file: str, key_file: str) -> None:
    """The certificate parses and the key is its own (OpenSSL's check, via `ssl`)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"server.tls_cert_file / server.tls_key_file: {cert_file} and {key_file} are not a valid PEM certificate "
            f"and its private key ({exc.reason or exc}); check that the key belongs to the certificate and is not encrypted"
        ) from None


def _check_ca(ca_file: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=ca_file)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"server.tls_client_ca_file: {ca_file} holds no valid PEM CA certificate ({exc.reason or exc})"
        ) from None


def server_credentials(server: ServerConfig) -> grpc.ServerCredentials | None:
    """The port's credentials: None for plaintext (no `server.tls_cert_file`), else TLS, and mTLS
    (client certificates required and verified) when `server.tls_client_ca_file` is set.

    Raises:
        ConfigError: a file cannot be read or is not valid PEM, or the key is not the
            certificate's; the message names the config key and the path.
    """
    if not server.tls_cert_file:
        return None
    cert = _read(server.tls_cert_file, "server.tls_cert_file")
    key = _read(server.tls_key_file, "server.tls_key_file")
    _check_pem(cert, server.tls_cert_file, "server.tls_cert_file", "the server's certificate (chain)")
    _check_pem(key, server.tls_key_file, "server.tls_key_file", "the certificate's private key")
    _check_pair(server.tls_cert_file, server.tls_key_file)
    client_ca = None
    if server.tls_client_ca_file:
        client_ca = _read(server.tls_client_ca_file, "server.tls_client_ca_file")
        _check_pem(
            client_ca, server.tls_client_ca_file, "server.tls_client_ca_file", "the CA that signs client certificates"
        )
        _check_ca(server.tls_client_ca_file)
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )
