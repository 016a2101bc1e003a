"""The `facet` command.

    facet up [--services retrieval] [--demo]     start services (builds missing default models)
    facet up --backend triton [--triton-url H:P] the same, inference on Triton (a local server unless given)
    facet up --backend ray [--ray-address A]     the same, models as Ray Serve apps (a local head unless given)
    facet models list                            what the model repository holds
    facet models build                           build the default models
    facet models export-embedding PATH           export a sentence-transformers model to ONNX
    facet sae build [--tokens N --widths ...]    build an SAE family with its meta-SAE and analyses
    facet sae cache --out DIR [--layer L]        cache residual-stream activations
    facet sae train --cache DIR --out DIR ...    train an SAE family on Ray (local or `ray job submit`)
    facet data simulate DATASET|all --out DIR    physics videos for next-frame prediction
    facet nextframe build [--datasets ...]       next-frame models with probes into the model repository
    facet nextframe train --data DIR --out DIR   train a frame model on Ray (local or `ray job submit`)
    facet triton serve|repository                a local Triton server (python backend) on the repository
    facet train nextframe|sae --address URL -- … a capability's training as a Ray job (logs streamed)
    facet eval rarb-mcr --data DIR               RAR-b MCR evaluation through the SDK
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from deploy.model_repository import ModelRepository

if TYPE_CHECKING:
    from collections.abc import Iterator

    from deploy.launcher import Supervisor
    from services.runtime.config import FacetConfig

# RAR-b MCR data: beside the checkout (../shared/data), whatever the working directory.
DEFAULT_PARITY_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "rarb-mcr"


def _repository() -> ModelRepository:
    from services.runtime.config import load_config

    return ModelRepository(load_config().model_repository)


def _parity_data(path: Path | None) -> Path | None:
    if path is not None and path.is_dir():
        return path
    return DEFAULT_PARITY_DATA if DEFAULT_PARITY_DATA.is_dir() else None


def build_default_models(services: list[str], parity_data: Path | None) -> None:
    """Build each requested service's default models that the repository lacks, with progress."""
    from tqdm import tqdm

    repo = _repository()
    steps = []
    if "retrieval" in services:
        from training.retrieval.export import DEFAULT_EMBEDDING_MODEL, ensure_default_embedding_model

        if not repo.has(DEFAULT_EMBEDDING_MODEL):
            steps.append((DEFAULT_EMBEDDING_MODEL, lambda: ensure_default_embedding_model(repo, parity_data)))
    if "sae" in services:
        from services.runtime.config import load_config
        from training.sae.build import BuildOptions, default_model_names
        from training.sae.build import build as build_saes

        options = BuildOptions(work_dir=load_config().data_dir / "sae-build")
        has_saes = any(repo.get(name).kind == "sae" for name in repo.models())
        if not has_saes or any(repo.has(name) for name in default_model_names(options)[1:]):
            # no SAEs at all, or a default family that is incomplete (an interrupted build)
            if not all(repo.has(name) for name in default_model_names(options)):
                steps.append(("SAE family", lambda: build_saes(repo, options)[-1]))
    if "nextframe" in services:
        from services.runtime.config import load_config
        from training.nextframe.build import FrameBuildOptions, model_name
        from training.nextframe.build import build as build_frame_models

        frame_options = FrameBuildOptions(work_dir=load_config().data_dir / "nextframe-build")
        for dataset in frame_options.datasets:
            if not repo.has(model_name(dataset)):
                one = dataclasses.replace(frame_options, datasets=(dataset,))
                steps.append((f"next-frame {dataset}", functools.partial(lambda o: build_frame_models(repo, o)[-1], one)))
    if not steps:
        return
    print(f"facet: building {len(steps)} default model(s) into {repo.root}", flush=True)
    with tqdm(total=len(steps), unit="model", desc="default models") as bar:
        for name, make in steps:
            bar.set_postfix_str(name)
            entry = make()
            tqdm.write(f"  {name}: {entry.name} v{entry.version}, parity {_parity_text(entry.metadata.get('parity', {}))}")
            bar.update()


def _parity_text(parity: dict[str, float]) -> str:
    if "min_cosine" in parity:
        return f"cos≥{parity['min_cosine']:.7f}"
    if "max_relative_error" in parity:
        return f"rel.err≤{parity['max_relative_error']:.1e}"
    return "-"


