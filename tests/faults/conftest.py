"""Fixtures of the fault tests: the next-frame test models (reused from a local build when
FACET_TEST_NEXTFRAME_REPOSITORY names one) and a next-frame server with /metrics."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.model_repository import ModelRepository
from tests.serving import ServerProcess, free_port

# Frames in a Rollout that no server computes within a fault test's deadline (about 1 ms a frame
# on one core: 65,536 frames is a minute; 256 frames, the default limit, took under a second, so
# a fast machine finished idle streams before their deadline and nothing was left to end).
LONG_HORIZON = 65_536


@pytest.fixture(scope="session")
def frame_repository(request: pytest.FixtureRequest) -> ModelRepository:
    """The next-frame test models: the session's `nextframe_repository` build, or the repository
    FACET_TEST_NEXTFRAME_REPOSITORY names (local runs; built by `nextframe_repository` before)."""
    reuse = os.environ.get("FACET_TEST_NEXTFRAME_REPOSITORY")
    if reuse:
        return ModelRepository(Path(reuse))
    repository: ModelRepository = request.getfixturevalue("nextframe_repository")
    return repository


@pytest.fixture(scope="module")
def frame_server(
    frame_repository: ModelRepository, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A next-frame service (ONNX Runtime) with its /metrics endpoint on a free port, and Rollouts
    long enough (nextframe.max_horizon = LONG_HORIZON) that no machine streams one within a
    fault test's deadline."""
    env = {"FACET_SERVER_METRICS_PORT": str(free_port()), "FACET_NEXTFRAME_MAX_HORIZON": str(LONG_HORIZON)}
    server = ServerProcess(frame_repository.root, tmp_path_factory.mktemp("frames"), env, service="nextframe")
    server.start(timeout_s=300)
    yield server
    server.terminate(10.0)
