"""Triton Inference Server for the model repository.

Production: the repository's own `config.pbtxt` files (platform `onnxruntime_onnx`, dims read
from each ONNX graph, KIND_CPU instances) are what the official Triton image serves as is;
`facet triton configs --kind gpu` rewrites them with KIND_GPU instances for a GPU node.

Local (CPU): the `tritonserver` inside the `nvidia-pytriton` package has only the python backend.
`write_python_repository` lays out a second repository with the same model names, versions and
tensors, where each model is `services/backends/triton_python_model.py` running the ONNX file with ONNX Runtime;
`TritonServer` runs that server as a child process. The server's Python environment is its own
virtualenv (`.venv-triton`, made by `make install`): the bundled server needs numpy < 2, and its
python-backend stub silently corrupts tensors when it picks up numpy 2.

    facet triton configs [--kind gpu]    rewrite the repository's configs (official image)
    facet triton repository OUT          write the python-backend repository
    facet triton serve [--grpc-port N]   write it and run tritonserver until Ctrl-C
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from deploy.lifetime import dying_with_parent
from services.backends.triton_config import INSTANCE_KINDS, model_config
from services.model_repository import ModelRepository

if TYPE_CHECKING:
    from services.runtime.config import FacetConfig

CHECKOUT = Path(__file__).resolve().parents[1]
DEFAULT_TRITON_ENV = CHECKOUT / ".venv-triton"
PYTHON_MODEL = CHECKOUT / "services" / "backends" / "triton_python_model.py"
# numpy / onnxruntime only: the stub imports them as facet_padding and facet_onnx_session
PADDING = CHECKOUT / "services" / "backends" / "padding.py"
ONNX_SESSION = CHECKOUT / "services" / "backends" / "onnx_session.py"

def write_python_repository(
    repo: ModelRepository,
    out: Path,
    models: Iterable[str] | None = None,
    *,
    max_batch_size: int = 64,
    max_queue_delay_microseconds: int = 0,
    intra_op_num_threads: int = 0,
    providers: str = "auto",
) -> list[str]:
    """The local server's repository: per model and its newest version, config.pbtxt (backend
    python), `<version>/model.py` and a link to the repository's model.onnx. Rewritten in place;
    models no longer in `repo` are removed. Returns the model names."""
    names = sorted(models if models is not None else repo.models())
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.iterdir():
        if stale.is_dir() and stale.name not in names:
            shutil.rmtree(stale)
    for name in names:
        entry = repo.get(name)
        model_dir = out / name
        if model_dir.exists():
            shutil.rmtree(model_dir)
        version_dir = model_dir / str(entry.version)
        version_dir.mkdir(parents=True)
        shutil.copyfile(PYTHON_MODEL, version_dir / "model.py")
        shutil.copyfile(PADDING, version_dir / "facet_padding.py")
        shutil.copyfile(ONNX_SESSION, version_dir / "facet_onnx_session.py")
        (version_dir / "model.onnx").symlink_to(entry.model_file.resolve())
        config = model_config(
            entry,
            backend="python",
            max_batch_size=max_batch_size,
            max_queue_delay_microseconds=max_queue_delay_microseconds,
            parameters={"intra_op_num_threads": str(intra_op_num_threads), "providers": providers},
        )
        (model_dir / "config.pbtxt").write_text(config)
    return names


def write_local_repository(repo: ModelRepository, out: Path, config: FacetConfig, models: Iterable[str] | None = None) -> list[str]:
    """`write_python_repository` with the batching and thread knobs of a Facet configuration."""
    return write_python_repository(
        repo,
        out,
        models,
        max_batch_size=config.batching.max_batch_size,
        max_queue_delay_microseconds=config.batching.max_queue_delay_microseconds,
        intra_op_num_threads=config.onnxruntime.intra_op_num_threads,
        providers=config.onnxruntime.providers,
    )


class TritonNotInstalled(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class TritonInstall:
    """Where the nvidia-pytriton virtualenv keeps the server, its python backend and stub."""

    env: Path

    @property
    def site_packages(self) -> Path:
        found = sorted(self.env.glob("lib/python3.*/site-packages"))
        if not found or not (found[0] / "pytriton" / "tritonserver" / "bin" / "tritonserver").is_file():
            raise TritonNotInstalled(
                f"no tritonserver under {self.env}: create it with `make install` "
                f"(python3 -m venv {self.env} && {self.env}/bin/pip install nvidia-pytriton==0.7.0 onnxruntime==1.31.1)"
            )
        return found[0]

    @property
    def python_version(self) -> str:
        return self.site_packages.parent.name.removeprefix("python")

    def backend_directory(self, work: Path) -> Path:
        """The python backend with the stub for this Python beside it, as tritonserver expects."""
        server = self.site_packages / "pytriton" / "tritonserver"
        backends = work / "backends"
        python = backends / "python"
        if not (python / "triton_python_backend_stub").is_file():
            python.mkdir(parents=True, exist_ok=True)
            for f in ("libtriton_python.so", "triton_python_backend_utils.py"):
                shutil.copyfile(server / "backends" / "python" / f, python / f)
            stub = python / "triton_python_backend_stub"
            shutil.copyfile(server / "python_backend_stubs" / self.python_version / "triton_python_backend_stub", stub)
            stub.chmod(0o755)
        return backends

    def environment(self) -> dict[str, str]:
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        library_path = [str(self.site_packages / "nvidia_pytriton.libs"), libdir, os.environ.get("LD_LIBRARY_PATH", "")]
        return {
            **os.environ,
            # the stub finds its Python (numpy < 2, onnxruntime) as the first python3 on PATH
            "PATH": f"{self.env / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "LD_LIBRARY_PATH": os.pathsep.join(p for p in library_path if p),
        }


class TritonServer:
    """A real tritonserver process on a python-backend repository (see `write_python_repository`)."""

    def __init__(
        self,
        repository: Path,
        work: Path,
        *,
        grpc_port: int = 8001,
        http_port: int = 8000,
        metrics_port: int = 8002,
        host: str = "127.0.0.1",
        env: Path | None = None,
        log_file: Path | None = None,
        explicit: bool = True,
    ) -> None:
        self.install = TritonInstall(Path(env or os.environ.get("FACET_TRITON_ENV") or DEFAULT_TRITON_ENV))
        self.repository, self.work = repository, work
        self.grpc_port, self.http_port, self.metrics_port, self.host = grpc_port, http_port, metrics_port, host
        self.log_file = log_file or work / "tritonserver.log"
        self.explicit = explicit
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def command(self) -> list[str]:
        binary = self.install.site_packages / "pytriton" / "tritonserver" / "bin" / "tritonserver"
        command = [
            str(binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={self.install.backend_directory(self.work)}",
            f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
            f"--http-address={self.host}", f"--http-port={self.http_port}",
            f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--exit-on-error=false",
            "--strict-readiness=true",
        ]  # fmt: skip
        if self.explicit:  # models load when a service asks (Triton's explicit model control)
            command.append("--model-control-mode=explicit")
        return command

    def start(self, timeout_s: float = 60.0, on_spawn: Callable[[int, str | None], None] | None = None) -> TritonServer:
        """Run tritonserver and wait until it is live.

        It runs in its own session (its python-backend stubs with it) and gets SIGTERM when the
        process that started it dies (`deploy.lifetime.dying_with_parent`).

        Args:
            timeout_s: how long it may take to become live, seconds.
            on_spawn: called with (session id, None) as soon as it runs: the launcher records the
                server it owns.
        Raises:
            TritonNotInstalled: no tritonserver in the Triton environment.
            RuntimeError: it exited or did not become live in time (its log's tail in the message).
        """
        self.work.mkdir(parents=True, exist_ok=True)
        command, env = self.command(), self.install.environment()
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                dying_with_parent(command), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        if on_spawn is not None:
            on_spawn(self.process.pid, None)
        if not self.wait_live(timeout_s):
            tail = self.log_file.read_text(errors="replace").splitlines()[-8:]
            self.stop()
            raise RuntimeError(f"tritonserver did not start on {self.url}; last lines of {self.log_file}:\n" + "\n".join(tail))
        return self

    def wait_live(self, timeout_s: float) -> bool:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            with contextlib.suppress(urllib.error.URLError, OSError):
                with urllib.request.urlopen(f"http://{self.host}:{self.http_port}/v2/health/live", timeout=1) as reply:
                    if reply.status == 200:
                        return True
            time.sleep(0.2)
        return False

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    import argparse

    from services.runtime.config import load_config

    parser = argparse.ArgumentParser(prog="facet triton", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    write = sub.add_parser("repository", help="write the python-backend repository for the local CPU server")
    write.add_argument("out", type=Path)
    configs = sub.add_parser("configs", help="rewrite every model's config.pbtxt for the official Triton image (onnxruntime backend)")
    configs.add_argument("--kind", choices=sorted(INSTANCE_KINDS), default="cpu", help="instance kind: gpu for a GPU node (KIND_GPU)")
    configs.add_argument("--instances", type=int, default=1, help="instances per model")
    serve = sub.add_parser("serve", help="write the repository and run tritonserver until Ctrl-C")
    serve.add_argument("--grpc-port", type=int, default=8001)
    serve.add_argument("--http-port", type=int, default=8000)
    serve.add_argument("--metrics-port", type=int, default=8002)
    serve.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    config = load_config()
    repo = ModelRepository(config.model_repository)
    if args.command == "repository":
        names = write_local_repository(repo, args.out, config)
        print(f"wrote {len(names)} models to {args.out}")
        return 0
    if args.command == "configs":
        for name in repo.models():
            entry = repo.get(name)
            text = model_config(entry, instance_kind=args.kind, instance_count=args.instances,
                                max_batch_size=config.batching.max_batch_size,
                                max_queue_delay_microseconds=config.batching.max_queue_delay_microseconds)  # fmt: skip
            (repo.root / name / "config.pbtxt").write_text(text)
        print(f"rewrote config.pbtxt of {len(repo.models())} models in {repo.root} ({INSTANCE_KINDS[args.kind]})")
        return 0
    work = config.data_dir / "triton"
    names = write_local_repository(repo, work / "repository", config)
    server = TritonServer(work / "repository", work, grpc_port=args.grpc_port, http_port=args.http_port,
                          metrics_port=args.metrics_port, host=args.host, explicit=False)  # fmt: skip
    try:
        server.start(timeout_s=60.0 + 5.0 * len(names))
    except (TritonNotInstalled, RuntimeError) as exc:
        print(f"facet triton: {exc}", file=sys.stderr)
        return 1
    print(f"tritonserver serving {len(names)} models on {server.url} (gRPC); log: {server.log_file}", flush=True)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    while not stop["now"] and server.process is not None and server.process.poll() is None:
        time.sleep(0.5)
    server.stop()
    return 0
