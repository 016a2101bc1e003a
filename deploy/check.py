"""`facet check`: is each service up, and does it answer a real call? (the Helm test, and a smoke check)

    facet check                                        every capability at its default address
    facet check --services retrieval retrieval=10.0.0.7:50053
    facet check --address-sae gpu-1:50051 --api-key "$KEY" --tls --root-certificates ca.crt
    facet check --health-only --services sae sae=localhost:50051 --tls \
        --root-certificates /etc/facet/tls/ca.crt --tls-server-name facet-sae.ns.svc   # a TLS probe

For each requested capability (registry rows, in registry order) it asks the service's gRPC health
service for the capability's gRPC service (`facet.v1.Sae`, ...) and, when that is SERVING, makes one
cheap real SDK call: the `check(client) -> str` function of the module of the capability's demo
(`services.<name>.demo:check`, beside the `run_demo` its registry row names). It prints one line per
service and exits 0 when all pass, 1 naming each that failed, 2 on a usage error.

SDK arguments relied on: `sdk.Client(api_key=, timeout_s=, retry=, <capability>=address)` and, only
when TLS is asked for, `tls=True, root_certificates=bytes, client_cert=bytes, client_key=bytes`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# The SDK's TLS environment (agreed names): defaults of the TLS flags, as the SDK reads them.
TLS_ENV = "FACET_TLS"
TLS_ROOT_CERTIFICATES_ENV = "FACET_TLS_ROOT_CERTIFICATES"
TLS_CLIENT_CERT_ENV = "FACET_TLS_CLIENT_CERT"
TLS_CLIENT_KEY_ENV = "FACET_TLS_CLIENT_KEY"
DEFAULT_TIMEOUT_S = 10.0
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}
# gRPC target forms passed through as they are (a name resolver's scheme), not HOST:PORT.
TARGET_SCHEMES = ("dns:", "unix:", "unix-abstract:", "ipv4:", "ipv6:", "vsock:")


class UsageError(ValueError):
    """A command line `facet check` cannot run (the message says what to change)."""


@dataclasses.dataclass(frozen=True)
class Tls:
    """How to reach the services: plaintext, TLS, or mTLS (a client certificate).

    Attributes:
        enabled: use TLS at all.
        root_certificates: PEM of the CA(s) the servers' certificates are checked against; None
            takes gRPC's default roots.
        client_cert: PEM certificate chain presented to the server (mTLS); with client_key.
        client_key: PEM private key of client_cert.
        server_name: the name the server's certificate is checked for instead of the address's
            host (a probe connecting to localhost); health checks only.
    """

    enabled: bool = False
    root_certificates: bytes | None = None
    client_cert: bytes | None = None
    client_key: bytes | None = None
    server_name: str | None = None

    def channel(self, address: str) -> grpc.Channel:
        """A channel to `address` for the health check, secure when TLS is on."""
        if not self.enabled:
            return grpc.insecure_channel(address)
        credentials = grpc.ssl_channel_credentials(self.root_certificates, self.client_key, self.client_cert)
        options = [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []
        return grpc.secure_channel(address, credentials, options=options)

    def sdk_arguments(self) -> dict[str, Any]:
        """The TLS keyword arguments of `sdk.Client`, only those that are set (a plaintext check
        passes none, so it runs with any SDK version)."""
        if not self.enabled:
            return {}
        given = {
            "root_certificates": self.root_certificates,
            "client_cert": self.client_cert,
            "client_key": self.client_key,
        }
        return {"tls": True, **{name: value for name, value in given.items() if value is not None}}


@dataclasses.dataclass(frozen=True)
class Result:
    """One service's outcome.

    Attributes:
        service: the capability's name.
        address: the `host:port` checked.
        ok: health SERVING and the SDK call answered.
        detail: what the call returned, or what failed.
    """

    service: str
    address: str
    ok: bool
    detail: str

    def line(self, width: int) -> str:
        return f"{self.service:<{width}}  {'ok' if self.ok else 'FAIL':<4}  {self.address}  {self.detail}"


def health(address: str, grpc_service: str, tls: Tls, timeout_s: float) -> str | None:
    """Ask the server at `address` whether `grpc_service` is SERVING.

    Args:
        address: `host:port`.
        grpc_service: the fully qualified gRPC service, e.g. "facet.v1.Retrieval".
        tls: how to connect.
        timeout_s: deadline of the call in seconds.
    Returns:
        None when SERVING, else what is wrong (one line).
    """
    with tls.channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=grpc_service), timeout=timeout_s)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            if code == grpc.StatusCode.NOT_FOUND:
                return f"health: this server does not serve {grpc_service} (another service's address?)"
            return f"health: {code.name}: {details}{connection_hint(details, tls)}"
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return f"health: {grpc_service} is {status} (models still loading, or shutting down)"
    return None


def connection_hint(details: str, tls: Tls) -> str:
    """What to change when a connection failed the way a TLS mismatch makes it fail ("" otherwise).

    Args:
        details: the gRPC status details of an UNAVAILABLE health check.
        tls: how the check connected.
    """
    if "failed to connect" not in details:
        return ""
    closed = any(m in details for m in ("Socket closed", "Tls handshake failed", "handshake"))
    if not tls.enabled:
        return (
            " [the server closed the connection: if it uses TLS, add --tls --root-certificates <its CA>]"
            if closed
            else ""
        )
    if "Failed to create security handshaker" in details:
        return (
            " [the TLS material could not be used: --root-certificates must hold PEM certificates, and --client-key"
            " the unencrypted private key of --client-cert]"
        )
    if "WRONG_VERSION_NUMBER" in details:
        return " [the server does not speak TLS: leave out --tls and the certificates]"
    if "Hostname Verification" in details:
        return " [the server's certificate does not name this host: use an address with a name it carries, or --tls-server-name]"
    from sdk._tls import server_certificate_problem

    problem = server_certificate_problem(details)
    if problem is not None:
        return f" [{problem.replace('root_certificates', '--root-certificates')}]"
    if closed:
        return (
            " [the TLS handshake failed: the server's certificate must be signed by --root-certificates and name the"
            " host (--tls-server-name); under mTLS give --client-cert/--client-key signed by its CA, currently valid"
            " and allowed for client auth]"
        )
    return ""


def sdk_check(name: str) -> Callable[[Any], str]:
    """The capability's one cheap real call: `check` in the module of its registry row's demo."""
    from services import registry

    module = registry.get(name).demo.partition(":")[0]
    return registry.load(f"{module}:check")  # type: ignore[no-any-return]


def check_service(
    name: str, address: str, *, tls: Tls, api_key: str | None, timeout_s: float, health_only: bool
) -> Result:
    """Health, then (unless `health_only`) the capability's SDK call, against one service.

    Args:
        name: a capability in the registry.
        address: `host:port` of its service.
        tls: how to connect.
        api_key: sent with the SDK call; None lets the SDK read FACET_API_KEY.
        timeout_s: deadline of each call in seconds.
        health_only: skip the SDK call (a probe).
    Returns:
        The outcome; never raises for a failing service.
    """
    from sdk._contract import capability

    started = time.perf_counter()
    problem = health(address, capability(name).service_name, tls, timeout_s)
    if problem is not None:
        return Result(name, address, False, problem)
    if health_only:
        return Result(name, address, True, f"SERVING ({(time.perf_counter() - started) * 1e3:.0f} ms)")
    import sdk

    address_argument: dict[str, Any] = {name: address}
    try:
        client = sdk.Client(
            api_key=api_key,
            timeout_s=timeout_s,
            retry=sdk.RetryPolicy(max_attempts=1),
            **address_argument,
            **tls.sdk_arguments(),
        )
    except TypeError as exc:  # an SDK without the TLS arguments
        return Result(name, address, False, f"SERVING, but this SDK cannot make the call: {exc}")
    try:
        with client:
            detail = sdk_check(name)(client)
    except Exception as exc:  # noqa: BLE001 - a check reports every failure, it does not crash on one
        return Result(name, address, False, f"SERVING, but the SDK call failed: {type(exc).__name__}: {exc}")
    return Result(name, address, True, f"SERVING; {detail} ({(time.perf_counter() - started) * 1e3:.0f} ms)")


def build_parser() -> argparse.ArgumentParser:
    from services import registry

    parser = argparse.ArgumentParser(
        prog="facet check",
        description="check each service's gRPC health and make one cheap SDK call; exit 1 naming the services that failed",
    )
    parser.add_argument(
        "targets", nargs="*", metavar="CAPABILITY=HOST:PORT", help="a service's address (as --address-<capability>)"
    )
    parser.add_argument(
        "--services",
        help=f"comma-separated capabilities to check (default: those given an address, else all: {','.join(registry.names())})",
    )
    for name in registry.names():
        parser.add_argument(f"--address-{name}", dest=f"address_{name}", metavar="HOST:PORT",
                            help=f"the {name} service (default: FACET_{name.upper()}_ADDR, else localhost and its default port)")  # fmt: skip
    parser.add_argument("--api-key", help="sent as `authorization: Bearer <key>` (default: FACET_API_KEY)")
    parser.add_argument(
        "--timeout-s", type=float, default=DEFAULT_TIMEOUT_S, help="deadline of each call, seconds (default 10)"
    )
    parser.add_argument("--health-only", action="store_true", help="only the health check (a probe): no SDK call")
    tls = parser.add_argument_group("TLS (defaults: the SDK's FACET_TLS_* environment)")
    tls.add_argument("--tls", action="store_true", default=None, help=f"connect with TLS (default: {TLS_ENV})")
    tls.add_argument(
        "--root-certificates",
        type=Path,
        help=f"PEM CA the servers' certificates are checked against (implies --tls; default: {TLS_ROOT_CERTIFICATES_ENV})",
    )
    tls.add_argument(
        "--client-cert",
        type=Path,
        help=f"PEM client certificate for mTLS, with --client-key (default: {TLS_CLIENT_CERT_ENV})",
    )
    tls.add_argument("--client-key", type=Path, help=f"PEM key of --client-cert (default: {TLS_CLIENT_KEY_ENV})")
    tls.add_argument(
        "--tls-server-name",
        help="check the certificate for this name instead of the address's host (with --health-only: a probe on localhost)",
    )
    return parser


def _pem(flag: str, given: Path | None, env: str, expected: str) -> bytes | None:
    from sdk._tls import pem_problem

    path = given if given is not None else (Path(os.environ[env]) if os.environ.get(env) else None)
    if path is None:
        return None
    source = flag if given is not None else env
    try:
        data = path.read_bytes()
    except OSError as exc:
        shown = path if path.is_absolute() else f"{path} (in {Path.cwd()})"
        raise UsageError(f"{source} {shown}: {exc.strerror or exc}") from None
    problem = pem_problem(data, expected)
    if problem is not None:
        raise UsageError(f"{source} {path} {problem}")
    return data


def tls_options(args: argparse.Namespace) -> Tls:
    """The TLS settings from the flags, each defaulting to the SDK's FACET_TLS_* variable.

    Raises:
        UsageError: an unreadable or mixed-up PEM file (not PEM, a key where a certificate belongs,
            an encrypted key), a client certificate without its key (or the reverse) or with
            another's key, FACET_TLS not a yes/no word, --tls-server-name without --health-only.
    """
    from sdk._tls import CERTIFICATE, PRIVATE_KEY, key_pair_problem

    roots = _pem("--root-certificates", args.root_certificates, TLS_ROOT_CERTIFICATES_ENV, CERTIFICATE)
    cert = _pem("--client-cert", args.client_cert, TLS_CLIENT_CERT_ENV, CERTIFICATE)
    key = _pem("--client-key", args.client_key, TLS_CLIENT_KEY_ENV, PRIVATE_KEY)
    if (cert is None) != (key is None):
        raise UsageError("--client-cert and --client-key go together (mTLS needs both)")
    if cert is not None and key is not None:
        mismatch = key_pair_problem(cert, key)
        if mismatch is not None:
            raise UsageError(f"--client-key is not the private key of --client-cert ({mismatch})")
    flag = args.tls
    if flag is None:
        word = os.environ.get(TLS_ENV, "").strip().lower()
        if word not in _TRUE | _FALSE:
            raise UsageError(f"{TLS_ENV} must be 1/true/yes/on or 0/false/no/off, got {os.environ[TLS_ENV]!r}")
        flag = word in _TRUE
    enabled = bool(flag or roots is not None or cert is not None)
    if args.tls_server_name and not args.health_only:
        raise UsageError(
            "--tls-server-name goes with --health-only (the SDK checks the certificate for the address's host)"
        )
    if args.tls_server_name and not enabled:
        raise UsageError("--tls-server-name needs --tls")
    return Tls(enabled, roots, cert, key, args.tls_server_name)


def check_address(address: str, source: str) -> str:
    """`address` when it is HOST:PORT with a port in 1-65535 (or a gRPC target with a scheme such
    as dns:/// or unix:), else a UsageError naming `source` (the flag, target or variable)."""
    if address.startswith(TARGET_SCHEMES):
        return address
    example = "e.g. localhost:50053 or [::1]:50053"
    if "://" in address:
        raise UsageError(f"{source}: {address!r} is a URL; give HOST:PORT, {example}")
    host, sep, port = address.rpartition(":")
    if not sep or not host or (":" in host and not (host.startswith("[") and host.endswith("]"))):
        raise UsageError(f"{source}: {address!r} is not HOST:PORT (the port is required), {example}")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UsageError(f"{source}: {address!r} has port {port!r}; a port is a number from 1 to 65535")
    return address


def addresses(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The capabilities to check and the address of each.

    Raises:
        UsageError: an unknown capability, a target not written `capability=host:port`, an
            address without a port or with one outside 1-65535 (flag, target or FACET_<CAP>_ADDR),
            an address given twice.
    """
    from sdk._contract import capability, default_address
    from services import registry

    given: dict[str, str] = {}
    for target in args.targets:
        name, sep, address = target.partition("=")
        if not sep or not name or not address:
            raise UsageError(
                f"{target!r}: write a service's address as CAPABILITY=HOST:PORT, e.g. retrieval=localhost:50053"
            )
        if name not in registry.BY_NAME:
            raise UsageError(f"{target!r}: unknown capability {name!r}; available: {', '.join(registry.names())}")
        if name in given:
            raise UsageError(f"the {name} address is given twice")
        given[name] = check_address(address, target)
    for name in registry.names():
        flag = getattr(args, f"address_{name}")
        if flag is not None:
            if name in given:
                raise UsageError(f"the {name} address is given twice (--address-{name} and {name}=...)")
            given[name] = check_address(flag, f"--address-{name}")
    if args.services is not None:
        services = [s.strip() for s in args.services.split(",")]
        unknown = [s for s in services if s not in registry.BY_NAME]
        if unknown or not all(services):
            raise UsageError(
                f"--services {args.services!r}: unknown {unknown or 'empty name'}; available: {', '.join(registry.names())}"
            )
    else:
        services = [n for n in registry.names() if n in given] or registry.names()
    where = {}
    for name in services:
        if name in given:
            where[name] = given[name]
        else:
            env = capability(name).address_env
            where[name] = check_address(default_address(name), env if os.environ.get(env) else "the default address")
    return services, where


def main(argv: list[str] | None = None) -> int:
    """Run `facet check`; returns the exit status (0 all ok, 1 a service failed, 2 usage)."""
    args = build_parser().parse_args(argv)
    if not math.isfinite(args.timeout_s) or args.timeout_s <= 0:
        print(f"facet check: --timeout-s must be a finite number of seconds > 0, got {args.timeout_s}", file=sys.stderr)
        return 2
    try:
        tls = tls_options(args)
        services, where = addresses(args)
    except UsageError as exc:
        print(f"facet check: {exc}", file=sys.stderr)
        return 2
    results = [
        check_service(
            name, where[name], tls=tls, api_key=args.api_key, timeout_s=args.timeout_s, health_only=args.health_only
        )
        for name in services
    ]
    width = max(len(r.service) for r in results)
    for result in results:
        print(result.line(width), flush=True)
    failed = [r for r in results if not r.ok]
    if failed:
        print(
            f"facet check: {len(failed)} of {len(results)} failed: "
            + "; ".join(f"{r.service} at {r.address}" for r in failed),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":  # the Helm chart's TLS probes run `python -m deploy.check --health-only ...`
    sys.exit(main())
