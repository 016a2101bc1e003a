"""The retrieval capability's fixtures (a pytest plugin, registered by the root conftest): the real
default embedding model, built once per session, retrieval servers on loopback with port 0, and
a real Milvus standalone server for the Milvus store (one per session; each user gets its own
Milvus database, so collections of the same name never meet)."""

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
STORES = ("embedded", "milvus")
# The retrieval servers the service suite runs on: each inference backend with the embedded store,
# and "milvus": ONNX Runtime with the Milvus store (the store is independent of the backend).
RETRIEVAL_SERVERS = (*SERVICE_BACKENDS, "milvus")


# Test-speed settings of the session's Milvus: the proxy's time tick every 50 ms (200 ms by
# default) bounds how long a Strong read waits for the writes before it (about 0.3 s per search
# at the default, 0.05 s here), at some idle CPU (about 2.5% of a core at the default).
FAST_MILVUS = {"proxy.timeTickInterval": 50}


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """http://127.0.0.1:PORT of a real Milvus 2.3 standalone (deploy/milvus.py) for the session;
    FACET_TEST_MILVUS_URI reuses a running one (local runs)."""
    reuse = os.environ.get("FACET_TEST_MILVUS_URI")
    if reuse:
        yield reuse
        return
    from deploy.milvus import LocalMilvus

    server = LocalMilvus(tmp_path_factory.mktemp("milvus"), settings=FAST_MILVUS).start()
    yield server.uri
    server.stop()


@contextlib.contextmanager
def milvus_database(uri: str) -> Iterator[str]:
    """A new, empty Milvus database on `uri`, dropped with its collections afterwards (Milvus
    holds at most 64 databases)."""
    from pymilvus import MilvusClient

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = MilvusClient(uri=uri)
    admin.create_database(name)
    try:
        yield name
    finally:
        with contextlib.suppress(Exception):
            inside = MilvusClient(uri=uri, db_name=name)
            for collection in inside.list_collections():
                inside.drop_collection(collection)
            inside.close()
            admin.drop_database(name)
        admin.close()


@contextlib.contextmanager
def store_env(store: str, request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The environment that puts a retrieval service on `store` ("embedded": none needed;
    "milvus": the session's Milvus, in a database of its own)."""
    if store == "embedded":
        yield {}
        return
    uri = request.getfixturevalue("milvus_uri")
    with milvus_database(uri) as database:
        yield {"FACET_RETRIEVAL_STORE": "milvus", "FACET_RETRIEVAL_MILVUS_URI": uri, "FACET_RETRIEVAL_MILVUS_DATABASE": database}


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


@pytest.fixture(scope="module", params=RETRIEVAL_SERVERS)
def retrieval_server(request: pytest.FixtureRequest, model_repository: ModelRepository, serve) -> Iterator[ServerProcess]:  # type: ignore[no-untyped-def]
    """A retrieval server on each of RETRIEVAL_SERVERS (the inference backends, and the Milvus store)."""
    if request.param == "milvus":
        with store_env("milvus", request) as env:
            yield from serve("retrieval", model_repository, "onnxruntime", env)
    else:
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
