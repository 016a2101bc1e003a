"""The `facet` command: Facet's composition root.

    facet up [--services retrieval] [--demo]     start each service as soon as its models exist; build
                                                 the missing default models meanwhile, cheapest first
    facet up --backend triton [--triton-url H:P] the same, inference on Triton (a local server unless given)
    facet up --backend ray [--ray-address A]     the same, models as Ray Serve apps (a local head unless given)
    facet models list                            what the model repository holds
    facet models build [--services ...]          build the default models that are missing
    facet triton serve|repository                a local Triton server (python backend) on the repository
    facet train <capability> --address URL -- … a capability's training as a Ray job (logs streamed)

and each capability's own commands, from its registry row (`services.registry`), e.g.
`facet sae build`, `facet nextframe build`, `facet data simulate`, `facet models export-embedding`,
`facet eval rarb-mcr`: each hands its arguments to the module's `main` (`--help` there), and
runs it under its facet name (its usage says `facet sae build`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services import registry
from services.model_repository import Key, ModelRepository

if TYPE_CHECKING:

    from deploy.launcher import Supervisor
    from deploy.lifetime import OwnedEngine
    from services.runtime.config import FacetConfig

# the shared benchmark data beside the checkout (../shared/data), whatever the working directory
DEFAULT_BENCHMARK_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _repository() -> ModelRepository:
    from services.runtime.config import load_config

    return ModelRepository(load_config().model_repository)


def _benchmark_data(args: argparse.Namespace) -> Path | None:
    """--data, else the RAR-b folder's parent given as --parity-data (older flag), else ../shared/data."""
    if getattr(args, "data", None) is not None:
        return Path(args.data)
    if getattr(args, "parity_data", None) is not None:
        return Path(args.parity_data).parent
    return DEFAULT_BENCHMARK_DATA if DEFAULT_BENCHMARK_DATA.is_dir() else None