def cmd_up(args: argparse.Namespace) -> int:
    from deploy.launcher import IMPLEMENTED, Supervisor
    from services.runtime.config import load_config

    services = args.services.split(",") if args.services else list(IMPLEMENTED)
    config = load_config()
    log_dir = config.data_dir / "logs"
    backend = args.backend or config.backend
    try:
        supervisor = Supervisor(
            services, host=args.host, log_dir=log_dir, grace_period_s=config.server.grace_period_s, env={"FACET_BACKEND": backend}
        )
    except ValueError as exc:
        print(f"facet up: {exc}", file=sys.stderr)
        return 2
    try:
        build_default_models(services, _parity_data(args.parity_data))
    except ImportError as exc:
        print(f"facet up: building default models needs the training extra ({exc}): pip install -e '.[training]'", file=sys.stderr)
        return 1
    with contextlib.ExitStack() as engines:
        if backend in ENGINES:  # the engine the services call: the one given, or a local one started here
            setting, given, start_local = ENGINES[backend], getattr(args, f"{backend}_address"), {"triton": _local_triton, "ray": _local_ray}[backend]
            if given:
                print(f"facet: backend {backend} at {given}", flush=True)
            else:
                try:
                    given = engines.enter_context(start_local(config))
                except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                    print(f"facet up: {exc}", file=sys.stderr)
                    return 1
            supervisor.env[setting] = given
        return _run_services(args, supervisor, services)


# backend -> the setting that points services at its engine
ENGINES = {"triton": "FACET_TRITON_URL", "ray": "FACET_RAY_ADDRESS"}


@contextlib.contextmanager
def _local_ray(config: FacetConfig) -> Iterator[str]:
    """A local Ray head (`ray start --head`, its files under <data_dir>/ray), stopped on exit;
    the services deploy their models on it as Ray Serve applications."""
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
    print(f"facet: starting a local Ray head on {head.address} (dashboard {head.dashboard})", flush=True)
    head.start()
    try:
        yield head.address
    finally:
        head.stop()


@contextlib.contextmanager
def _local_triton(config: FacetConfig) -> Iterator[str]:
    """A local tritonserver (python backend) on every model of the repository.
    Its ports follow `triton.url` (gRPC), with HTTP one below and metrics one above."""
    from deploy.triton import TritonServer, write_local_repository

    work = config.data_dir / "triton"
    names = write_local_repository(_repository(), work / "repository", config)
    host, _, port = config.triton.url.rpartition(":")
    grpc_port = int(port)
    server = TritonServer(work / "repository", work, grpc_port=grpc_port, http_port=grpc_port - 1, metrics_port=grpc_port + 1)
    print(f"facet: starting tritonserver for {len(names)} models on {server.url} (log {server.log_file})", flush=True)
    with server:
        yield server.url


def _run_services(args: argparse.Namespace, supervisor: Supervisor, services: list[str]) -> int:
    stop = {"now": False}

    def on_signal(signum: int, _frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"facet: starting {', '.join(services)} (logs in {supervisor.log_dir})", flush=True)
    try:
        supervisor.start()
    except RuntimeError as exc:
        print(f"facet up: {exc}", file=sys.stderr)
        return 1
    for name, address in supervisor.endpoints().items():
        print(f"facet: {name:<10} SERVING on {address}  (FACET_{name.upper()}_ADDR={address})", flush=True)
    try:
        if args.demo:
            import sdk
            from deploy.demo import run_demo

            endpoints = supervisor.endpoints()
            with sdk.Client(endpoints.get("retrieval"), sae=endpoints.get("sae"), nextframe=endpoints.get("nextframe")) as client:
                run_demo(client, list(supervisor.endpoints()))
            if args.exit_after_demo:
                return 0
        print("facet: Ctrl-C stops every service", flush=True)
        supervisor.supervise(lambda: stop["now"])
    finally:
        print("facet: stopping", flush=True)
        supervisor.stop()
    return 0


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
    width = max(len(n) for n in names)
    print(f"{'name':<{width}} {'version':>7}  {'kind':<12} {'parity':<18} source")
    for name in names:
        entry = repo.get(name)
        check = _parity_text(entry.metadata.get("parity", {}))
        print(f"{name:<{width}} {entry.version:>7}  {entry.kind:<12} {check:<18} {entry.metadata.get('source', '')}")
    return 0


def cmd_models_build(args: argparse.Namespace) -> int:
    from deploy.launcher import IMPLEMENTED

    services = args.services.split(",") if args.services else list(IMPLEMENTED)
    unknown = [s for s in services if s not in IMPLEMENTED]
    if unknown:
        print(f"facet models build: unknown services {unknown}; available: {list(IMPLEMENTED)}", file=sys.stderr)
        return 2
    build_default_models(services, _parity_data(args.parity_data))
    return cmd_models_list(argparse.Namespace(json=False))


def cmd_models_export_embedding(args: argparse.Namespace) -> int:
    from training.retrieval.export import export_embedding_model

    try:
        entry = export_embedding_model(args.path, _repository(), name=args.name, parity_data=_parity_data(args.parity_data))
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"facet models export-embedding: {exc}", file=sys.stderr)
        return 1
    print(f"registered {entry.name} v{entry.version} at {entry.path}")
    print(json.dumps(entry.metadata["parity"], indent=2))
    return 0


