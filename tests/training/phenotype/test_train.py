"""Phenotype training on real procedural faces: stage 1 beats the mean face, the trained factor
encoder keeps its slices apart, an edit through the whole pipeline (encode, overwrite one slice,
decode) changes the image inside that attribute's region more than outside, a resumed run ends
with bit-identical weights, the SSIM loss is scikit-image's, and bad configs are refused naming
the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from services.phenotype.catalog import ATTRIBUTE_NAMES, ATTRIBUTES
from training.phenotype.faces import FACTOR_NAMES, make_faces
from training.phenotype.model import ModelConfig
from training.phenotype.train import (
    STATE_FILE,
    FinetuneConfig,
    TrainingConfig,
    TrainResult,
    finetune_on_image,
    load_checkpoint,
    ssim,
    train,
)

SIZE = 16  # the smallest face `faces` draws: seconds of training on one core
TINY_MODEL = ModelConfig(image_size=SIZE, slice_dim=4, identity_dim=16, factor_count=len(FACTOR_NAMES), base_channels=8,
                         max_channels=32, identity_hidden=64, discriminator_channels=8, discriminator_layers=2)  # fmt: skip


def tiny(**overrides: Any) -> TrainingConfig:
    base: dict[str, Any] = dict(stage1_steps=150, stage2_steps=100, batch_size=16, train_faces=400, validation_faces=64,
                                eval_every=50, model=TINY_MODEL)  # fmt: skip
    return TrainingConfig(**{**base, **overrides})


class Killed(Exception):
    """The process dies mid-run (simulated)."""


def weights(result: TrainResult) -> dict[str, torch.Tensor]:
    modules = {"f": result.factor_encoder, "g": result.generator, "e": result.image_encoder}
    return {f"{n}.{k}": v.detach().clone() for n, m in modules.items() for k, v in m.state_dict().items()}


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return train(tiny(), tmp_path_factory.mktemp("phenotype"), progress=False, device="cpu")


@pytest.fixture(scope="module")
def test_faces() -> tuple[torch.Tensor, torch.Tensor]:
    """Faces neither stage saw (another seed): images float32 [B, 3, S, S] in [0, 1], factors [B, F]."""
    faces = make_faces(32, seed=5, size=SIZE, progress=False)
    return torch.from_numpy(faces.images).permute(0, 3, 1, 2).float() / 255.0, torch.from_numpy(faces.factors)


def test_both_stages_learn(trained: TrainResult) -> None:
    m = trained.metrics
    assert m["stage1_l1"] < 0.8 * m["mean_face_l1"]  # the generator beats the average face
    assert m["stage1_ssim"] > 0.6
    history = trained.history
    assert [h["step"] for h in history] == [50, 100, 150, 200, 250]
    assert [h["stage"] for h in history] == [1, 1, 1, 2, 2]
    assert history[2]["reconstruction"] < history[0]["reconstruction"]
    assert history[-1]["stage2_latent_mse"] < history[-2]["stage2_latent_mse"]
    assert m["stage2_reconstruction_l1"] < m["mean_face_l1"]  # encode -> decode beats the mean face too
    assert history[-1]["stage1_l1"] == history[2]["stage1_l1"]  # stage 2 leaves the generator alone
    assert not any(module.training for module in (trained.factor_encoder, trained.generator, trained.image_encoder))


@torch.no_grad()
def test_one_factor_moves_only_its_slice(trained: TrainResult, test_faces: tuple[torch.Tensor, torch.Tensor]) -> None:
    _, factors = test_faces
    before = trained.factor_encoder(factors)
    layout = trained.config.model.latent_layout()
    for i, name in enumerate(ATTRIBUTE_NAMES):
        changed = factors.clone()
        changed[:, i] = 1.0 - changed[:, i]
        after = trained.factor_encoder(changed)
        start, stop = layout[name]
        assert torch.equal(before[:, :start], after[:, :start]) and torch.equal(before[:, stop:], after[:, stop:]), name
        assert float((before[:, start:stop] - after[:, start:stop]).abs().mean()) > 1e-3, name


@pytest.mark.parametrize("attribute", ["skin_tone", "hair_colour"])  # what a 16x16 run of seconds learns
@torch.no_grad()
def test_an_edit_changes_its_region_more_than_the_rest(
    trained: TrainResult, test_faces: tuple[torch.Tensor, torch.Tensor], attribute: str
) -> None:
    """Encode unseen faces, overwrite the attribute's slice with the factor encoder's slice for the
    far end of its range, decode: the mean pixel change inside the catalog's region box exceeds the
    change outside it."""
    images, factors = test_faces
    index = ATTRIBUTE_NAMES.index(attribute)
    start, stop = trained.config.model.latent_layout()[attribute]
    latent = trained.image_encoder(images)
    target = factors.clone()
    target[:, index] = (factors[:, index] < 0.5).to(torch.float32)  # the other end of the range
    edited = latent.clone()
    edited[:, start:stop] = trained.factor_encoder(target)[:, start:stop]
    change = (trained.generator(edited) - trained.generator(latent)).abs().mean(dim=1)  # [B, S, S]
    top, left, bottom, right = (round(v * SIZE) for v in ATTRIBUTES[index].region)
    inside = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    inside[top:bottom, left:right] = True
    assert float(change[:, inside].mean()) > 1.25 * float(change[:, ~inside].mean())
    assert float(change[:, inside].mean()) > 0.02  # a visible change, not noise


def test_one_shot_finetuning_fits_the_image_and_keeps_edits(
    trained: TrainResult, test_faces: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """Fine-tuning on one unseen face lowers its encode -> decode error, leaves the trained
    generator untouched, and a skin-tone edit through the tuned generator still lands in its region."""
    images, factors = test_faces
    image = images[:1]
    before = {k: v.clone() for k, v in trained.generator.state_dict().items()}
    tuned, latent = finetune_on_image(
        trained.generator, trained.image_encoder, image, FinetuneConfig(steps=30, lr=1e-3)
    )
    assert same_weights(before, dict(trained.generator.state_dict()))
    with torch.no_grad():
        error_before = float((trained.generator(latent) - image).abs().mean())
        error_after = float((tuned(latent) - image).abs().mean())
        assert error_after < 0.8 * error_before
        start, stop = trained.config.model.latent_layout()["skin_tone"]
        target = factors[:1].clone()
        target[:, 0] = float(factors[0, 0] < 0.5)
        edited = latent.clone()
        edited[:, start:stop] = trained.factor_encoder(target)[:, start:stop]
        change = (tuned(edited) - tuned(latent)).abs().mean(dim=1)[0]
    top, left, bottom, right = (round(v * SIZE) for v in ATTRIBUTES[0].region)
    inside = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    inside[top:bottom, left:right] = True
    assert float(change[inside].mean()) > 1.25 * float(change[~inside].mean())
    with pytest.raises(ValueError, match=r"image must be float32 \[1, 3, 16, 16\]"):
        finetune_on_image(trained.generator, trained.image_encoder, images[:2])
    with pytest.raises(ValueError, match="FinetuneConfig.steps"):
        FinetuneConfig(steps=0)


def test_checkpoint_round_trip(trained: TrainResult) -> None:
    factor_encoder, generator, image_encoder, config = load_checkpoint(trained.checkpoint)
    assert config == trained.config
    for loaded, original in ((factor_encoder, trained.factor_encoder), (generator, trained.generator),
                             (image_encoder, trained.image_encoder)):  # fmt: skip
        assert same_weights({k: v for k, v in loaded.state_dict().items()}, dict(original.state_dict()))


def test_resume_after_an_interruption_is_bit_identical(tmp_path: Path) -> None:
    """Killed at the checkpoint inside stage 1 and resumed: the same weights as an uninterrupted run
    (the resume crosses into stage 2)."""
    config = tiny(stage1_steps=6, stage2_steps=4, eval_every=3, train_faces=64, validation_faces=16)
    whole = weights(train(config, tmp_path / "whole", progress=False, device="cpu"))

    def die(work_dir: Path, entry: dict[str, Any]) -> None:
        if entry["step"] == 3:
            raise Killed

    with pytest.raises(Killed):
        train(config, tmp_path / "resumed", progress=False, device="cpu", on_checkpoint=die)
    assert torch.load(tmp_path / "resumed" / STATE_FILE, weights_only=True)["step"] == 3
    resumed = train(config, tmp_path / "resumed", progress=False, device="cpu")
    assert same_weights(whole, weights(resumed))
    assert [h["step"] for h in resumed.history] == [3, 6, 9, 10]
    with pytest.raises(ValueError, match="another TrainingConfig"):
        train(tiny(stage1_steps=7, stage2_steps=4, eval_every=3, train_faces=64, validation_faces=16),
              tmp_path / "resumed", progress=False, device="cpu")  # fmt: skip


def test_ssim_is_wang_et_al(test_faces: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The loss's SSIM equals scikit-image's (Gaussian window, sigma 1.5, population covariances)."""
    images, _ = test_faces
    a, b = images[:4], images[4:8].flip(0)
    ours = ssim(a, b).numpy()
    theirs = [
        structural_similarity(
            x.permute(1, 2, 0).numpy(),
            y.permute(1, 2, 0).numpy(),
            data_range=1.0,
            channel_axis=2,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )  # fmt: skip
        for x, y in zip(a, b, strict=True)
    ]
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    assert float(ssim(a, a).min()) > 0.9999


@pytest.mark.parametrize(
    ("field", "value"),
    [("stage1_steps", 0), ("stage2_steps", 0), ("batch_size", 0), ("lr", 0.0), ("discriminator_lr", float("nan")),
     ("encoder_lr", 1.5), ("max_grad_norm", 0.0), ("l1_weight", -1.0), ("ssim_weight", float("inf")), ("adversarial_weight", -0.1),
     ("train_faces", 0), ("eval_every", 0), ("validation_seed", 0), ("seed", True)],
)  # fmt: skip
def test_bad_config_names_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=f"TrainingConfig.{field} must be"):
        tiny(**{field: value})


def test_config_round_trip_and_model_checks() -> None:
    config = tiny(adversarial_weight=0.0)
    assert TrainingConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown TrainingConfig keys: steps"):
        TrainingConfig.from_dict({"steps": 3})
    with pytest.raises(ValueError, match="TrainingConfig.model.factor_count"):
        tiny(model=ModelConfig(image_size=SIZE, factor_count=len(FACTOR_NAMES) + 1, discriminator_layers=2))
    with pytest.raises(ValueError, match="device"):
        train(config, Path("/nonexistent"), progress=False, device="tpu")
