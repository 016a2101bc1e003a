"""The SAE capability's fixtures (a pytest plugin, registered by the root conftest): small SAE
families built by the project's own build, and SAE servers on every backend."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.model_repository import ModelRepository
from tests.serving import SERVICE_BACKENDS, ServerProcess

TEST_SAE_OPTIONS = {"layer": 6, "tokens": 12_000, "epochs": 3, "widths": (128, 256), "k": 8, "batch_tokens": 512, "context_tokens": 64, "ce_contexts": 8}
TEST_SAE_SMALL = "smollm2-135m-l6-batchtopk-w128"
TEST_SAE_LARGE = "smollm2-135m-l6-batchtopk-w256"
# A one-SAE family at another layer: comparing it with the layer-6 SAEs must be refused.
OTHER_LAYER_OPTIONS = {"layer": 3, "tokens": 4_000, "epochs": 2, "widths": (96,), "k": 8, "batch_tokens": 512, "context_tokens": 64, "ce_contexts": 4}
OTHER_LAYER_SAE = "smollm2-135m-l3-batchtopk-w96"


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


@pytest.fixture(scope="module", params=SERVICE_BACKENDS)
def sae_server(request: pytest.FixtureRequest, sae_repository: ModelRepository, serve) -> Iterator[ServerProcess]:  # type: ignore[no-untyped-def]
    yield from serve("sae", sae_repository, request.param)
