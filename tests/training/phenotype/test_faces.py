"""The procedural faces: locality of every phenotype factor, colours, determinism, input checks."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.color import lab2rgb

from services.phenotype.catalog import ATTRIBUTE_NAMES, ATTRIBUTES
from training.phenotype import faces
from training.phenotype.faces import (
    FACTOR_NAMES,
    IDENTITY_FACTORS,
    NUISANCE_FACTORS,
    make_faces,
    region_masks,
    render,
    sample_factors,
)


def _luma(pixels: np.ndarray) -> float:
    """Rec. 601 luma of uint8 RGB pixels [..., 3], mean."""
    return float((pixels.astype(np.float64) @ np.array([0.299, 0.587, 0.114])).mean())


def _set(factors: np.ndarray, name: str, value: float | np.ndarray) -> np.ndarray:
    out = factors.copy()
    out[:, FACTOR_NAMES.index(name)] = value
    return out


def test_factor_names_are_the_attributes_then_the_nuisances() -> None:
    assert FACTOR_NAMES[: len(ATTRIBUTE_NAMES)] == ATTRIBUTE_NAMES
    assert FACTOR_NAMES[len(ATTRIBUTE_NAMES) :] == NUISANCE_FACTORS
    assert set(IDENTITY_FACTORS) < set(NUISANCE_FACTORS)
    assert not {"yaw", "roll", "light_direction", "noise", "blur", "background_hue"} & set(IDENTITY_FACTORS)
    assert len(set(FACTOR_NAMES)) == len(FACTOR_NAMES)


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("attribute", ATTRIBUTE_NAMES)
def test_one_attribute_changes_pixels_only_inside_its_mask(attribute: str, size: int) -> None:
    count = 6 if size == 64 else 2
    before = sample_factors(count, seed=11)  # random pose, light, noise and blur included
    index = FACTOR_NAMES.index(attribute)
    after = _set(before, attribute, (before[:, index] + 0.3 + 0.4 * sample_factors(count, 12)[:, 0]) % 1.0)
    changed = np.any(render(before, size) != render(after, size), axis=-1)
    mask = region_masks(before, size)[attribute]
    assert mask.shape == (count, size, size) and mask.dtype == bool
    outside = changed & ~mask
    assert not outside.any(), f"{attribute}: {int(outside.sum())} changed pixels outside its mask"
    assert changed.reshape(count, -1).sum(axis=1).min() >= 3, f"{attribute} changed (almost) nothing"


def test_masks_lie_inside_the_catalog_boxes() -> None:
    size = 64
    factors = sample_factors(24, seed=5)
    masks = region_masks(factors, size)
    centres = (np.arange(size) + 0.5) / size
    for attribute in ATTRIBUTES:
        top, left, bottom, right = attribute.region
        box = ((centres >= top) & (centres <= bottom))[:, None] & ((centres >= left) & (centres <= right))[None, :]
        mask = masks[attribute.name]
        per_face = (mask & box).reshape(len(factors), -1).sum(1) / mask.reshape(len(factors), -1).sum(1)
        assert per_face.mean() >= 0.99, f"{attribute.name}: {per_face.mean():.3f} of its mask in its box"
        assert per_face.min() >= 0.95, f"{attribute.name}: a face with {per_face.min():.3f} in its box"


def test_skin_darkens_monotonically_from_type_i_to_type_vi() -> None:
    base = _set(sample_factors(4, seed=3), "noise", 0.0)
    mask = region_masks(base, 64)["skin_tone"]
    lumas = []
    for tone in np.linspace(0.0, 1.0, 6):
        images = render(_set(base, "skin_tone", tone), 64)
        lumas.append([_luma(images[i][mask[i]]) for i in range(len(base))])
    steps = np.diff(np.array(lumas), axis=0)
    assert (steps < 0).all(), f"skin luma along skin_tone 0..1: {np.array(lumas).round(1).tolist()}"


def test_black_hair_is_darker_than_blond_hair() -> None:
    base = _set(sample_factors(4, seed=4), "noise", 0.0)
    mask = region_masks(base, 64)["hair_colour"]
    black = render(_set(base, "hair_colour", 0.0), 64)
    blond = render(_set(base, "hair_colour", 1.0), 64)
    for i in range(len(base)):
        assert _luma(black[i][mask[i]]) + 40 < _luma(blond[i][mask[i]])


def test_skin_colours_are_the_cielab_references_in_srgb() -> None:
    # the six types' CIELAB references, converted by scikit-image (an independent implementation)
    lab = faces._SKIN_LAB
    expected = lab2rgb(lab[None].astype(np.float64), illuminant="D65")[0]
    np.testing.assert_allclose(faces.skin_colour(np.linspace(0.0, 1.0, 6)), expected, atol=2e-3)
    ita = np.degrees(np.arctan((lab[:, 0] - 50.0) / lab[:, 2]))
    # Chardon et al. 1991 / Del Bino et al. 2006 ITA classes, type I (very light) .. VI (dark)
    bounds = [(55, 90), (41, 55), (28, 41), (10, 28), (-30, 10), (-90, -30)]
    assert all(lo < a < hi for a, (lo, hi) in zip(ita, bounds, strict=True)), ita


def test_same_seed_same_bytes_other_seed_other_faces() -> None:
    a = make_faces(10, seed=1, size=32, progress=False)
    b = make_faces(10, seed=1, size=32, progress=False, chunk=3)  # chunking changes nothing
    c = make_faces(10, seed=2, size=32, progress=False)
    assert a.images.tobytes() == b.images.tobytes() and np.array_equal(a.factors, b.factors)
    assert np.array_equal(render(a.factors, 32), a.images)  # the stored factors reproduce the images
    assert not np.array_equal(a.factors, c.factors)
    assert all(not np.array_equal(a.images[i], c.images[i]) for i in range(10))


def test_noise_is_part_of_the_face_not_a_fresh_draw() -> None:
    factors = _set(sample_factors(2, seed=9), "noise", 1.0)
    assert np.array_equal(render(factors), render(factors))
    quiet = render(_set(factors, "noise", 0.0)).astype(int)
    assert np.abs(render(factors).astype(int) - quiet).mean() > 2  # the noise is there


@pytest.mark.parametrize("size", [16, 64, 128])
def test_shapes_and_dtypes(size: int) -> None:
    result = make_faces(3, seed=0, size=size, progress=False)
    assert result.images.shape == (3, size, size, 3) and result.images.dtype == np.uint8
    assert result.factors.shape == (3, len(FACTOR_NAMES)) and result.factors.dtype == np.float32
    assert len(result) == 3
    assert render(np.zeros((0, len(FACTOR_NAMES)), np.float32), size).shape == (0, size, size, 3)
    assert result.images.std() > 10  # a drawing, not a flat colour


def test_sample_factors_are_uniform_in_the_unit_interval() -> None:
    factors = sample_factors(2000, seed=0)
    assert factors.shape == (2000, len(FACTOR_NAMES)) and factors.dtype == np.float32
    assert factors.min() >= 0.0 and factors.max() <= 1.0
    np.testing.assert_allclose(factors.mean(axis=0), 0.5, atol=0.05)
    assert sample_factors(0, seed=0).shape == (0, len(FACTOR_NAMES))


def test_bad_inputs_raise_value_errors_that_say_what_to_fix() -> None:
    good = sample_factors(2, seed=0)
    with pytest.raises(ValueError, match=rf"shape \[count, {len(FACTOR_NAMES)}\]"):
        render(good[:, :-1])
    with pytest.raises(ValueError, match=rf"shape \[count, {len(FACTOR_NAMES)}\]"):
        render(good[0])
    with pytest.raises(ValueError, match="size must be an integer >= 16"):
        render(good, size=15)
    with pytest.raises(ValueError, match="size must be an integer >= 16"):
        make_faces(1, seed=0, size=8, progress=False)
    with pytest.raises(ValueError, match="count must be >= 0"):
        sample_factors(-1, seed=0)
    with pytest.raises(ValueError, match="count must be >= 0"):
        make_faces(-1, seed=0, progress=False)
    with pytest.raises(ValueError, match="nose_width is outside"):
        render(_set(good, "nose_width", 1.5))
    with pytest.raises(ValueError, match="finite"):
        region_masks(_set(good, "blur", np.nan))


@pytest.mark.parametrize("size", [16, 64])
def test_drawing_parts_in_their_row_bands_changes_no_pixel(size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # each part is drawn only inside its band of rows (a speed-up); the whole-image drawing is the reference
    factors = np.concatenate(
        [sample_factors(24, seed=21), np.zeros((1, len(FACTOR_NAMES))), np.ones((1, len(FACTOR_NAMES)))]
    )
    banded, banded_masks = render(factors, size), region_masks(factors[:6], size)
    monkeypatch.setattr(faces, "_BANDED", False)
    assert np.array_equal(banded, render(factors, size))
    whole_masks = region_masks(factors[:6], size)
    assert all(np.array_equal(banded_masks[name], whole_masks[name]) for name in ATTRIBUTE_NAMES)
