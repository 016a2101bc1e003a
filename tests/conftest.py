"""Shared fixtures: the real default embedding model, built once per session, and real
retrieval server processes on loopback with port 0."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.launcher import wait_serving
from deploy.model_repository import ModelRepository
from sdk._contract import SERVICE_NAMES

REPO_ROOT = Path(__file__).resolve().parent.parent
RARB_DATA = (REPO_ROOT.parent / "shared" / "data" / "rarb-mcr").resolve()
EMBEDDING_MODEL = "all-minilm-l6-v2"


@pytest.fixture(scope="session")
def rarb_data() -> Path:
    if not RARB_DATA.is_dir():
        pytest.fail(f"benchmark data missing: {RARB_DATA} (the tests need ../shared/data beside the checkout)")
    return RARB_DATA


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory, rarb_data: Path) -> ModelRepository:
    """The default embedding model exported by the project's own code, with its parity check
    on 300 RAR-b sentences. FACET_TEST_MODEL_REPOSITORY reuses an existing build (local runs)."""
    from training.retrieval.export import ensure_default_embedding_model

    reuse = os.environ.get("FACET_TEST_MODEL_REPOSITORY")
    root = Path(reuse) if reuse else tmp_path_factory.mktemp("models")
    repository = ModelRepository(root)
    ensure_default_embedding_model(repository, parity_data=rarb_data)
    return repository


class ServerProcess:
    """A real `python -m services.<service>` process."""

    def __init__(self, model_repository: Path, data_dir: Path, env: dict[str, str] | None = None, service: str = "retrieval") -> None:
        self.service = service
        self.model_repository = model_repository
        self.data_dir = data_dir
        self.extra_env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.metrics_port: int | None = None
        self.log_path = data_dir / "server.log"

    @property
    def address(self) -> str:
        return f"localhost:{self.port}"

    @property
    def backend(self) -> str:
        return self.extra_env.get("FACET_BACKEND", "onnxruntime")

    def start(self, wait: bool = True, timeout_s: float = 120.0) -> ServerProcess:
        port_file = self.data_dir / "port.json"
        port_file.unlink(missing_ok=True)
        env = {
            **os.environ,
            "FACET_MODEL_REPOSITORY": str(self.model_repository),
            "FACET_DATA_DIR": str(self.data_dir),
            "FACET_SERVER_PORT": "0",
            "FACET_SERVER_METRICS_PORT": "0",
            "FACET_API_KEY": "",
            **self.extra_env,
        }
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.service}", "--port-file", str(port_file)],
            env=env,
            cwd=REPO_ROOT,
            stderr=log,
            stdout=log,
        )
        if not wait:
            return self
        deadline = time.monotonic() + timeout_s
        while not port_file.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start in {timeout_s}s:\n{self.log()}")
            time.sleep(0.05)
        facts = json.loads(port_file.read_text())
        self.port, self.metrics_port = facts["port"], facts["metrics_port"]
        assert wait_serving(self.address, SERVICE_NAMES[self.service], 30.0), self.log()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def terminate(self, timeout_s: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture(scope="session")
def start_server(model_repository: ModelRepository, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Factory: start_server(env={...}, data_dir=None) -> a SERVING ServerProcess, stopped at session end."""
    started: list[ServerProcess] = []

    def start(env: dict[str, str] | None = None, data_dir: Path | None = None, wait: bool = True) -> ServerProcess:
        server = ServerProcess(model_repository.root, data_dir or tmp_path_factory.mktemp("data"), env)
        started.append(server)
        return server.start(wait=wait)

    yield start
    for server in started:
        with contextlib.suppress(Exception):
            server.terminate(10.0)


# The end-to-end service suites run once per backend: the same tests, the same SDK calls.
SERVICE_BACKENDS = ("onnxruntime", "triton", "ray")


def backend_env(backend: str, repository: ModelRepository, triton_for, ray_cluster=None) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Environment that points a service process at `backend` serving `repository`."""
    if backend == "onnxruntime":
        return {}
    if backend == "triton":
        return dict(triton_for(repository).env)
    if backend == "ray":
        return {"FACET_BACKEND": "ray", "FACET_RAY_ADDRESS": ray_cluster().address}
    raise ValueError(backend)


@pytest.fixture(scope="session", params=SERVICE_BACKENDS)
def retrieval_server(request: pytest.FixtureRequest, model_repository: ModelRepository, tmp_path_factory: pytest.TempPathFactory, triton_for, ray_cluster) -> Iterator[ServerProcess]:  # type: ignore[no-untyped-def]
    yield from _serving(model_repository, tmp_path_factory, "retrieval", request.param, triton_for, ray_cluster)


@pytest.fixture(scope="session")
def retrieval_address(retrieval_server: ServerProcess) -> str:
    """host:port of a real retrieval server with the real default model, shared by the session."""
    return retrieval_server.address


@pytest.fixture(scope="session")
def sae_work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Activation caches and the dequantised SmolLM2 checkpoint (`lm/`) of the test builds."""
    reuse = os.environ.get("FACET_TEST_SAE_REPOSITORY")
    return Path(reuse.rstrip("/") + "-work") if reuse else tmp_path_factory.mktemp("sae-work")


