"""The unfactorised InterFaceGAN-style baseline: linear directions over an autoencoder's latent,
evaluated by the same `evaluate` as the factorised editor."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from services.model_repository import ModelRepository
from services.phenotype.catalog import ATTRIBUTE_NAMES, File
from tests.services.phenotype.fixtures import FACE_MODEL, TEST_IMAGE_SIZE
from training.phenotype.baseline import BaselineConfig, BaselineEditor, fit_directions, load_baseline, train_baseline
from training.phenotype.build import tiny_configs
from training.phenotype.evaluate import Evaluation, evaluate, load_set


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> tuple[BaselineEditor, Path]:
    torch.set_num_threads(1)
    training, _ = tiny_configs(TEST_IMAGE_SIZE)
    config = BaselineConfig.matching(training)  # the tiny factorised set's faces, schedule and architecture
    work = tmp_path_factory.mktemp("baseline")
    return train_baseline(config, work, progress=False, device="cpu"), work


@pytest.fixture(scope="module")
def evaluation(baseline: tuple[BaselineEditor, Path], phenotype_repository: ModelRepository) -> Evaluation:
    _, readers = load_set(checkpoint_dir=phenotype_repository.get(FACE_MODEL).file(File.CHECKPOINT))
    return evaluate(baseline[0], readers, faces=60)


def test_fit_directions_recovers_a_linear_model() -> None:
    rng = np.random.default_rng(0)
    latents = rng.normal(size=(300, 10))
    weights, intercepts = rng.normal(size=(3, 10)), np.array([0.5, -1.0, 2.0])
    latents[:, 0] *= 5.0  # anisotropic, as an autoencoder's latent is
    fitted_w, fitted_b, directions = fit_directions(latents, latents @ weights.T + intercepts)
    np.testing.assert_allclose(fitted_w, weights, atol=1e-4)
    np.testing.assert_allclose(fitted_b, intercepts, atol=1e-4)
    # each direction is the latent's covariance with the prediction, scaled to move it by one unit
    covariance = np.cov(latents, rowvar=False)
    for a in range(3):
        pattern = covariance @ weights[a]
        np.testing.assert_allclose(directions[a], pattern / (pattern @ weights[a]), rtol=1e-3, atol=1e-6)
        assert directions[a] @ fitted_w[a] == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ValueError, match="N > L"):
        fit_directions(latents[:5], latents[:5, :3])


def test_an_edit_moves_along_the_direction_until_the_regression_predicts_the_target(
    baseline: tuple[BaselineEditor, Path],
) -> None:
    editor, _ = baseline
    latent = torch.randn(5, editor.weights.shape[1], generator=torch.Generator().manual_seed(1))
    a = ATTRIBUTE_NAMES.index("hair_colour")
    edited = editor.set_attribute(latent, "hair_colour", 0.8)
    torch.testing.assert_close(editor.predict(edited)[:, a], torch.full((5,), 0.8), atol=1e-4, rtol=0)
    change = edited - latent
    d = editor.directions[a] / editor.directions[a].norm()
    torch.testing.assert_close(change, (change @ d)[:, None] * d[None, :], atol=1e-5, rtol=0)  # only along it


def test_the_baseline_is_evaluated_by_the_same_table(evaluation: Evaluation) -> None:
    assert [r.attribute for r in evaluation.rows] == list(ATTRIBUTE_NAMES)
    assert evaluation.frechet_generated is None and "n/a (no factor encoder)" in evaluation.markdown()
    assert evaluation.method.startswith("unfactorised baseline") and 0.0 < evaluation.reconstruction_error < 0.5
    # a linear direction does move the colours towards their targets (InterFaceGAN's premise)
    for name in ("skin_tone", "hair_colour"):
        row = evaluation.row(name)
        assert row.error < 0.7 * row.no_edit_error, (name, row.error, row.no_edit_error)


def test_a_trained_baseline_is_saved_and_loaded_back(baseline: tuple[BaselineEditor, Path]) -> None:
    editor, work = baseline
    loaded, config = load_baseline(work / "baseline.safetensors")
    assert config.model.image_size == TEST_IMAGE_SIZE
    x = torch.rand(2, 3, TEST_IMAGE_SIZE, TEST_IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded.decode(loaded.set_attribute(loaded.encode(x), "skin_tone", 0.3)),
                                   editor.decode(editor.set_attribute(editor.encode(x), "skin_tone", 0.3)))  # fmt: skip
    again = train_baseline(config, work, progress=False, device="cpu")  # the same config: loaded, not trained again
    torch.testing.assert_close(again.weights, editor.weights)


def test_bad_configs_are_refused() -> None:
    for changes in ({"steps": 0}, {"lr": 0.0}, {"max_grad_norm": float("inf")}, {"l1_weight": 0.0, "ssim_weight": 0.0}):
        with pytest.raises(ValueError, match="BaselineConfig"):
            dataclasses.replace(BaselineConfig(), **changes)
