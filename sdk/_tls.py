"""TLS for the SDK's channels: the client arguments `tls`, `root_certificates`, `client_cert`,
`client_key`, their `FACET_TLS*` environment variables, and the hint added to a connection
failure that looks like a TLS mismatch.

- `tls=None` reads `FACET_TLS` (1/true/yes/on or 0/false/no/off; unset: off), and is on anyway
  when root certificates or a client certificate are given (argument or environment).
- `root_certificates`: the CA(s) that signed the server's certificate, PEM bytes or a path;
  None reads `FACET_TLS_ROOT_CERTIFICATES`, else the system's trust store (gRPC's default roots).
- `client_cert` and `client_key` (mTLS): the client's certificate and its private key, PEM bytes
  or paths, both or neither; None reads `FACET_TLS_CLIENT_CERT` / `FACET_TLS_CLIENT_KEY`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import grpc

from sdk._errors import InvalidArgument

TLS_ENV = "FACET_TLS"
PEM_ENV = {
    "root_certificates": "FACET_TLS_ROOT_CERTIFICATES",
    "client_cert": "FACET_TLS_CLIENT_CERT",
    "client_key": "FACET_TLS_CLIENT_KEY",
}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}

PemSource = bytes | str | os.PathLike[str]


def _pem(value: PemSource, name: str) -> bytes:
    """PEM bytes from bytes or a path; `name` is the argument (or variable) for the message."""
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
        where = "the bytes given"
    elif isinstance(value, (str, os.PathLike)):
        path = Path(value).expanduser()
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise InvalidArgument(f"{name}: no file at {path} (give PEM bytes or the path of a PEM file)") from None
        except OSError as exc:
            raise InvalidArgument(f"{name}: cannot read {path}: {exc.strerror or exc}") from None
        where = str(path)
    else:
        raise InvalidArgument(
            f"{name} must be PEM bytes, a path (str or os.PathLike) or None, got {type(value).__name__}"
        )
    if b"-----BEGIN " not in data:
        raise InvalidArgument(f"{name}: {where} is not PEM (no '-----BEGIN' line)")
    return data


def _given(value: PemSource | None, name: str, env: Mapping[str, str]) -> tuple[PemSource | None, str]:
    """The argument, else its environment variable's path; and the name to blame in errors."""
    if value is not None:
        return value, name
    path = env.get(PEM_ENV[name])
    return (path, PEM_ENV[name]) if path else (None, name)


def channel_credentials(
    tls: bool | None,
    root_certificates: PemSource | None,
    client_cert: PemSource | None,
    client_key: PemSource | None,
    env: Mapping[str, str] | None = None,
) -> grpc.ChannelCredentials | None:
    """The channels' credentials, or None for plaintext (the rules: the module docstring).

    Raises:
        InvalidArgument: `tls` not a bool or None; `FACET_TLS` not a yes/no word; `tls=False` with
            certificates given; `client_cert` without `client_key` or the reverse; a path with no
            file; data that is not PEM. The message names the argument or the variable.
    """
    env = os.environ if env is None else env
    if tls is not None and not isinstance(tls, bool):
        raise InvalidArgument(f"tls must be True, False or None (FACET_TLS), got {type(tls).__name__}")
    explicit = [
        n
        for n, v in (("root_certificates", root_certificates), ("client_cert", client_cert), ("client_key", client_key))
        if v is not None
    ]
    if tls is False:
        if explicit:
            raise InvalidArgument(
                f"tls=False contradicts {', '.join(explicit)}: certificates are for TLS; drop them or tls=False"
            )
        return None
    if tls is None:
        flag = env.get(TLS_ENV, "").strip().lower()
        if flag not in _TRUE | _FALSE:
            raise InvalidArgument(f"{TLS_ENV} must be 1/true/yes/on or 0/false/no/off, got {env[TLS_ENV]!r}")
        tls = flag in _TRUE
    root, root_name = _given(root_certificates, "root_certificates", env)
    cert, cert_name = _given(client_cert, "client_cert", env)
    key, key_name = _given(client_key, "client_key", env)
    if (cert is None) != (key is None):
        missing, present = ("client_key", cert_name) if key is None else ("client_cert", key_name)
        missing = f"{missing} ({PEM_ENV[missing]})"
        raise InvalidArgument(
            f"{missing} is missing: {present} needs it (mTLS takes the client certificate and its private key together)"
        )
    if not (tls or root is not None or cert is not None):
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=None if root is None else _pem(root, root_name),
        private_key=None if key is None else _pem(key, key_name),
        certificate_chain=None if cert is None else _pem(cert, cert_name),
    )


def connection_hint(details: str, tls: bool) -> str:
    """What to check when a connection failed in a way a TLS mismatch causes ("" when it does not look so).

    Args:
        details: the gRPC status details of an UNAVAILABLE call.
        tls: whether the client used TLS.
    """
    if "failed to connect" in details and any(
        m in details for m in ("Tls handshake failed", "Socket closed", "WRONG_VERSION_NUMBER")
    ):
        if not tls:
            return (
                " [the server closed the connection: if it uses TLS, connect with tls=True (FACET_TLS=1) "
                "and root_certificates= its CA (FACET_TLS_ROOT_CERTIFICATES)]"
            )
        if "WRONG_VERSION_NUMBER" in details:
            return " [the server does not speak TLS: connect without tls=True / FACET_TLS]"
        if "CERTIFICATE_VERIFY_FAILED" in details:
            return " [the server's certificate is not signed by root_certificates, or not for this host name]"
        return (
            " [the server ended the TLS handshake: if it requires client certificates (mTLS), pass "
            "client_cert= and client_key= signed by its CA (FACET_TLS_CLIENT_CERT, FACET_TLS_CLIENT_KEY)]"
        )
    return ""
