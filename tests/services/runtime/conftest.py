"""Fixtures of the runtime tests: a retrieval service process (the runtime's smallest real user)
on any of the three backends, with its own settings."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.model_repository import ModelRepository
from tests.serving import ServerProcess, backend_env, delete_serve_apps


@pytest.fixture
def service_on(model_repository: ModelRepository, tmp_path_factory: pytest.TempPathFactory, triton_for, ray_cluster) -> Iterator[Callable[..., ServerProcess]]:  # type: ignore[no-untyped-def]
    """Factory: service_on(backend, env={...}, wait=True, data_dir=None) -> a retrieval
    ServerProcess on the embedding model and `backend`, SERVING unless `wait` is False; stopped
    (and its Serve applications deleted, on Ray) after the test."""
    started: list[ServerProcess] = []

    def start(backend: str, env: dict[str, str] | None = None, wait: bool = True, data_dir: Path | None = None) -> ServerProcess:
        full = {**backend_env(backend, model_repository, triton_for, ray_cluster), **(env or {})}
        server = ServerProcess(model_repository.root, data_dir or tmp_path_factory.mktemp(f"runtime-{backend}"), full)
        started.append(server)
        server.start(wait=wait, timeout_s=300)
        return server

    yield start
    for server in started:
        with contextlib.suppress(Exception):
            server.terminate(10.0)
    if any(s.backend == "ray" for s in started):
        delete_serve_apps(ray_cluster(), model_repository.models())
