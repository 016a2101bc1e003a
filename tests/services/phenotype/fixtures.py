"""The phenotype capability's fixtures (a pytest plugin, registered by the root conftest): a tiny
model set (16 x 16 faces) trained by the project's own code on procedural faces — generator,
factor and image encoders, attribute regressor, identity embedding — and Phenotype servers on
every backend."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.model_repository import Key, ModelRepository
from services.phenotype.catalog import File
from services.phenotype.config import PhenotypeConfig
from tests.serving import SERVICE_BACKENDS, ServerProcess, started_servers

# The tiny set is registered under the default generator's name, so the service (and the
# launcher, which then has nothing to build) find it without settings.
FACE_MODEL = PhenotypeConfig().model
# The same generator under another name (its companions shared): a second served face model.
SECOND_FACE_MODEL = "tiny-faces-copy"
TEST_IMAGE_SIZE = 16


def _register_second(repository: ModelRepository) -> None:
    entry = repository.get(FACE_MODEL)
    metadata = {k: v for k, v in entry.metadata.items() if k not in (Key.FILES, Key.VERSION)}
    repository.register(SECOND_FACE_MODEL, entry.model_file, metadata, extra_files={File.CHECKPOINT: entry.file(File.CHECKPOINT)})


@pytest.fixture(scope="session")
def phenotype_repository(tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    """A tiny phenotype model set (`training.phenotype.build.build_test_model`: both trainings on
    procedural faces, exported and parity-checked) and `SECOND_FACE_MODEL`.
    FACET_TEST_PHENOTYPE_REPOSITORY reuses a build (local runs; it is built there once)."""
    reuse = os.environ.get("FACET_TEST_PHENOTYPE_REPOSITORY")
    repository = ModelRepository(Path(reuse) if reuse else tmp_path_factory.mktemp("phenotype-models"))
    if not repository.has(FACE_MODEL):
        from training.phenotype.build import build_test_model

        build_test_model(repository, tmp_path_factory.mktemp("phenotype-work"), name=FACE_MODEL, size=TEST_IMAGE_SIZE)
    if not repository.has(SECOND_FACE_MODEL):
        _register_second(repository)
    return repository


@pytest.fixture(scope="module", params=SERVICE_BACKENDS)
def phenotype_server(request: pytest.FixtureRequest, phenotype_repository: ModelRepository, serve) -> Iterator[ServerProcess]:  # type: ignore[no-untyped-def]
    yield from serve("phenotype", phenotype_repository, request.param)


@pytest.fixture(scope="module")
def start_phenotype_server(
    phenotype_repository: ModelRepository, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., ServerProcess]]:
    """Factory: start_phenotype_server(env={...}) -> a SERVING phenotype ServerProcess (ONNX
    Runtime) on the test face models with the given settings, stopped at the end of the module (an idle server still takes memory and some CPU)."""
    yield from started_servers(phenotype_repository, tmp_path_factory, "phenotype")
