"""What the tests need to run services for real: service processes on a model repository (port 0),
the engines of the triton and ray backends, and the environment that points a service at one.
Imported by the fixture modules and tests; no fixtures here."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from deploy.service_process import ServiceProcess
from services.model_repository import ModelRepository

REPO_ROOT = Path(__file__).resolve().parent.parent
RARB_DATA = (REPO_ROOT.parent / "shared" / "data" / "rarb-mcr").resolve()
# The end-to-end service suites run once per backend: the same tests, the same SDK calls.
SERVICE_BACKENDS = ("onnxruntime", "triton", "ray")


class ServerProcess(ServiceProcess):
    """`python -m services.<service>` as the tests run it: on `model_repository`, its state and log
    (`server.log`) in `data_dir`, any free port (unless `env` sets FACET_SERVER_PORT), no API key,
    `env` on top."""

    def __init__(self, model_repository: Path, data_dir: Path, env: Mapping[str, str] | None = None, service: str = "retrieval") -> None:
        base = {"FACET_MODEL_REPOSITORY": str(model_repository), "FACET_DATA_DIR": str(data_dir), "FACET_API_KEY": ""}
        super().__init__(service, {**base, **(env or {})}, log_path=data_dir / "server.log")
        self.data_dir = data_dir

    @property
    def backend(self) -> str:
        return self.env.get("FACET_BACKEND", "onnxruntime")


def backend_env(backend: str, repository: ModelRepository, triton_for, ray_cluster=None) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Environment that points a service process at `backend` serving `repository` (`triton_for`
    and `ray_cluster`: the root conftest's engine fixtures)."""
    if backend == "onnxruntime":
        return {}
    if backend == "triton":
        return dict(triton_for(repository).env)
    if backend == "ray":
        return {"FACET_BACKEND": "ray", "FACET_RAY_ADDRESS": ray_cluster().address}
    raise ValueError(f"unknown backend {backend!r}; one of {', '.join(SERVICE_BACKENDS)}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalTriton:
    """A real tritonserver (nvidia-pytriton's, python backend) on a repository's models, in
    explicit model control: the services' Triton backend asks it to load what they use."""

    def __init__(self, repository: ModelRepository, work: Path) -> None:
        from deploy.triton import TritonServer, write_python_repository

        write_python_repository(repository, work / "repository", intra_op_num_threads=1)
        self.server = TritonServer(work / "repository", work, grpc_port=free_port(), http_port=free_port(), metrics_port=free_port())

    @property
    def env(self) -> dict[str, str]:
        """What a service process needs to use this server."""
        return {"FACET_BACKEND": "triton", "FACET_TRITON_URL": self.server.url}


DELETE_APPS = """
import logging, sys
from services.backends.ray_auth import opt_in_token_auth
opt_in_token_auth()
import ray
from ray import serve
from services.backends.ray_serve_app import app_name
ray.init(address=sys.argv[1], _node_ip_address="127.0.0.1", log_to_driver=False, logging_level=logging.WARNING)
for model in sys.argv[2:]:
    serve.delete(app_name(model), _blocking=False)
"""


def delete_serve_apps(head, models: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Delete the models' Serve applications from a local head (through a short-lived driver)."""
    subprocess.run([sys.executable, "-c", DELETE_APPS, head.address, *models], cwd=REPO_ROOT, timeout=120, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def started_servers(repository: ModelRepository, data_dirs, service: str):  # type: ignore[no-untyped-def]
    """The body of a `start_<capability>_server` fixture: yields `start(env=None, data_dir=None,
    wait=True) -> ServerProcess` (a `service` on ONNX Runtime over `repository` with the given
    settings, SERVING unless `wait` is False, in `data_dir` or its own from `data_dirs`, a pytest
    TempPathFactory) and terminates every one it started."""
    import contextlib

    started: list[ServerProcess] = []

    def start(env: dict[str, str] | None = None, data_dir: Path | None = None, wait: bool = True) -> ServerProcess:
        server = ServerProcess(repository.root, data_dir or data_dirs.mktemp(f"{service}-data"), env, service=service)
        started.append(server)
        server.start(wait=wait)
        return server

    yield start
    for server in started:
        with contextlib.suppress(Exception):
            server.terminate(10.0)
