"""The retrieval capability's fixtures (a pytest plugin, registered by the root conftest): the real
default embedding model, built once per session, and retrieval servers on loopback with port 0."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import sdk
from services.model_repository import ModelRepository
from tests.serving import SERVICE_BACKENDS, ServerProcess, started_servers

EMBEDDING_MODEL = "all-minilm-l6-v2"


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


@pytest.fixture(scope="module")
def start_server(model_repository: ModelRepository, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServerProcess]]:
    """Factory: start_server(env={...}, data_dir=None, wait=True) -> a SERVING retrieval
    ServerProcess on the embedding model, stopped at the end of the module (an idle server still takes memory and some CPU)."""
    yield from started_servers(model_repository, tmp_path_factory, "retrieval")


@pytest.fixture(scope="module", params=SERVICE_BACKENDS)
def retrieval_server(request: pytest.FixtureRequest, model_repository: ModelRepository, serve) -> Iterator[ServerProcess]:  # type: ignore[no-untyped-def]
    yield from serve("retrieval", model_repository, request.param)


@pytest.fixture(scope="module")
def retrieval_address(retrieval_server: ServerProcess) -> str:
    """host:port of a real retrieval server with the real default model, shared by the module."""
    return retrieval_server.address


# The [rerank] limit of `search_rerank_server`: a few long candidates exceed it.
SEARCH_RERANK_MAX_REQUEST_CHARS = 2000


@pytest.fixture(scope="session")
def search_rerank_server(
    model_repository: ModelRepository, rerank_repository: ModelRepository, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A retrieval server (ONNX Runtime) whose model repository holds the embedding model and the
    test rerankers (links to the session's builds: nothing is copied or rebuilt), for
    `search(rerank=True)`; `rerank.max_request_chars` is SEARCH_RERANK_MAX_REQUEST_CHARS."""
    root = tmp_path_factory.mktemp("search-rerank-models")
    for repository in (model_repository, rerank_repository):
        for name in repository.models():
            (root / name).symlink_to(repository.root / name, target_is_directory=True)
    env = {"FACET_RERANK_MAX_REQUEST_CHARS": str(SEARCH_RERANK_MAX_REQUEST_CHARS)}
    server = ServerProcess(root, tmp_path_factory.mktemp("data"), env)
    server.start()
    yield server
    with contextlib.suppress(Exception):
        server.terminate(10.0)


def new_collection(client: sdk.Client, documents: list[str]) -> str:
    """A new cosine collection holding `documents` as d0, d1, ... (embedded by the service); its name."""
    name = f"c-{uuid.uuid4().hex[:8]}"
    client.create_collection(name)
    client.upsert(name, ids=[f"d{i}" for i in range(len(documents))], texts=documents)
    return name
