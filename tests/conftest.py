"""Fixtures every capability's tests share: the benchmark data, the engines of the triton and ray
backends, and `serve` — a real service of any capability on any backend.

Each capability's own fixtures (its test models, its servers on each backend) live in
`tests/services/<capability>/fixtures.py`, registered below for every capability in the registry:
a plugin module rather than a conftest.py because services, training, deploy and README tests all
use them, and one definition keeps one build of each test model per session.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services import registry
from services.model_repository import ModelRepository
from tests.serving import RARB_DATA, LocalTriton, ServerProcess, backend_env, delete_serve_apps, free_port  # noqa: F401 - backend_env: kept importable from here

pytest_plugins = [f"tests.services.{name}.fixtures" for name in registry.names()]

# The session fixtures that train a capability's test models (`<name>_repository`, and the
# embedding export's `model_repository`) run inside the first test that asks for one: that test
# may take this long (the suite's default, pytest.ini's 300 s, is for everything else). A shared
# 2-core machine took 4-9 minutes for the tiny reranker alone.
MODEL_BUILD_TIMEOUT_S = 900


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        builds = [f for f in getattr(item, "fixturenames", ()) if f == "model_repository" or f.endswith("_repository")]
        if builds and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(MODEL_BUILD_TIMEOUT_S))


@pytest.fixture(scope="session")
def rarb_data() -> Path:
    if not RARB_DATA.is_dir():
        pytest.fail(f"benchmark data missing: {RARB_DATA} (the tests need ../shared/data beside the checkout)")
    return RARB_DATA


@pytest.fixture(scope="session")
def serve(tmp_path_factory: pytest.TempPathFactory, triton_for, ray_cluster) -> Callable[..., Iterator[ServerProcess]]:  # type: ignore[no-untyped-def]
    """serve(capability, repository, backend, env=None): a generator for a fixture to `yield from` —
    a real `python -m services.<capability>` on the repository and backend (with `env` on top), SERVING; stopped afterwards,
    with the Serve applications it deployed (idle replicas would load every later test)."""

    def run(capability: str, repository: ModelRepository, backend: str, env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
        env = {**backend_env(backend, repository, triton_for, ray_cluster), **(env or {})}
        server = ServerProcess(repository.root, tmp_path_factory.mktemp(f"{capability}-data"), env, service=capability).start(timeout_s=300)
        yield server
        with contextlib.suppress(Exception):
            server.terminate(10.0)
        if backend == "ray":
            delete_serve_apps(ray_cluster(), repository.models())

    return run


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