@pytest.fixture(scope="session")
def sae_repository(tmp_path_factory: pytest.TempPathFactory, sae_work_dir: Path) -> ModelRepository:
    """Small SAE families built by the project's own build on real SmolLM2-135M activations
    (layer 6: 12k Wikipedia tokens, widths 128/256, BatchTopK k 8; and one SAE at layer 3),
    with meta-SAE, stitching, explanations and ONNX exports. Small so they build in about a
    minute; the default family is larger. FACET_TEST_SAE_REPOSITORY reuses a build (local runs)."""
    from training.sae.build import BuildOptions, build

    reuse = os.environ.get("FACET_TEST_SAE_REPOSITORY")
    repository = ModelRepository(Path(reuse) if reuse else tmp_path_factory.mktemp("sae-models"))
    for options, name in ((TEST_SAE_OPTIONS, TEST_SAE_LARGE), (OTHER_LAYER_OPTIONS, OTHER_LAYER_SAE)):
        if not repository.has(name):
            build(repository, BuildOptions(**options, work_dir=sae_work_dir, progress=False))  # type: ignore[arg-type]
    return repository


TEST_SAE_OPTIONS = {"layer": 6, "tokens": 12_000, "epochs": 3, "widths": (128, 256), "k": 8, "batch_tokens": 512, "context_tokens": 64, "ce_contexts": 8}
TEST_SAE_SMALL = "smollm2-135m-l6-batchtopk-w128"
TEST_SAE_LARGE = "smollm2-135m-l6-batchtopk-w256"
# A one-SAE family at another layer: comparing it with the layer-6 SAEs must be refused.
OTHER_LAYER_OPTIONS = {"layer": 3, "tokens": 4_000, "epochs": 2, "widths": (96,), "k": 8, "batch_tokens": 512, "context_tokens": 64, "ce_contexts": 4}
OTHER_LAYER_SAE = "smollm2-135m-l3-batchtopk-w96"


@pytest.fixture(scope="session", params=SERVICE_BACKENDS)
def sae_server(request: pytest.FixtureRequest, sae_repository: ModelRepository, tmp_path_factory: pytest.TempPathFactory, triton_for, ray_cluster) -> Iterator[ServerProcess]:  # type: ignore[no-untyped-def]
    yield from _serving(sae_repository, tmp_path_factory, "sae", request.param, triton_for, ray_cluster)


@pytest.fixture(scope="session")
def nextframe_repository(tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    """Tiny next-frame models for every dataset, built by the project's own build (real simulated
    videos, a small U-Net trained briefly): enough to test the service and the launcher (which
    then has nothing to build), not to judge the physics."""
    from training.nextframe.build import FrameBuildOptions, build

    repository = ModelRepository(tmp_path_factory.mktemp("nextframe-models"))
    options = FrameBuildOptions(videos=20, frames=10, steps=30, batch=8, base_channels=8, depth=2, probe_steps=100,
                                random_inits=2, end_to_end_steps=20, progress=False)  # fmt: skip
    build(repository, options)
    return repository


@pytest.fixture(scope="session", params=SERVICE_BACKENDS)
def nextframe_server(request: pytest.FixtureRequest, nextframe_repository: ModelRepository, tmp_path_factory: pytest.TempPathFactory, triton_for, ray_cluster) -> Iterator[ServerProcess]:  # type: ignore[no-untyped-def]
    yield from _serving(nextframe_repository, tmp_path_factory, "nextframe", request.param, triton_for, ray_cluster)


def _serving(repository: ModelRepository, tmp_path_factory: pytest.TempPathFactory, service: str, backend: str, triton_for, ray_cluster) -> Iterator[ServerProcess]:  # type: ignore[no-untyped-def]
    """A real `python -m services.<service>` on the repository and backend, SERVING; stopped
    afterwards, with the Serve applications it deployed (idle replicas would load every later test)."""
    env = backend_env(backend, repository, triton_for, ray_cluster)
    server = ServerProcess(repository.root, tmp_path_factory.mktemp(f"{service}-data"), env, service=service).start(timeout_s=300)
    yield server
    with contextlib.suppress(Exception):
        server.terminate(10.0)
    if backend == "ray":
        delete_serve_apps(ray_cluster(), repository.models())


DELETE_APPS = """
import logging, sys
from deploy.ray_cluster import opt_in_token_auth
opt_in_token_auth()
import ray
from ray import serve
from deploy.ray_serve import app_name
ray.init(address=sys.argv[1], _node_ip_address="127.0.0.1", log_to_driver=False, logging_level=logging.WARNING)
for model in sys.argv[2:]:
    serve.delete(app_name(model), _blocking=False)
"""


def delete_serve_apps(head, models: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Delete the models' Serve applications from a local head (through a short-lived driver)."""
    subprocess.run([sys.executable, "-c", DELETE_APPS, head.address, *models], cwd=REPO_ROOT, timeout=120, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def free_port() -> int:
    import socket

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


@pytest.fixture(scope="session")
def triton_for(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Factory: triton_for(repository) -> a started LocalTriton, one per repository, stopped at session end."""
    servers: dict[Path, LocalTriton] = {}

    def start(repository: ModelRepository) -> LocalTriton:
        if repository.root not in servers:
            triton = LocalTriton(repository, tmp_path_factory.mktemp("triton"))
            triton.server.start()
            servers[repository.root] = triton
        return servers[repository.root]

    yield start
    for triton in servers.values():
        triton.server.stop()


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Factory: ray_cluster() -> a real local Ray head (`ray start --head --num-cpus 2`), started
    on first use, stopped at session end; services deploy their models on it as Serve apps."""
    from deploy.ray_cluster import LocalRay

    started: list[LocalRay] = []

    def get() -> LocalRay:
        if not started:
            temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # Ray's socket paths must stay short
            started.append(LocalRay(port=free_port(), dashboard_port=free_port(), temp_dir=temp).start())
        return started[0]

    yield get
    for cluster in started:
        cluster.stop()
        shutil.rmtree(cluster.temp_dir or "", ignore_errors=True)
