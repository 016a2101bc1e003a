"""The next-frame capability's fixtures (a pytest plugin, registered by the root conftest): tiny
frame models for every dataset, NextFrame servers on every backend, and a server on models
that produce NaN and inf (fault injection)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.model_repository import ModelRepository
from tests.serving import SERVICE_BACKENDS, ServerProcess

BROKEN_MODEL = "nextframe-broken"


@pytest.fixture(scope="session")
def nextframe_repository(tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    """Tiny next-frame models for every dataset, built by the project's own build (real simulated
    videos, a small U-Net trained briefly): enough to test the service and the launcher (which
    then has nothing to build), not to judge the physics. FACET_TEST_NEXTFRAME_REPOSITORY reuses
    a build (local runs; it is built there once)."""
    from training.nextframe.build import FrameBuildOptions, build

    reuse = os.environ.get("FACET_TEST_NEXTFRAME_REPOSITORY")
    repository = ModelRepository(Path(reuse) if reuse else tmp_path_factory.mktemp("nextframe-models"))
    built = repository.root / ".facet-test-build-complete"
    if not built.exists():
        options = FrameBuildOptions(videos=20, frames=10, steps=30, batch=8, base_channels=8, depth=2, probe_steps=100,
                                    random_inits=2, end_to_end_steps=20, progress=False)  # fmt: skip
        build(repository, options)
        built.touch()
    return repository


@pytest.fixture(scope="module", params=SERVICE_BACKENDS)
def nextframe_server(request: pytest.FixtureRequest, nextframe_repository: ModelRepository, serve) -> Iterator[ServerProcess]:  # type: ignore[no-untyped-def]
    yield from serve("nextframe", nextframe_repository, request.param)


def write_broken_repository(source: ModelRepository, root: Path) -> ModelRepository:
    """A repository with one frame model, `BROKEN_MODEL`, whose ONNX graphs answer NaN (the next
    frame) and inf (the probe's constant), beside `source`'s pendulum features model: what a
    broken export or a backend fault would send. Registered with the pendulum model's metadata."""
    import torch

    from services.nextframe.catalog import Prop
    from training.onnx_export import export_module

    class NanFrame(torch.nn.Module):
        def forward(self, context: torch.Tensor) -> torch.Tensor:
            return context[:, -1:] * float("nan")

    class InfProbe(torch.nn.Module):
        def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            total = features.sum(1)
            return total * 0 + float("inf"), total * 0 + 1.0

    repository = ModelRepository(root)
    pendulum = source.get("nextframe-pendulum")
    features = source.get(pendulum.properties[Prop.FEATURES_MODEL])
    probe = source.get(pendulum.properties[Prop.PROBE_MODEL])
    context = torch.zeros(1, 5, 64, 64)
    export_module(NanFrame(), (context,), root / "nan.onnx", ["context"], ["next_frame"], {"context": {0: "batch"}, "next_frame": {0: "batch"}})
    width = int(torch.load(probe.path / probe.metadata["files"]["probe_weights"], weights_only=True)["feature_mean"].shape[0])
    export_module(InfProbe(), (torch.zeros(1, width),), root / "inf.onnx", ["features"], ["constant", "ood_score"],
                  {"features": {0: "batch"}, "constant": {0: "batch"}, "ood_score": {0: "batch"}})  # fmt: skip
    strip = ("files", "version")
    repository.register(f"{BROKEN_MODEL}-features", features.model_file, {k: v for k, v in features.metadata.items() if k not in strip})
    repository.register(f"{BROKEN_MODEL}-probe", root / "inf.onnx", {k: v for k, v in probe.metadata.items() if k not in strip})
    frame_meta = {k: v for k, v in pendulum.metadata.items() if k not in strip}
    frame_meta["properties"] = {**pendulum.properties, Prop.FEATURES_MODEL: f"{BROKEN_MODEL}-features", Prop.PROBE_MODEL: f"{BROKEN_MODEL}-probe"}
    repository.register(BROKEN_MODEL, root / "nan.onnx", frame_meta)
    return repository


@pytest.fixture(scope="session")
def broken_nextframe_server(nextframe_repository: ModelRepository, tmp_path_factory: pytest.TempPathFactory, serve) -> Iterator[ServerProcess]:  # type: ignore[no-untyped-def]
    """A NextFrame server (ONNX Runtime: the output checks are the service's, on every backend)
    on `write_broken_repository`'s models."""
    yield from serve("nextframe", write_broken_repository(nextframe_repository, tmp_path_factory.mktemp("nextframe-broken")), "onnxruntime")
