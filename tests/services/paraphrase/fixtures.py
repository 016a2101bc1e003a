"""The paraphrase capability's fixtures (a pytest plugin, registered by the root conftest): a tiny
DDL+VSAR paraphraser trained by the project's own code on real Quora pairs (with the embedding
model beside it), and Paraphrase servers on every backend."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.model_repository import Key, ModelRepository
from services.paraphrase.catalog import File, Prop
from services.paraphrase.config import ParaphraseConfig
from tests.serving import SERVICE_BACKENDS, ServerProcess, started_servers

# The tiny test model is registered under the default paraphraser's name, so the service (and the
# launcher, which then has nothing to build) find it without settings.
PARAPHRASER = ParaphraseConfig().model
# The same decoder step (and encoder) under another name: a second served paraphraser.
SECOND_PARAPHRASER = "tiny-paraphraser-copy"


def _register_second(repository: ModelRepository) -> None:
    entry = repository.get(PARAPHRASER)
    metadata = {k: v for k, v in entry.metadata.items() if k not in (Key.FILES, Key.VERSION)}
    metadata[Key.PROPERTIES] = {**entry.properties, Prop.SETTING: "ddl"}  # told apart by its setting
    repository.register(SECOND_PARAPHRASER, entry.model_file, metadata, extra_files={File.TOKENIZER: entry.file(File.TOKENIZER)})


@pytest.fixture(scope="session")
def paraphrase_repository(tmp_path_factory: pytest.TempPathFactory, model_repository: ModelRepository) -> ModelRepository:
    """A tiny DDL+VSAR paraphraser (`training.paraphrase.build.build_test_model`: trained by
    `train` on a few hundred Quora pairs, exported and parity-checked), its encoder, the embedding
    model (linked from the session's retrieval build, `model_repository`), and `SECOND_PARAPHRASER`.
    FACET_TEST_PARAPHRASE_REPOSITORY reuses a build (local runs; it is built there once)."""
    reuse = os.environ.get("FACET_TEST_PARAPHRASE_REPOSITORY")
    repository = ModelRepository(Path(reuse) if reuse else tmp_path_factory.mktemp("paraphrase-models"))
    if not repository.has(PARAPHRASER):
        from training.paraphrase.build import build_test_model

        build_test_model(repository, tmp_path_factory.mktemp("paraphrase-work"), name=PARAPHRASER, embedding_from=model_repository)
    if not repository.has(SECOND_PARAPHRASER):
        _register_second(repository)
    return repository


@pytest.fixture(scope="module", params=SERVICE_BACKENDS)
def paraphrase_server(request: pytest.FixtureRequest, paraphrase_repository: ModelRepository, serve) -> Iterator[ServerProcess]:  # type: ignore[no-untyped-def]
    yield from serve("paraphrase", paraphrase_repository, request.param)


@pytest.fixture(scope="module")
def start_paraphrase_server(
    paraphrase_repository: ModelRepository, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., ServerProcess]]:
    """Factory: start_paraphrase_server(env={...}) -> a SERVING paraphrase ServerProcess (ONNX
    Runtime) on the test paraphrasers with the given settings, stopped at the end of the module (an idle server still takes memory and some CPU)."""
    yield from started_servers(paraphrase_repository, tmp_path_factory, "paraphrase")
