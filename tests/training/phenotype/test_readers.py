"""The edit report's readers: the attribute regressor and the identity embedding, trained on tiny
procedural faces (32x32), judged on faces and people they never saw."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from services.phenotype.catalog import ATTRIBUTE_NAMES
from training.phenotype.faces import FACTOR_NAMES, IDENTITY_FACTORS, make_faces, render, sample_factors
from training.phenotype.readers import (
    CHECKPOINT_FILE,
    STATE_FILE,
    IdentityEmbedding,
    ReadersConfig,
    ReadersResult,
    Regressor,
    load_readers,
    random_blur,
    train_readers,
)

SIZE = 32
TINY = ReadersConfig(
    image_size=SIZE, train_identities=120, valid_identities=8, renders_per_identity=4, identities_per_batch=16,
    steps=160, base_channels=8, hidden=64, embedding_dim=16, checkpoint_every=80,
)  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> ReadersResult:
    torch.set_num_threads(1)
    return train_readers(TINY, tmp_path_factory.mktemp("readers"), progress=False, device="cpu")


def _floats(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


def test_regressor_reads_attributes_far_better_than_predicting_the_mean(trained: ReadersResult) -> None:
    held_out = make_faces(256, seed=777, size=SIZE, progress=False)  # faces neither model saw
    with torch.no_grad():
        predicted = trained.regressor(_floats(held_out.images)).numpy()
    assert predicted.shape == (256, len(ATTRIBUTE_NAMES)) and predicted.dtype == np.float32
    target = held_out.factors[:, : len(ATTRIBUTE_NAMES)]
    mae = np.abs(predicted - target).mean(axis=0)
    mean_mae = np.abs(target - target.mean(axis=0)).mean(axis=0)  # the best constant guess (~0.25)
    # a tiny model at 32x32 (eyes and nostrils 1-3 pixels high): the colours and the nose's length are
    # read well, the small shapes barely; the default 64x64 readers reach ~0.05 on every attribute
    assert mae.mean() < 0.8 * mean_mae.mean(), dict(zip(ATTRIBUTE_NAMES, mae.round(3), strict=True))
    for name, share in (("skin_tone", 0.5), ("hair_colour", 0.5), ("nose_length", 0.7)):
        i = ATTRIBUTE_NAMES.index(name)
        assert mae[i] < share * mean_mae[i], f"{name}: MAE {mae[i]:.3f} vs {mean_mae[i]:.3f} for the mean"
    reported = trained.metrics["regressor_mae"]
    assert set(reported) == set(ATTRIBUTE_NAMES) and trained.metrics["regressor_mae_mean"] < 0.8 * 0.25


def test_renders_of_one_person_embed_closer_than_different_people(trained: ReadersResult) -> None:
    people, renders = 12, 2
    factors = sample_factors(people * renders, seed=4242)  # new people, new attributes, pose, light
    columns = [FACTOR_NAMES.index(name) for name in IDENTITY_FACTORS]
    factors[1::2, columns] = factors[0::2, columns]  # render 2i + 1 is person i again
    with torch.no_grad():
        z = trained.identity(_floats(render(factors, SIZE))).numpy()
    assert z.shape == (people * renders, TINY.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    similarity = z @ z.T
    person = np.repeat(np.arange(people), renders)
    same = similarity[0::2, 1::2].diagonal()
    different = similarity[(person[:, None] != person[None, :])]
    assert same.mean() > different.mean() + 0.3, (same.mean(), different.mean())
    # most people: the other render is closer than a typical other person
    assert (same > np.median(different)).mean() >= 0.75
    assert trained.metrics["identity"]["auc"] > 0.7


def test_resume_after_an_interruption_gives_the_weights_of_an_uninterrupted_run(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    config = ReadersConfig(
        image_size=16, train_identities=10, valid_identities=2, identities_per_batch=3, steps=6,
        base_channels=4, hidden=8, embedding_dim=4, checkpoint_every=2,
    )  # fmt: skip
    whole = train_readers(config, tmp_path / "whole", progress=False, device="cpu")

    class Interrupted(Exception):
        pass

    def stop_at_4(work_dir: Path, entry: dict[str, Any]) -> None:
        if entry["step"] == 4:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_readers(config, tmp_path / "split", progress=False, device="cpu", on_checkpoint=stop_at_4)
    assert torch.load(tmp_path / "split" / STATE_FILE, weights_only=True)["step"] == 4
    resumed = train_readers(config, tmp_path / "split", progress=False, device="cpu")
    for a, b in ((whole.regressor, resumed.regressor), (whole.identity, resumed.identity)):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert torch.equal(x, y), name
    assert [h["step"] for h in resumed.history] == [2, 4, 6]

    # the checkpoint file gives back the same models, config and metrics
    regressor, identity, loaded_config, metrics = load_readers(resumed.checkpoint)
    assert resumed.checkpoint.name == CHECKPOINT_FILE and loaded_config == config and metrics == resumed.metrics
    image = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(regressor(image), resumed.regressor(image))
        assert torch.equal(identity(image), resumed.identity(image))

    with pytest.raises(ValueError, match="another ReadersConfig"):
        train_readers(ReadersConfig.from_dict({**config.to_dict(), "steps": 8}), tmp_path / "split", progress=False)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("image_size", 8),
        ("train_identities", 0),
        ("valid_identities", 1),
        ("renders_per_identity", 1),
        ("identities_per_batch", 5000),
        ("steps", 0),
        ("embedding_dim", True),
        ("seed", -1),
        ("checkpoint_every", 2.5),
        ("lr", 0.0),
        ("lr", float("nan")),
        ("temperature", 0.0),
        ("identity_blur", -0.5),
        ("identity_blur", float("nan")),
        ("identity_blur", True),
    ],
)
def test_bad_config_values_raise_value_errors_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"ReadersConfig\.{field} must be"):
        ReadersConfig(**{field: value})  # type: ignore[arg-type]


def test_config_round_trips_and_refuses_unknown_keys() -> None:
    assert ReadersConfig.from_dict(TINY.to_dict()) == TINY
    assert ReadersConfig.from_dict({"steps": 7}) == ReadersConfig(steps=7)
    with pytest.raises(ValueError, match="unknown ReadersConfig keys: colour"):
        ReadersConfig.from_dict({"colour": 1})
    assert ReadersConfig().seed not in (0, 1)  # not the generator's face seeds


def test_the_identity_augmentation_blurs_each_image_by_its_own_amount_and_keeps_flat_images_flat() -> None:
    checker = ((torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2).float().expand(8, 3, 16, 16).contiguous()
    assert torch.equal(random_blur(checker, 0.0, np.random.default_rng(0)), checker)  # off
    blurred = random_blur(checker, 2.0, np.random.default_rng(0))
    assert blurred.shape == checker.shape and blurred.dtype == torch.float32
    contrast = blurred.std(dim=(1, 2, 3))
    original = checker.std(dim=(1, 2, 3))
    assert (contrast <= original + 1e-6).all() and (contrast < 0.5 * original).sum() >= 4  # never sharper; most softened
    assert contrast.max() - contrast.min() > 0.05  # sigmas differ per image (one near 0 leaves its image as it was)
    torch.testing.assert_close(blurred.mean(dim=(1, 2, 3)), checker.mean(dim=(1, 2, 3)), atol=0.02, rtol=0)
    flat = torch.full((2, 3, 16, 16), 0.3)
    torch.testing.assert_close(random_blur(flat, 2.0, np.random.default_rng(1)), flat)  # replicated borders: no dark frame
    again = random_blur(checker, 2.0, np.random.default_rng(0))
    assert torch.equal(blurred, again)  # the step's seeded generator decides: resumes stay bit for bit


@pytest.mark.parametrize("size", [16, 48, 64])
def test_model_shapes(size: int) -> None:
    image = torch.rand(3, 3, size, size)
    with torch.no_grad():
        assert Regressor(size, 4, 8)(image).shape == (3, len(ATTRIBUTE_NAMES))
        z = IdentityEmbedding(size, 4, 8, 6).eval()(image)
    assert z.shape == (3, 6)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))