# group, help, {command: (module, help, arguments put first)}; command "": the group is the command
FORWARDED: list[tuple[str, str, dict[str, tuple[str, str, list[str]]]]] = [
    ("sae", "SAE training and export", {
        "build": ("training.sae.build", "build an SAE family with meta-SAE, stitching and explanations into the model repository", []),
        "cache": ("training.sae.activations", "cache residual-stream activations of an LM on the corpus", []),
        "train": ("training.sae.ray_job", "train an SAE family on Ray Train from a cache (local Ray or `ray job submit`)", []),
    }),
    ("nextframe", "next-frame models", {
        "build": ("training.nextframe.build", "simulate, train, probe, score and export next-frame models into the model repository", []),
        "train": ("training.nextframe.ray_job", "train a frame model on Ray Train from a simulated dataset (local Ray or `ray job submit`)", []),
    }),
    ("train", "submit a capability's training to a Ray cluster as a job", {"": ("deploy.train", "", [])}),
    ("triton", "a local Triton Inference Server on the model repository", {
        "serve": ("deploy.triton", "write the python-backend repository and run tritonserver until Ctrl-C", ["serve"]),
        "repository": ("deploy.triton", "write the python-backend repository for the local CPU server", ["repository"]),
    }),
    ("data", "datasets", {
        "simulate": ("training.nextframe.datasets", "simulate a physics video dataset (next-frame prediction)", []),
    }),
]  # fmt: skip


def cmd_forward(args: argparse.Namespace) -> int:
    import importlib

    return int(importlib.import_module(args.module).main([*args.prefix, *args.rest]))


def cmd_eval_rarb(args: argparse.Namespace) -> int:
    from training.retrieval.rarb import main as rarb_main

    return rarb_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facet", description="Facet: model servers with a Python SDK")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start services (builds missing default models first)")
    up.add_argument("--services", help="comma-separated subset, e.g. retrieval")
    up.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    up.add_argument("--demo", action="store_true", help="run a short SDK demo once serving")
    up.add_argument("--exit-after-demo", action="store_true", help="stop everything after the demo")
    up.add_argument("--parity-data", type=Path, help="RAR-b MCR folder for export parity checks")
    up.add_argument("--backend", choices=("onnxruntime", "triton", "ray"), help="inference backend (default: the configured one, onnxruntime)")
    up.add_argument("--ray-address", help="with --backend ray: use this Ray cluster (as RAY_ADDRESS) instead of starting a local head")
    up.add_argument("--triton-url", dest="triton_address", help="with --backend triton: use this Triton server (host:port, gRPC) instead of starting one")
    up.set_defaults(func=cmd_up)

    models = sub.add_parser("models", help="the model repository").add_subparsers(dest="models_command", required=True)
    listing = models.add_parser("list", help="models in the repository")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_models_list)
    build = models.add_parser("build", help="build missing default models")
    build.add_argument("--services", help="comma-separated subset, e.g. sae (default: every service)")
    build.add_argument("--parity-data", type=Path)
    build.set_defaults(func=cmd_models_build)
    export = models.add_parser("export-embedding", help="export a sentence-transformers directory to ONNX")
    export.add_argument("path", type=Path)
    export.add_argument("--name", help="model name in the repository (default: the directory name)")
    export.add_argument("--parity-data", type=Path)
    export.set_defaults(func=cmd_models_export_embedding)

    # commands that hand their arguments to a module's own main() (each has its own --help)
    for group, text, commands in FORWARDED:
        single = list(commands) == [""]  # `facet train ...`
        subparsers = None if single else sub.add_parser(group, help=text).add_subparsers(dest=f"{group}_command", required=True)
        for command, (module, help_text, prefix) in commands.items():
            if subparsers is None:
                forward = sub.add_parser(group, help=text, add_help=False)
            else:
                forward = subparsers.add_parser(command, help=help_text, add_help=False)
            forward.add_argument("rest", nargs=argparse.REMAINDER)
            forward.set_defaults(func=cmd_forward, module=module, prefix=prefix)

    evaluate = sub.add_parser("eval", help="evaluations through the SDK").add_subparsers(dest="eval_command", required=True)
    rarb = evaluate.add_parser("rarb-mcr", help="RAR-b multiple-choice retrieval")
    rarb.add_argument("--data", type=Path, default=DEFAULT_PARITY_DATA)
    rarb.add_argument("--address", help="retrieval service host:port (default: FACET_RETRIEVAL_ADDR or localhost)")
    rarb.add_argument("--limit", type=int, default=0, help="rows per file (0: all)")
    rarb.add_argument("--seed", type=int, default=0, help="seed of the TempReason candidate shuffle")
    rarb.add_argument("--full", action="store_true", help="also the 'full' setting (nDCG@10, Recall@10)")
    rarb.add_argument("--json", type=Path, help="also write the results here")
    rarb.set_defaults(func=cmd_eval_rarb)
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
