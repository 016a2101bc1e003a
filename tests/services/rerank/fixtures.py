"""The rerank capability's fixtures (a pytest plugin, registered by the root conftest): a tiny
cross-encoder trained by the project's own code, and Rerank servers on every backend."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.model_repository import Key, ModelRepository
from services.rerank.catalog import File, Prop
from services.rerank.config import RerankConfig
from tests.serving import SERVICE_BACKENDS, ServerProcess, started_servers

# The tiny test model is registered under the default reranker's name, so the service (and the
# launcher, which then has nothing to build) find it without settings.
RERANKER = RerankConfig().model
# The same weights with twice the temperature, under another name: a second served reranker.
SECOND_RERANKER = "tiny-rerank-hot"


def _register_second(repository: ModelRepository) -> None:
    entry = repository.get(RERANKER)
    metadata = {k: v for k, v in entry.metadata.items() if k not in (Key.FILES, Key.VERSION)}
    metadata[Key.PROPERTIES] = {**entry.properties, Prop.TEMPERATURE: 2.0 * float(entry.properties[Prop.TEMPERATURE])}
    repository.register(SECOND_RERANKER, entry.model_file, metadata, extra_files={File.TOKENIZER: entry.file(File.TOKENIZER)})


@pytest.fixture(scope="session")
def rerank_repository(tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    """A tiny cross-encoder (2 of MiniLM's layers, short max length, a few dozen steps on real
    pairs) built by `training.rerank.build.build_test_model`, plus `SECOND_RERANKER`.
    FACET_TEST_RERANK_REPOSITORY reuses a build (local runs; it is built there once)."""
    from training.rerank.build import build_test_model

    reuse = os.environ.get("FACET_TEST_RERANK_REPOSITORY")
    repository = ModelRepository(Path(reuse) if reuse else tmp_path_factory.mktemp("rerank-models"))
    if not repository.has(RERANKER):
        build_test_model(repository, tmp_path_factory.mktemp("rerank-work"), name=RERANKER)
    if not repository.has(SECOND_RERANKER):
        _register_second(repository)
    return repository


@pytest.fixture(scope="module", params=SERVICE_BACKENDS)
def rerank_server(request: pytest.FixtureRequest, rerank_repository: ModelRepository, serve) -> Iterator[ServerProcess]:  # type: ignore[no-untyped-def]
    yield from serve("rerank", rerank_repository, request.param)


@pytest.fixture(scope="module")
def start_rerank_server(rerank_repository: ModelRepository, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServerProcess]]:
    """Factory: start_rerank_server(env={...}) -> a SERVING rerank ServerProcess (ONNX Runtime)
    on the test rerankers with the given settings, stopped at the end of the module (an idle server still takes memory and some CPU)."""
    yield from started_servers(rerank_repository, tmp_path_factory, "rerank")