def build_default_models(services: list[str], benchmark_data: Path | None) -> list[str]:
    """Build each requested capability's default models that the repository lacks, cheapest
    first, with progress: its registry row's `has_defaults`, then `build_defaults` (training code,
    imported here only). A capability whose build raises is reported (traceback on stderr) and the
    next one is built.

    Returns:
        the capabilities whose build failed.
    """
    import traceback

    from tqdm import tqdm

    from services.runtime.config import load_config

    repo = _repository()
    data_dir = load_config().data_dir
    missing = [registry.get(name) for name in registry.cheapest_build_first(missing_defaults(services))]
    if not missing:
        return []
    failed = []
    print(f"facet: building the default models of {', '.join(c.name for c in missing)} into {repo.root}", flush=True)
    with tqdm(total=len(missing), unit="capability", desc="default models") as bar:
        for row in missing:
            bar.set_postfix_str(row.name)
            try:
                built = registry.load(row.build_defaults)(repo, data_dir / f"{row.name}-build", benchmark_data)
            except Exception as exc:  # noqa: BLE001 - one capability's failure must not stop the others' builds
                traceback.print_exc()
                tqdm.write(f"facet models build: building {row.name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                failed.append(row.name)
                continue
            for entry in built:
                tqdm.write(f"  {row.name}: {entry.name} v{entry.version}, parity {_parity_text(entry.metadata.get(Key.PARITY, {}))}")
            bar.update()
    return failed


# A parity record's bound figures: `min_<what>` / `<part>_min_<what>` (a lower bound the export
# reached, e.g. min_cosine), `max_<what>` / `<part>_max_<what>` (an upper bound on an error, e.g.
# max_abs_diff_torch, frame_max_abs_error).
_BOUND = re.compile(r"(?:^|_)(min|max)_")


def _parity_text(parity: Mapping[str, Any]) -> str:
    """The export's parity check (`Key.PARITY`) as one cell, from whatever figures it recorded.

    Every kind's export writes its own record; they share one convention, read here for every
    kind alike: `passed` is the verdict ("ok" / "FAILED"), and each number named with a `min_` or
    `max_` part is a bound, shown as `<name without it>≥<value>` (7 decimals: lower bounds such as
    cosines sit just under 1) or `≤<value>` (1 significant digit and exponent: errors near 0).
    Other entries (counts, data, reference, threshold) stay in `facet models list --json`.

    Args:
        parity: the record of one model version's facet.json; {} when it has none.
    Returns:
        e.g. "ok cosine≥0.9999995", "ok abs_diff_torch≤1.4e-05 abs_diff_cross_encoder≤1.4e-05",
        "relative_error≤2.1e-07"; "-" when it records neither a verdict nor a bound.
    """
    parts = []
    if isinstance(parity.get("passed"), bool):
        parts.append("ok" if parity["passed"] else "FAILED")
    for key, value in _bounds(parity):
        bound = _BOUND.search(key)
        assert bound is not None
        label = _BOUND.sub("_", key, count=1).strip("_")
        parts.append(f"{label}≥{value:.7f}" if bound.group(1) == "min" else f"{label}≤{value:.1e}")
    return " ".join(parts) or "-"


def _bounds(record: Mapping[str, Any], prefix: str = "") -> list[tuple[str, float]]:
    """The (name, number) bounds of a parity record; a bound's name on a table of numbers applies to
    each of them (`{"max_abs_diff": {"log_probs": x}}` is `max_abs_diff_log_probs`), and nested
    tables are searched too."""
    found: list[tuple[str, float]] = []
    for key, value in record.items():
        name = f"{prefix}_{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            found += _bounds(value, name)
        elif _BOUND.search(name) and isinstance(value, int | float) and not isinstance(value, bool):
            found.append((name, float(value)))
    return found


def _services(args: argparse.Namespace, command: str) -> list[str] | None:
    """--services as a list of registry names (every capability by default); None after printing
    an error for unknown names."""
    if args.services is None:
        return registry.names()
    services = [s.strip() for s in args.services.split(",")]
    if not all(services):
        print(f"facet {command}: --services {args.services!r} names an empty service; give names from {registry.names()}", file=sys.stderr)
        return None
    unknown = [s for s in services if s not in registry.BY_NAME]
    if unknown:
        print(f"facet {command}: unknown services {unknown}; available: {registry.names()}", file=sys.stderr)
        return None
    return services


def missing_defaults(services: list[str]) -> list[str]:
    """The capabilities among `services` whose default models the repository lacks (each row's
    `has_defaults`, training code imported here only).

    Raises:
        ImportError: the training extra is not installed.
    """
    repo = _repository()
    return [name for name in services if not registry.load(registry.get(name).has_defaults)(repo)]


def cmd_up(args: argparse.Namespace) -> int:
    from deploy.launcher import Security, Supervisor
    from sdk._tls import PEM_ENV
    from services.runtime.config import load_config

    services = _services(args, "up")
    if services is None:
        return 2
    config = load_config()
    log_dir = config.data_dir / "logs"
    backend = args.backend or config.backend
    # TLS and API keys: the flags, else the config (file or FACET_SERVER_* variables); the
    # launcher's own clients (health checks, demo) get the SDK's FACET_TLS* variables
    server = config.server
    security = Security(
        cert_file=args.tls_cert or server.tls_cert_file,
        key_file=args.tls_key or server.tls_key_file,
        client_ca_file=args.tls_client_ca or server.tls_client_ca_file,
        api_keys_file=args.api_keys_file or server.api_keys_file,
        api_key=config.api_key,
        ca_file=args.tls_ca or os.environ.get(PEM_ENV["root_certificates"], ""),
        client_cert_file=args.tls_client_cert or os.environ.get(PEM_ENV["client_cert"], ""),
        client_key_file=args.tls_client_key or os.environ.get(PEM_ENV["client_key"], ""),
    )
    problems = security.check(demo=args.demo)
    for problem in problems:
        print(f"facet up: {problem}", file=sys.stderr)
    if problems:
        return 2
    os.environ.update(security.client_env())
    print(f"facet: {security.describe()}", flush=True)
    try:
        supervisor = Supervisor(
            services,
            host=args.host,
            log_dir=log_dir,
            grace_period_s=config.server.grace_period_s,
            env={"FACET_BACKEND": backend, **security.service_env()},
        )
    except ValueError as exc:
        print(f"facet up: {exc}", file=sys.stderr)
        return 2
    try:
        missing = missing_defaults(services)
    except ImportError as exc:
        print(f"facet up: building default models needs the training extra ({exc}): pip install -e '.[training]'", file=sys.stderr)
        return 1
    models_changed: Callable[[], object] = lambda: None  # noqa: E731 - what an engine does when a build registered models
    with contextlib.ExitStack() as engines:
        if backend in ENGINES:  # the engine the services call: the one given, or a local one started here
            setting, given, start_local = ENGINES[backend], getattr(args, f"{backend}_address"), {"triton": _local_triton, "ray": _local_ray}[backend]
            if given:
                print(f"facet: backend {backend} at {given}", flush=True)
            else:
                try:
                    given, models_changed = engines.enter_context(start_local(config))
                except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                    print(f"facet up: {exc}", file=sys.stderr)
                    return 1
            supervisor.env[setting] = given
        if "retrieval" in services:
            store_env = _retrieval_store(args, config, engines)
            if store_env is None:
                return 1
            supervisor.env.update(store_env)
        return _run_services(args, supervisor, missing, models_changed)


def _retrieval_store(args: argparse.Namespace, config: FacetConfig, engines: contextlib.ExitStack) -> dict[str, str] | None:
    """The retrieval service's store settings for `facet up`: --retrieval-store (else
    retrieval.store) and, for Milvus, --milvus-uri (else retrieval.milvus_uri, else a local Milvus
    standalone started here, stopped on exit). None when the local Milvus cannot start."""
    from services.retrieval.config import RetrievalConfig

    section = config.section(RetrievalConfig)
    store = args.retrieval_store or section.store
    if store != "milvus":
        return {"FACET_RETRIEVAL_STORE": store}
    uri = args.milvus_uri or section.milvus_uri
    if uri:
        print(f"facet: retrieval store: Milvus at {uri}", flush=True)
    else:
        try:
            uri = engines.enter_context(_local_milvus(config))
        except (ImportError, RuntimeError, OSError) as exc:
            print(f"facet up: {exc}", file=sys.stderr)
            return None
    return {"FACET_RETRIEVAL_STORE": "milvus", "FACET_RETRIEVAL_MILVUS_URI": uri}


@contextlib.contextmanager
def _local_milvus(config: FacetConfig) -> Iterator[str]:
    """A local Milvus standalone (deploy/milvus.py), its data under <data_dir>/milvus, on
    FACET_MILVUS_PORT or Milvus' own 19530; stopped on exit, and by a watchdog when this process
    dies first. Yields its URI."""
    from deploy.milvus import LocalMilvus

    milvus = LocalMilvus(config.data_dir / "milvus", port=int(os.environ.get("FACET_MILVUS_PORT", "19530")))
    owner = _engine_owner(config, "milvus", f"Milvus standalone on {milvus.uri}")
    print(f"facet: starting a local Milvus standalone on {milvus.uri} (data {milvus.base_dir}, log {milvus.log_path})", flush=True)
    try:
        milvus.start(on_spawn=owner.record)
        yield milvus.uri
    finally:
        try:
            milvus.stop()
        finally:
            owner.release()


# backend -> the setting that points services at its engine
ENGINES = {"triton": "FACET_TRITON_URL", "ray": "FACET_RAY_ADDRESS"}


def _engine_owner(config: FacetConfig, kind: str, what: str) -> OwnedEngine:
    """The owner file of the local engine `kind` under the data directory; a stale engine that a
    killed launcher left (its owner no longer runs) is stopped here, and said so."""
    from deploy.lifetime import OwnedEngine

    owner = OwnedEngine(config.data_dir / "engines" / f"{kind}.json", what)
    if owner.stale:
        print(f"facet: {owner.stale}", flush=True)
    return owner


@contextlib.contextmanager
def _local_ray(config: FacetConfig) -> Iterator[tuple[str, Callable[[], object]]]:
    """A local Ray head (`ray start --head`, its files under <data_dir>/ray), stopped on exit, and
    by a watchdog when this process dies first; the services deploy their models on it as Ray
    Serve applications. Yields its address and what to do when models were added (nothing)."""
    import tempfile

    from deploy.ray_cluster import LocalRay

    # its port: ray.address when that names one (127.0.0.1:PORT), else Ray's 6379; the dashboard
    # (job submission) on RAY_DASHBOARD_PORT or 8265. Ray's socket paths must stay short: its
    # session files go under a short temporary folder.
    _, _, port = config.ray.address.rpartition(":")
    head = LocalRay(
        port=int(port) if port.isdigit() else 6379,
        dashboard_port=int(os.environ.get("RAY_DASHBOARD_PORT", "8265")),
        temp_dir=Path(tempfile.mkdtemp(prefix="facet-ray-", dir="/tmp")),
    )
    owner = _engine_owner(config, "ray", f"Ray head on {head.address}")
    print(f"facet: starting a local Ray head on {head.address} (dashboard {head.dashboard})", flush=True)
    try:
        head.start(on_spawn=owner.record)
        yield head.address, lambda: None
    finally:
        try:
            head.stop()
        finally:
            owner.release()


@contextlib.contextmanager
def _local_triton(config: FacetConfig) -> Iterator[tuple[str, Callable[[], object]]]:
    """A local tritonserver (python backend) on every model of the repository, stopped on exit
    (and when this process dies: see `deploy.lifetime`). Its ports follow `triton.url` (gRPC),
    with HTTP one below and metrics one above. Yields its address and what to do when a build
    added models (rewrite its repository: the services load them by name)."""
    from deploy.triton import TritonServer, write_local_repository

    work = config.data_dir / "triton"
    names = write_local_repository(_repository(), work / "repository", config)
    host, _, port = config.triton.url.rpartition(":")
    grpc_port = int(port)
    server = TritonServer(work / "repository", work, grpc_port=grpc_port, http_port=grpc_port - 1, metrics_port=grpc_port + 1)
    owner = _engine_owner(config, "triton", f"tritonserver on {server.url}")
    print(f"facet: starting tritonserver for {len(names)} models on {server.url} (log {server.log_file})", flush=True)
    try:
        server.start(on_spawn=owner.record)
        yield server.url, lambda: write_local_repository(_repository(), work / "repository", config)
    finally:
        try:
            server.stop()
        finally:
            owner.release()


def _run_services(args: argparse.Namespace, supervisor: Supervisor, missing: list[str], models_changed: Callable[[], object]) -> int:
    """Serve what is ready at once and build the rest, cheapest first, starting each service when
    its build is done; with --demo, each capability's walk-through runs as soon as it is SERVING.

    Returns:
        0, or 1 when a capability could not be built, started or demonstrated (the others still
        ran; each failure is said on stderr as it happens and again in the summary).
    """
    from deploy.launcher import DefaultModelBuilds
    from deploy.service_process import ServiceError

    started = time.monotonic()
    stop = {"now": False}

    def on_signal(signum: int, _frame: object) -> None:
        if not stop["now"]:  # the first one interrupts whatever waits (a service starting, a demo)
            stop["now"] = True
            raise _StopRequested

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    failed: dict[str, str] = {}  # capability -> what broke
    shown: dict[str, float] = {}  # capability -> seconds after start when its demo was done
    ready = [name for name in supervisor.services if name not in missing]
    builds = DefaultModelBuilds(missing, supervisor.log_dir or Path("."), _benchmark_data(args))

    def bring_up(names: list[str]) -> None:
        for name in names:
            supervisor.spawn(name)
        for name in names:
            try:
                supervisor.wait_until_serving(name)
            except ServiceError as exc:
                failed[name] = f"service {exc}"
                print(f"facet up: service {exc}", file=sys.stderr, flush=True)
                continue
            address = supervisor.endpoints()[name]
            print(f"facet: {name:<10} SERVING on {address}  (FACET_{name.upper()}_ADDR={address})", flush=True)
        for name in names:
            if args.demo and name in supervisor.endpoints() and not stop["now"]:
                _demo(name, supervisor.endpoints()[name], started, failed, shown)

    try:
        builds.start_next()  # the first build starts now and runs while the ready services start
        if ready:
            print(f"facet: starting {', '.join(ready)} (logs in {supervisor.log_dir})", flush=True)
            bring_up(ready)
        told = False
        while not stop["now"]:
            supervisor.restart_crashed()
            result = builds.poll()
            if result is not None and result.ok:
                print(f"facet: {result.name} default models built in {result.seconds:.0f} s", flush=True)
                models_changed()
                bring_up([result.name])
            elif result is not None:
                failed[result.name] = result.message
                print(f"facet up: {result.message}", file=sys.stderr, flush=True)
            line = builds.progress()
            if line:
                print(line, flush=True)
            if builds.done and (not any(s.serving for s in supervisor.services.values()) or (args.demo and args.exit_after_demo)):
                break  # nothing more to come: nothing serves, or the demo is over
            if not told and supervisor.endpoints() and not (args.demo and args.exit_after_demo):
                print("facet: Ctrl-C stops every service" + ("; the other default models keep building" if not builds.done else ""), flush=True)
                told = True
            time.sleep(0.2)
    except _StopRequested:
        pass
    finally:
        builds.stop()
        print("facet: stopping", flush=True)
        supervisor.stop()
    if args.demo:
        _summary(list(supervisor.services), failed, shown)
    return 1 if failed else 0


class _StopRequested(BaseException):
    """SIGTERM or SIGINT while `facet up` runs: stop waiting, stop everything."""


def _demo(name: str, address: str, started: float, failed: dict[str, str], shown: dict[str, float]) -> None:
    """Run capability `name`'s walk-through against its service; a failure is said and noted."""
    import sdk

    print(f"\nfacet: --- {name} demo ---", flush=True)
    try:
        addresses: dict[str, Any] = {name: address}  # capability -> host:port
        with sdk.Client(**addresses) as client:
            registry.load(registry.get(name).demo)(client)
    except Exception as exc:  # noqa: BLE001 - one capability's demo failing must not hide the others'
        failed[name] = f"the {name} demo failed: {type(exc).__name__}: {exc}"
        print(f"facet up: {failed[name]}", file=sys.stderr, flush=True)
        return
    shown[name] = time.monotonic() - started
    print(f"facet: {name} demo done, {shown[name]:.0f} s after start\n", flush=True)


def _summary(services: list[str], failed: dict[str, str], shown: dict[str, float]) -> None:
    """One line per capability: when its demo was done, or what broke."""
    print("facet: summary", flush=True)
    for name in services:
        if name in shown:
            print(f"  {name:<10} demo done {shown[name]:.0f} s after start", flush=True)
        elif name in failed:
            print(f"  {name:<10} FAILED: {failed[name].splitlines()[0]}", flush=True)
        else:
            print(f"  {name:<10} not run (stopped before it was ready)", flush=True)


def cmd_models_list(args: argparse.Namespace) -> int:
    repo = _repository()
    names = repo.models()
    if args.json:
        print(json.dumps([repo.get(n).metadata | {"name": n} for n in names], indent=2, default=str))
        return 0
    if not names:
        print(f"no models in {repo.root}; build the defaults with `facet models build`")
        return 0
    print(f"model repository: {repo.root}")
    entries = [repo.get(n) for n in names]
    checks = [_parity_text(e.metadata.get(Key.PARITY, {})) for e in entries]
    width = max(len(n) for n in names)
    kinds = max(len("kind"), *(len(e.kind) for e in entries))
    parities = max(len("parity"), *(len(c) for c in checks))
    print(f"{'name':<{width}} {'version':>7}  {'kind':<{kinds}} {'parity':<{parities}} source")
    for name, entry, check in zip(names, entries, checks, strict=True):
        print(f"{name:<{width}} {entry.version:>7}  {entry.kind:<{kinds}} {check:<{parities}} {entry.metadata.get(Key.SOURCE, '')}")
    return 0


def cmd_models_build(args: argparse.Namespace) -> int:
    services = _services(args, "models build")
    if services is None:
        return 2
    failed = build_default_models(services, _benchmark_data(args))
    cmd_models_list(argparse.Namespace(json=False))
    if failed:
        print(f"facet models build: failed: {', '.join(failed)} (see above)", file=sys.stderr)
        return 1
    return 0


# commands of the platform itself; each capability adds its own from its registry row
PLATFORM_COMMANDS = (
    registry.Command("train", "", "deploy.train", "submit a capability's training to a Ray cluster as a job"),
    registry.Command("triton", "serve", "deploy.triton", "write the python-backend repository and run tritonserver until Ctrl-C", ("serve",)),
    registry.Command("triton", "repository", "deploy.triton", "write the python-backend repository for the local CPU server", ("repository",)),
    registry.Command("triton", "configs", "deploy.triton", "rewrite the model repository's config.pbtxt files (--kind gpu: KIND_GPU)", ("configs",)),
    registry.Command("load", "", "load.cli", "load-test the running services with locust through the SDK"),
    registry.Command("check", "", "deploy.check", "check each service's health and make one SDK call (the Helm test)"),
)
GROUP_HELP = {"train": "submit a capability's training to a Ray cluster as a job", "triton": "a local Triton Inference Server on the model repository",
              "data": "datasets", "eval": "evaluations through the SDK", "models": "the model repository"}  # fmt: skip


def forwarded_commands() -> list[registry.Command]:
    """Every forwarding command: the platform's, then each capability's in registry order."""
    return [*PLATFORM_COMMANDS, *(command for row in registry.CAPABILITIES for command in row.commands)]


def cmd_forward(args: argparse.Namespace) -> int:
    import importlib

    return int(importlib.import_module(args.module).main([*args.prefix, *args.rest]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facet", description="Facet: model servers with a Python SDK")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start each service as soon as its models exist (the missing default models build meanwhile)")
    up.add_argument("--services", help=f"comma-separated subset of {','.join(registry.names())} (default: all)")
    up.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    up.add_argument("--demo", action="store_true", help="run a short SDK demo once serving")
    up.add_argument("--exit-after-demo", action="store_true", help="stop everything after the demo")
    up.add_argument("--data", type=Path, help="the shared benchmark data for export parity checks (default: ../shared/data)")
    up.add_argument("--parity-data", type=Path, help="the RAR-b MCR folder in it (older spelling of --data)")
    up.add_argument("--backend", choices=("onnxruntime", "triton", "ray"), help="inference backend (default: the configured one, onnxruntime)")
    up.add_argument("--ray-address", help="with --backend ray: use this Ray cluster (as RAY_ADDRESS) instead of starting a local head")
    up.add_argument("--triton-url", dest="triton_address", help="with --backend triton: use this Triton server (host:port, gRPC) instead of starting one")
    up.add_argument("--retrieval-store", choices=("embedded", "milvus"), help="where retrieval collections live (default: retrieval.store, embedded)")
    up.add_argument("--milvus-uri", help="with --retrieval-store milvus: this Milvus (http://host:19530) instead of a local standalone started here")
    up.add_argument("--tls-cert", help="serve TLS with this certificate (PEM; server.tls_cert_file); needs --tls-key")
    up.add_argument("--tls-key", help="the certificate's private key (PEM, unencrypted; server.tls_key_file)")
    up.add_argument("--tls-client-ca", help="mTLS: clients must present a certificate signed by this CA (PEM; server.tls_client_ca_file)")
    up.add_argument("--tls-ca", help="the CA that signed --tls-cert, trusted by the launcher's health checks and demo "
                                     "(default: FACET_TLS_ROOT_CERTIFICATES, else --tls-cert itself: right for a self-signed certificate)")  # fmt: skip
    up.add_argument("--tls-client-cert", help="under mTLS: the launcher's own client certificate, for its health checks and demo (default: FACET_TLS_CLIENT_CERT)")
    up.add_argument("--tls-client-key", help="its private key (default: FACET_TLS_CLIENT_KEY)")
    up.add_argument("--api-keys-file", help="API keys with names and rate limits (TOML; server.api_keys_file); the demo uses FACET_API_KEY, else the file's first key")
    up.set_defaults(func=cmd_up)

    groups: dict[str, argparse._SubParsersAction] = {}  # type: ignore[type-arg]
    models = sub.add_parser("models", help=GROUP_HELP["models"])
    groups["models"] = models.add_subparsers(dest="models_command", required=True)
    listing = groups["models"].add_parser("list", help="models in the repository")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_models_list)
    build = groups["models"].add_parser("build", help="build missing default models")
    build.add_argument("--services", help=f"comma-separated subset of {','.join(registry.names())} (default: all)")
    build.add_argument("--data", type=Path, help="the shared benchmark data (default: ../shared/data beside the checkout)")
    build.add_argument("--parity-data", type=Path, help="the RAR-b MCR folder in it (older spelling of --data)")
    build.set_defaults(func=cmd_models_build)

    # commands that hand their arguments to a module's own main() (each has its own --help)
    for command in forwarded_commands():
        if not command.name:  # the group is the command: `facet train ...`
            forward = sub.add_parser(command.group, help=command.help, add_help=False)
        else:
            if command.group not in groups:
                row = registry.BY_NAME.get(command.group)  # a capability's own group: its summary
                parent = sub.add_parser(command.group, help=row.summary if row else GROUP_HELP.get(command.group, command.group))
                groups[command.group] = parent.add_subparsers(dest=f"{command.group}_command", required=True)
            forward = groups[command.group].add_parser(command.name, help=command.help, add_help=False)
        forward.add_argument("rest", nargs=argparse.REMAINDER)
        forward.set_defaults(func=cmd_forward, module=command.module, prefix=list(command.prefix))
    return parser


def main(argv: list[str] | None = None) -> int:
    from services.runtime.config import ConfigError

    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        if not hasattr(args, "rest"):
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        # a forwarding command (facet sae build ...) whose arguments start with an option
        args.rest = [*unknown, *args.rest]
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"facet: bad configuration: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
