"""The next-frame capability's fixtures (a pytest plugin, registered by the root conftest): tiny
frame models for every dataset, and NextFrame servers on every backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.model_repository import ModelRepository
from tests.serving import SERVICE_BACKENDS, ServerProcess


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
def nextframe_server(request: pytest.FixtureRequest, nextframe_repository: ModelRepository, serve) -> Iterator[ServerProcess]:  # type: ignore[no-untyped-def]
    yield from serve("nextframe", nextframe_repository, request.param)
