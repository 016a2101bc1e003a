"""`has_defaults` and `build_defaults` decide what `facet models build` builds: the default SAE
family unless it (or someone's own SAEs) is there, finished; the next-frame models of each
dataset that lacks one. The builds themselves are replaced by recorders here (they take minutes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.model_repository import METADATA_FILE, MODEL_FILE, ModelRepository, ModelVersion
from services.nextframe.catalog import Kind as FrameKind
from services.nextframe.catalog import Prop as FrameProp
from services.sae.catalog import ANALYSIS_FORMAT_KEY, File
from services.sae.catalog import Kind as SaeKind
from training.nextframe import build as nextframe_build
from training.sae import build as sae_build


def _put(
    repository: ModelRepository,
    name: str,
    kind: str,
    analysis: dict[str, Any] | None = None,
    properties: dict[str, Any] | None = None,
) -> None:
    """A version directory as the repository lists it (the model file's content is not read),
    with an analysis file holding `analysis`'s arrays when given."""
    version = repository.root / name / "1"
    version.mkdir(parents=True)
    (version / MODEL_FILE).write_bytes(b"")
    metadata: dict[str, Any] = {"kind": kind, "properties": properties or {}}
    if analysis is not None:
        np.savez(version / "analysis.npz", **analysis)
        metadata["files"] = {File.ANALYSIS: "analysis.npz"}
    (version / METADATA_FILE).write_text(json.dumps(metadata))


def _record_builds(monkeypatch: pytest.MonkeyPatch, module: Any) -> list[Any]:
    calls: list[Any] = []

    def build(repository: ModelRepository, options: Any) -> list[ModelVersion]:
        calls.append(options)
        return [ModelVersion("built", 1, repository.root, {})]

    monkeypatch.setattr(module, "build", build)
    return calls


def test_sae_defaults_are_built_into_a_repository_without_saes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repository = ModelRepository(tmp_path / "models")
    _put(repository, "all-minilm-l6-v2", "embedding")
    assert not sae_build.has_defaults(repository)
    calls = _record_builds(monkeypatch, sae_build)
    assert [v.name for v in sae_build.build_defaults(repository, tmp_path / "work")] == ["built"]
    assert calls == [sae_build.BuildOptions(work_dir=tmp_path / "work")]


def test_an_interrupted_default_sae_family_is_built_again(tmp_path: Path) -> None:
    repository = ModelRepository(tmp_path)
    names = sae_build.default_model_names()
    _put(repository, names[0], SaeKind.LM_RESIDUAL)
    _put(repository, names[1], SaeKind.SAE)  # the first SAE, and nothing after it
    assert not sae_build.has_defaults(repository)
    for name in names[2:]:
        _put(repository, name, SaeKind.SAE)
    assert sae_build.has_defaults(repository)
    assert sae_build.build_defaults(repository, tmp_path / "work") == []


@pytest.mark.parametrize("current", [True, False])
def test_a_default_family_with_analysis_files_of_an_older_format_is_built_again(tmp_path: Path, current: bool) -> None:
    repository = ModelRepository(tmp_path)
    names = sae_build.default_model_names()
    _put(repository, names[0], SaeKind.LM_RESIDUAL)
    arrays = {"top_values": np.zeros((2, 3))} | ({ANALYSIS_FORMAT_KEY: np.zeros((2, 3))} if current else {})
    for name in names[1:]:
        _put(repository, name, SaeKind.SAE, analysis=arrays)
    # files from before token spans: the service would refuse them, so the default build redoes them
    assert sae_build.has_defaults(repository) is current


def test_someone_elses_saes_stand_in_for_the_default_family(tmp_path: Path) -> None:
    repository = ModelRepository(tmp_path)
    _put(repository, "my-sae", SaeKind.SAE)
    assert sae_build.has_defaults(repository)


def _put_frame_model(repository: ModelRepository, dataset: str, probe_has_ood: bool = True) -> None:
    """A dataset's frame model and its probe, the probe with (or without) an OOD threshold."""
    name, probe = nextframe_build.model_name(dataset), f"{nextframe_build.model_name(dataset)}-probe"
    _put(repository, name, FrameKind.FRAME_MODEL, properties={FrameProp.PROBE_MODEL: probe})
    _put(repository, probe, FrameKind.CONSTANT_PROBE, properties={FrameProp.OOD_THRESHOLD: 1.5} if probe_has_ood else {})


def test_nextframe_builds_each_missing_dataset_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repository = ModelRepository(tmp_path / "models")
    datasets = nextframe_build.FrameBuildOptions().datasets
    for dataset in datasets[1:]:
        _put_frame_model(repository, dataset)
    assert not nextframe_build.has_defaults(repository)
    calls = _record_builds(monkeypatch, nextframe_build)
    assert len(nextframe_build.build_defaults(repository, tmp_path / "work")) == 1
    assert calls == [nextframe_build.FrameBuildOptions(datasets=datasets[:1], work_dir=tmp_path / "work")]
    _put_frame_model(repository, datasets[0])
    assert nextframe_build.has_defaults(repository)
    assert nextframe_build.build_defaults(repository, tmp_path / "work") == []


def test_nextframe_models_whose_probe_predates_the_ood_score_are_built_again(tmp_path: Path) -> None:
    repository = ModelRepository(tmp_path / "models")
    datasets = nextframe_build.FrameBuildOptions().datasets
    for dataset in datasets:
        _put_frame_model(repository, dataset, probe_has_ood=dataset != datasets[-1])
    assert not nextframe_build.has_defaults(repository)
