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
import ssl
import tempfile
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


CERTIFICATE = "certificate"
PRIVATE_KEY = "private key"


def pem_problem(data: bytes, expected: str) -> str | None:
    """What is wrong with PEM `data` that should hold a `expected` (CERTIFICATE or PRIVATE_KEY), or None.

    Catches the usual mix-ups before TLS libraries fail with an opaque error: not PEM at all (DER,
    an empty file), a private key where a certificate belongs or the reverse (swapped files), and
    an encrypted private key (gRPC and the servers cannot ask for its passphrase).

    Args:
        data: the file's bytes.
        expected: CERTIFICATE or PRIVATE_KEY.
    Returns:
        A phrase to follow the file's name ("is not PEM ..."), or None when it looks right.
    """
    if not data.strip():
        return "is empty"
    if b"-----BEGIN " not in data:
        return (
            "is not a PEM file (no '-----BEGIN' line; DER? convert it: openssl x509 (or pkey) -inform DER -outform PEM)"
        )
    has_cert = b"-----BEGIN CERTIFICATE-----" in data or b"-----BEGIN TRUSTED CERTIFICATE-----" in data
    has_key = b"PRIVATE KEY-----" in data
    if expected == CERTIFICATE and not has_cert:
        if has_key:
            return "holds a private key, not a certificate (certificate and key swapped?)"
        return "holds no '-----BEGIN CERTIFICATE-----' block"
    if expected == PRIVATE_KEY:
        if b"ENCRYPTED" in data:
            return (
                "holds an encrypted private key; give it unencrypted "
                "(openssl pkey -in KEY -out KEY.plain, and keep that file private)"
            )
        if not has_key:
            if has_cert:
                return "holds a certificate, not a private key (certificate and key swapped?)"
            return "holds no '-----BEGIN ... PRIVATE KEY-----' block"
    return None


def _pem(value: PemSource, name: str, expected: str) -> bytes:
    """PEM bytes from bytes, PEM text or a path; `name` is the argument (or variable) for the message."""
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
        where = "the bytes given"
    elif isinstance(value, str) and "-----BEGIN " in value:
        data = value.encode()  # PEM text itself, e.g. read with open(path).read()
        where = "the PEM text given"
    elif isinstance(value, (str, os.PathLike)):
        if not os.fspath(value):
            raise InvalidArgument(f"{name} is an empty path (give PEM bytes or the path of a PEM file)")
        path = Path(value).expanduser().absolute()
        spaces = " (the value has leading or trailing spaces)" if os.fspath(value) != os.fspath(value).strip() else ""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise InvalidArgument(
                f"{name}: no file at {str(path)!r}{spaces} (give PEM bytes or the path of a PEM file)"
            ) from None
        except OSError as exc:
            raise InvalidArgument(f"{name}: cannot read {str(path)!r}{spaces}: {exc.strerror or exc}") from None
        where = str(path)
    else:
        raise InvalidArgument(
            f"{name} must be PEM bytes, a path (str or os.PathLike) or None, got {type(value).__name__}"
        )
    problem = pem_problem(data, expected)
    if problem is not None:
        raise InvalidArgument(f"{name}: {where} {problem}")
    return data


def key_pair_problem(cert: bytes, key: bytes) -> str | None:
    """Whether PEM `key` is the private key of PEM `cert` (OpenSSL's check, via `ssl`): None when
    it is, else the reason. The files are written to a private temporary folder for `ssl`, which
    reads only paths."""
    with tempfile.TemporaryDirectory() as folder:
        cert_path, key_path = Path(folder, "cert.pem"), Path(folder, "key.pem")
        cert_path.write_bytes(cert)
        key_path.touch(mode=0o600)
        key_path.write_bytes(key)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert_path, key_path, password=_no_password)
        except (ssl.SSLError, ValueError) as exc:
            return str(getattr(exc, "reason", None) or exc)
    return None


def _no_password() -> bytes:
    raise ValueError("the private key is encrypted")


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
    roots = None if root is None else _pem(root, root_name, CERTIFICATE)
    chain = None if cert is None else _pem(cert, cert_name, CERTIFICATE)
    private = None if key is None else _pem(key, key_name, PRIVATE_KEY)
    if chain is not None and private is not None:
        mismatch = key_pair_problem(chain, private)
        if mismatch is not None:
            raise InvalidArgument(
                f"{cert_name} / {key_name}: not a certificate and its own private key ({mismatch}); "
                "check that the key belongs to the certificate"
            )
    return grpc.ssl_channel_credentials(root_certificates=roots, private_key=private, certificate_chain=chain)


def connection_hint(details: str, tls: bool) -> str:
    """What to check when a connection failed in a way a TLS mismatch causes ("" when it does not look so).

    Args:
        details: the gRPC status details of an UNAVAILABLE call.
        tls: whether the client used TLS.
    """
    if "failed to connect" not in details:
        return ""
    if "Failed to create security handshaker" in details:
        return (
            " [the client's TLS material could not be used: root_certificates must hold PEM certificates, and "
            "client_key the unencrypted private key of client_cert]"
        )
    if not any(m in details for m in ("Tls handshake failed", "Socket closed", "WRONG_VERSION_NUMBER", "Hostname")):
        return ""
    if not tls:
        return (
            " [the server closed the connection: if it uses TLS, connect with tls=True (FACET_TLS=1) "
            "and root_certificates= its CA (FACET_TLS_ROOT_CERTIFICATES)]"
        )
    return f" [{server_certificate_problem(details) or _CLIENT_CERTIFICATE_HINT}]"


_CLIENT_CERTIFICATE_HINT = (
    "the server ended the TLS handshake: if it requires client certificates (mTLS), pass client_cert= and "
    "client_key= signed by its CA, currently valid and allowed for client auth (FACET_TLS_CLIENT_CERT, "
    "FACET_TLS_CLIENT_KEY)"
)

# What the client's own check of the server's certificate reports (BoringSSL's words) -> what to fix.
_SERVER_CERTIFICATE_FAILURES = (
    ("WRONG_VERSION_NUMBER", "the server does not speak TLS: connect without tls=True / FACET_TLS"),
    (
        "Hostname Verification",
        "the server's certificate does not name the host of the address: connect to a name it carries",
    ),
    ("has expired", "the server's certificate has expired: renew it on the server"),
    (
        "not yet valid",
        "the server's certificate is not valid yet (its start date is in the future, or a clock is wrong)",
    ),
    ("self signed certificate", "the server's certificate is self-signed: pass it (or its CA) as root_certificates"),
    ("self-signed certificate", "the server's certificate is self-signed: pass it (or its CA) as root_certificates"),
    ("BAD_SIGNATURE", "the server's certificate is not signed by root_certificates (another CA with the same name?)"),
    (
        "signature failure",
        "the server's certificate is not signed by root_certificates (another CA with the same name?)",
    ),
    (
        "CERTIFICATE_VERIFY_FAILED",
        "the server's certificate is not signed by root_certificates, or not for this host name",
    ),
)


def server_certificate_problem(details: str) -> str | None:
    """The client-side reason a TLS handshake failed on the server's certificate, in words that say what
    to fix, or None when the details show none (the server ended the handshake: mTLS, usually).

    Args:
        details: the gRPC status details of an UNAVAILABLE call.
    """
    for marker, hint in _SERVER_CERTIFICATE_FAILURES:
        if marker in details:
            return hint
    return None
