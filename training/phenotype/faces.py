"""Procedural faces: seeded, vectorised numpy drawings whose every factor is known.

Facet's stand-in for the synthetic renders of ConfigNet's first stage (Kowalski et al., ECCV 2020,
§3: "synthetic data with known parameters"): no face data set installs offline, so the phenotype
models learn from cartoon-like faces drawn here from a vector of factors, every one in [0, 1].

The factors (`FACTOR_NAMES`) are the seven catalog attributes (`services.phenotype.catalog.ATTRIBUTES`,
same order and meaning) followed by `NUISANCE_FACTORS`: the identity (`IDENTITY_FACTORS`: face and
jaw shape, eye spacing, brows, hair style and length: who the person is) and the nuisances (small
pose, light, background, sensor noise and blur: how the picture was taken). Each [0, 1] value is
mapped to a physical range inside (the `_RANGES` table; fractions of the image side unless named).

Every shape is an implicit function (an approximate signed distance to an ellipse, a rounded box, a
curve) evaluated on the pixel-centre grid of the whole batch at once and anti-aliased with a smooth
step one pixel wide; layers are composited with "over" (Porter & Duff, SIGGRAPH 1984), then lit,
blurred (a separable truncated Gaussian), given Gaussian sensor noise and quantised to uint8.
Nothing loops over pixels; the only Python loops run over layers, images (the noise generators) and
the mask dilation's few steps. Each part (eyes, nose, lips, ...) is drawn only inside its band of rows.

Locality (what `region_masks` gives and the tests check): an attribute changes pixels only where a
layer that depends on it is visible (after occlusion by the layers above), widened by the image's
blur radius. The noise is drawn from a generator seeded by the non-attribute factors, so editing an
attribute leaves the noise of every other pixel as it was, and the same factors render the same
bytes on every call.

Skin colours: six reference colours in CIELAB, one per Fitzpatrick-like type I-VI, placed in the
six Individual Typology Angle classes (ITA = atan((L* - 50) / b*), Chardon, Cretois & Hourseau,
Int. J. Cosmet. Sci. 13, 1991; the sixth, "dark", class of Del Bino et al., Pigment Cell Res. 19,
2006), whose correspondence to Fitzpatrick types I-VI follows Kinyanjui et al., "Fairness of
classifiers across skin tones in dermatology" (MICCAI 2020, §2). The L*, a*, b* values are typical
of each class, chosen here, not measurements of people; ``skin_tone`` interpolates them in CIELAB
(so L*, hence luminance, falls monotonically from type I to type VI) and converts to sRGB (IEC
61966-2-1, D65). Hair colours: five sRGB reference colours (black, dark brown, brown, auburn, light
blond) read off common hair-colour charts, interpolated piecewise-linearly.

Limits: these are flat, cartoon-like drawings, not photographs; skin has no texture, hair no
strands, and the attributes vary independently by construction (in people they co-vary). Models
trained on them learn these drawings' factors, not the statistics of real faces.

Example::

    from training.phenotype.faces import make_faces, render, sample_factors
    faces = make_faces(1000, seed=0, size=64)         # Faces(images uint8 [1000, 64, 64, 3], factors)
    factors = sample_factors(1, seed=7)
    factors[0, FACTOR_NAMES.index("skin_tone")] = 1.0  # Fitzpatrick-like type VI
    image = render(factors, size=128)[0]               # uint8 [128, 128, 3]
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from services.phenotype.catalog import ATTRIBUTE_NAMES

IDENTITY_FACTORS: tuple[str, ...] = (
    "face_width",  # half-width of the face at the cheeks
    "jaw_width",  # width of the jaw relative to the cheeks
    "jaw_shape",  # rounded (0) to square (1) jaw line
    "eye_spacing",  # distance between the eye centres
    "brow_thickness",
    "brow_height",  # distance from the eye centre up to the brow
    "hair_style",  # volume, curl, fringe depth and parting
    "hair_length",  # from a cap on top of the head to hair falling beside the face
)
NUISANCE_FACTORS: tuple[str, ...] = IDENTITY_FACTORS + (
    "yaw",  # small head turn: features shift sideways
    "roll",  # small in-plane head tilt
    "light_direction",  # from the left (0) through the front to the right (1)
    "light_intensity",
    "background_hue",
    "background_lightness",
    "noise",  # sensor noise standard deviation
    "blur",  # Gaussian blur standard deviation
)
FACTOR_NAMES: tuple[str, ...] = ATTRIBUTE_NAMES + NUISANCE_FACTORS
MIN_IMAGE_SIZE = 16  # pixels per side: below this the eyes and lips are under two pixels high

# [0, 1] -> physical range (fractions of the image side unless named). Chosen so that each drawn part,
# with the largest pose, blur and anti-aliasing, stays inside its attribute's canonical catalog box.
_RANGES: dict[str, tuple[float, float]] = {
    "eye_openness": (0.22, 0.55),  # upper-lid half-height / eye half-width (the lower lid: 0.8 of it)
    "eye_size": (0.042, 0.07),  # eye half-width
    "nose_width": (0.03, 0.068),  # half-width at the nostrils
    "nose_length": (0.02, 0.12),  # tip below the head centre; the bridge is at -0.06: 0.08 to 0.18 long
    "lip_fullness": (0.0, 1.0),  # scales the lip heights below
    "face_width": (0.19, 0.25),  # face half-width
    "jaw_width": (0.55, 0.9),  # jaw half-width / face half-width
    "jaw_shape": (1.3, 3.2),  # exponent of the jaw's narrowing: higher is squarer
    "eye_spacing": (0.1, 0.13),  # eye centre to face centre
    "brow_thickness": (0.006, 0.018),
    "brow_height": (0.058, 0.085),  # eye centre to brow
    "hair_length": (0.3, 0.5),  # lowest row of the hair (absolute)
    "yaw": (-0.03, 0.03),  # feature shift
    "roll": (-4.0, 4.0),  # degrees
    "light_direction": (-70.0, 70.0),  # degrees from the front
    "light_intensity": (0.72, 1.15),  # multiplier
    "background_lightness": (0.25, 0.85),  # HSV value
    "noise": (0.0, 0.035),  # standard deviation, fraction of full scale
    "blur": (0.0, 0.8),  # standard deviation in pixels at 64x64 (scaled with the size)
}
_HEAD_CENTRE = (0.5, 0.52)  # (x, y) of the head ellipse, the pivot of the roll
_HEAD_HALF_HEIGHT = 0.34
_EYE_Y = -0.08  # eye centres, relative to the head centre
_MOUTH_Y = 0.22
_NOSE_TOP_Y = -0.06

# Fitzpatrick-like types I..VI in CIELAB (L*, a*, b*); ITA = 60, 49, 32, 14, -15, -54 degrees (see above)
_SKIN_LAB = np.array(
    [
        [78.0, 9.0, 16.0],
        [70.0, 10.0, 17.5],
        [62.0, 11.0, 19.0],
        [55.0, 12.0, 20.0],
        [45.0, 12.0, 19.0],
        [32.0, 10.0, 13.0],
    ]
)
# black, dark brown, brown, auburn, light blond (sRGB in [0, 1])
_HAIR_SRGB = np.array(
    [[0.09, 0.07, 0.06], [0.24, 0.16, 0.11], [0.42, 0.28, 0.17], [0.56, 0.27, 0.14], [0.86, 0.74, 0.5]]
)
_SCLERA = (0.93, 0.91, 0.88)
_IRIS = (0.32, 0.2, 0.12)
_PUPIL = (0.05, 0.04, 0.04)
_LASH = (0.1, 0.08, 0.07)


@dataclasses.dataclass(frozen=True)
class Faces:
    """Rendered procedural faces and the factors they were drawn from.

    Attributes:
        images: uint8 [n, size, size, 3], RGB.
        factors: float32 [n, len(FACTOR_NAMES)], each in [0, 1], in `FACTOR_NAMES` order.
    """

    images: np.ndarray
    factors: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])


class _Layer(NamedTuple):
    alpha: np.ndarray  # float32 [B, R, S] in [0, 1], R = the rows of its part's band
    colour: np.ndarray  # float32 [B, 1|R, 1|S, 3] or [3]
    attributes: frozenset[str]  # the attributes its alpha or colour depends on
    rows: slice  # the image rows it covers (its part's band)


def sample_factors(count: int, seed: int) -> np.ndarray:
    """Draw factor vectors uniformly from [0, 1].

    Args:
        count: how many vectors (>= 0).
        seed: the numpy generator's seed; the same seed gives the same factors.
    Returns:
        float32 [count, len(FACTOR_NAMES)], in `FACTOR_NAMES` order.
    Raises:
        ValueError: a negative count.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    rng = np.random.default_rng(seed)
    return rng.random((count, len(FACTOR_NAMES)), dtype=np.float32)


def render(factors: np.ndarray, size: int = 64) -> np.ndarray:
    """Draw one face per factor vector.

    Args:
        factors: float [count, len(FACTOR_NAMES)], each in [0, 1], in `FACTOR_NAMES` order.
        size: pixels per side (>= `MIN_IMAGE_SIZE`).
    Returns:
        uint8 [count, size, size, 3], RGB; the same factors give the same bytes.
    Raises:
        ValueError: factors of the wrong shape, not finite or outside [0, 1]; size too small.
    """
    f = _check(factors, size)
    if f.shape[0] == 0:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    values = _values(f)
    u, v = _grid(size)
    image = _background(values, u, v)
    layers = [layer for part in _layers(values, u, v, size) for layer in part]
    for layer in layers:  # "over": image += alpha * (colour - image), in place, inside the layer's box
        rows = np.flatnonzero(layer.alpha.any(axis=(0, 2)))
        cols = np.flatnonzero(layer.alpha.any(axis=(0, 1)))
        if rows.size == 0:
            continue
        box = (slice(None), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        colour = layer.colour if layer.colour.ndim < 4 or layer.colour.shape[1] == 1 else layer.colour[box]
        offset = layer.rows.start or 0
        target = (slice(None), slice(offset + rows[0], offset + rows[-1] + 1), box[2])
        image[target] += layer.alpha[box][..., None] * (colour - image[target])
    image *= _lighting(values, u, v, size)[..., None]
    image = _blur(image, _blur_sigma_px(values, size))
    image = image + _noise(f, values, size)
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def region_masks(factors: np.ndarray, size: int = 64) -> dict[str, np.ndarray]:
    """Where each attribute can change the pixels of each face, the other factors held fixed.

    The union, over a sweep of the attribute's values (`size // 8 + 1` of them, plus the current
    one), of the pixels where a layer that depends on the attribute is visible, widened by the
    image's blur radius: an edit of that attribute alone leaves every pixel outside the mask as it was.

    Args:
        factors: float [count, len(FACTOR_NAMES)], as for `render`.
        size: pixels per side.
    Returns:
        {attribute name: bool [count, size, size]} for every name in `ATTRIBUTE_NAMES`.
    Raises:
        ValueError: as `render`.
    """
    f = _check(factors, size)
    u, v = _grid(size)
    values = _values(f)
    radius = _blur_radius_px(_blur_sigma_px(values, size))
    fr = _frame(values, u, v, size)  # the attributes do not move the head frame
    base = [_draw(i, values, fr) for i in range(len(_PARTS))]
    sweep = np.linspace(0.0, 1.0, size // 8 + 1, dtype=np.float32)
    masks: dict[str, np.ndarray] = {}
    for index, name in enumerate(ATTRIBUTE_NAMES):
        visible = _visible(base, name)
        if name not in _COLOUR_ONLY:  # shapes: redraw only the parts that depend on the attribute
            for value in sweep:
                swept = f.copy()
                swept[:, index] = value
                swept_values = _values(swept)
                parts = [
                    _draw(i, swept_values, fr) if name in deps else layers
                    for i, ((_, deps, _), layers) in enumerate(zip(_PARTS, base, strict=True))
                ]
                visible |= _visible(parts, name)
        masks[name] = _dilate(visible, radius)
    return masks


def make_faces(count: int, seed: int, size: int = 64, progress: bool = True, chunk: int = 256) -> Faces:
    """Sample factors and render them, in chunks.

    Args:
        count: how many faces (>= 0).
        seed: `sample_factors`'s seed; the same seed gives the same faces, bit for bit.
        size: pixels per side (>= `MIN_IMAGE_SIZE`).
        progress: show a tqdm bar.
        chunk: faces rendered per call (bounds the memory: ~30 float32 [chunk, size, size] arrays).
    Returns:
        `Faces` with images uint8 [count, size, size, 3] and factors float32 [count, len(FACTOR_NAMES)].
    Raises:
        ValueError: a negative count, a size below `MIN_IMAGE_SIZE` or a chunk below 1.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    factors = sample_factors(count, seed)
    _check(factors, size)
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    with tqdm(total=count, desc=f"faces {size}x{size}", unit="face", disable=not progress) as bar:
        for start in range(0, count, chunk):
            stop = min(start + chunk, count)
            images[start:stop] = render(factors[start:stop], size)
            bar.update(stop - start)
    return Faces(images=images, factors=factors)


def skin_colour(skin_tone: np.ndarray) -> np.ndarray:
    """The sRGB skin colour of each `skin_tone` value (0: type I ... 1: type VI; see the module doc).

    Args:
        skin_tone: float [n] in [0, 1].
    Returns:
        float32 [n, 3] sRGB in [0, 1].
    """
    return _lab_to_srgb(_piecewise(_SKIN_LAB, np.asarray(skin_tone, dtype=np.float64)))


def hair_colour(value: np.ndarray) -> np.ndarray:
    """The sRGB hair colour of each `hair_colour` value (black, dark brown, brown, auburn, light blond).

    Args:
        value: float [n] in [0, 1].
    Returns:
        float32 [n, 3] sRGB in [0, 1].
    """
    return _piecewise(_HAIR_SRGB, np.asarray(value, dtype=np.float64)).astype(np.float32)


# -- validation and parameters ---------------------------------------------------------------------

_COLOUR_ONLY = frozenset({"skin_tone", "hair_colour"})  # change colours, never shapes


def _check(factors: np.ndarray, size: int) -> np.ndarray:
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < MIN_IMAGE_SIZE:
        raise ValueError(f"size must be an integer >= {MIN_IMAGE_SIZE} pixels, got {size!r}")
    f = np.asarray(factors, dtype=np.float32)
    if f.ndim != 2 or f.shape[1] != len(FACTOR_NAMES):
        raise ValueError(
            f"factors must have shape [count, {len(FACTOR_NAMES)}] (FACTOR_NAMES), got {list(np.shape(factors))}"
        )
    if not np.all(np.isfinite(f)):
        raise ValueError("factors must be finite numbers")
    if f.size and (f.min() < 0.0 or f.max() > 1.0):
        bad = int(np.argwhere((f < 0.0) | (f > 1.0))[0][1])
        raise ValueError(f"every factor must be in [0, 1]; {FACTOR_NAMES[bad]} is outside")
    return f


def _values(f: np.ndarray) -> dict[str, np.ndarray]:
    """Factor name -> float32 [B, 1, 1], mapped to its physical range where `_RANGES` names one."""
    out: dict[str, np.ndarray] = {}
    for i, name in enumerate(FACTOR_NAMES):
        x = f[:, i].astype(np.float32)[:, None, None]
        if name in _RANGES:
            lo, hi = _RANGES[name]
            x = np.float32(lo) + x * np.float32(hi - lo)
        out[name] = x
    return out


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres as fractions of the side: (x, y), float32 [1, S, S]."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    return c[None, None, :].repeat(size, axis=1), c[None, :, None].repeat(size, axis=2)


def _piecewise(knots: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Linear interpolation between equally spaced knots [K, 3] at t in [0, 1]: [n, 3]."""
    position = np.clip(t, 0.0, 1.0) * (len(knots) - 1)
    low = np.minimum(np.floor(position).astype(int), len(knots) - 2)
    w = (position - low)[..., None]
    return knots[low] * (1.0 - w) + knots[low + 1] * w


def _lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB (D65) -> sRGB in [0, 1] (CIE 15:2004 §8.2.1 inverse; IEC 61966-2-1 transfer)."""
    fy = (lab[..., 0] + 16.0) / 116.0
    fx = fy + lab[..., 1] / 500.0
    fz = fy - lab[..., 2] / 200.0
    delta = 6.0 / 29.0

    def finv(t: np.ndarray) -> np.ndarray:
        return np.where(t > delta, t**3, 3 * delta**2 * (t - 4.0 / 29.0))

    xyz = np.stack([0.95047 * finv(fx), finv(fy), 1.08883 * finv(fz)], axis=-1)
    m = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]])
    linear = np.clip(xyz @ m.T, 0.0, 1.0)
    srgb = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return srgb.astype(np.float32)


# -- shapes ------------------------------------------------------------------------------------------


def _coverage(distance: np.ndarray, size: int) -> np.ndarray:
    """Anti-aliased coverage of a signed distance (negative inside): a smooth step one pixel wide,
    exactly 0 half a pixel outside the edge."""
    t = np.clip(0.5 - distance * size, 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def _ellipse(x: np.ndarray, y: np.ndarray, a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    """Approximate signed distance to the ellipse (x/a)^2 + (y/b)^2 = 1: f / |grad f| (first order)."""
    f = (x / a) ** 2 + (y / b) ** 2 - 1.0
    g = 2.0 * np.sqrt((x / a**2) ** 2 + (y / b**2) ** 2)
    return f / np.maximum(g, 1e-6)


def _rounded_box(
    x: np.ndarray, y: np.ndarray, half_w: np.ndarray | float, half_h: np.ndarray | float, r: float
) -> np.ndarray:
    """Signed distance to a box centred at the origin with corners rounded by r."""
    qx = np.abs(x) - half_w + r
    qy = np.abs(y) - half_h + r
    outside = np.sqrt(np.maximum(qx, 0.0) ** 2 + np.maximum(qy, 0.0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0.0) - r


def _head_frame(values: dict[str, np.ndarray], u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates relative to the head centre, rotated by the roll: (x, y), float32 [B, S, S]."""
    angle = np.deg2rad(values["roll"])
    x = u - _HEAD_CENTRE[0] - values["yaw"] * 0.25
    y = v - _HEAD_CENTRE[1]
    c, s = np.cos(angle), np.sin(angle)
    return (c * x + s * y).astype(np.float32), (-s * x + c * y).astype(np.float32)


def _face_distance(values: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The face outline: an ellipse whose half-width narrows below the eyes towards the jaw."""
    width = values["face_width"]
    depth = np.clip(y / _HEAD_HALF_HEIGHT, 0.0, 1.0) ** values["jaw_shape"]
    half_width = width * (1.0 - (1.0 - values["jaw_width"]) * depth)
    return _ellipse(x, y, half_width, _HEAD_HALF_HEIGHT)


class _Frame(NamedTuple):
    """What every part of a face is drawn from: the grid, the head frame and the two colours."""

    u: np.ndarray  # float32 [1, S, S]: pixel centres, fractions of the side
    v: np.ndarray
    x: np.ndarray  # float32 [B, S, S]: head frame (rolled, centred on the head)
    y: np.ndarray
    xf: np.ndarray  # x of the features, which turn further than the outline
    skin: np.ndarray  # float32 [B, 1, 1, 3]
    hair: np.ndarray
    size: int
    rows: slice = slice(None)  # the image rows the arrays above hold

    def band(self, top: float, bottom: float) -> _Frame:
        """The frame cut to the rows between `top` and `bottom` (fractions), one row of margin."""
        rows = slice(max(0, math.floor(top * self.size) - 1), min(self.size, math.ceil(bottom * self.size) + 1))
        u, v, x, y, xf = (a[:, rows] for a in (self.u, self.v, self.x, self.y, self.xf))
        return _Frame(u, v, x, y, xf, self.skin, self.hair, self.size, rows)


def _frame(values: dict[str, np.ndarray], u: np.ndarray, v: np.ndarray, size: int) -> _Frame:
    x, y = _head_frame(values, u, v)
    n = values["skin_tone"].shape[0]
    skin = skin_colour(values["skin_tone"][:, 0, 0]).reshape(n, 1, 1, 3)
    hair = hair_colour(values["hair_colour"][:, 0, 0]).reshape(n, 1, 1, 3)
    return _Frame(u, v, x, y, x - values["yaw"], skin, hair, size)


_SKIN = frozenset({"skin_tone"})
_HAIR = frozenset({"hair_colour"})


def _hair_cap(values: dict[str, np.ndarray], fr: _Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The hair's outer outline around the head (distance), its curl amplitude and the angle around
    the head centre."""
    style = values["hair_style"]
    volume = 0.012 + 0.05 * style
    curl = 0.012 * np.clip(2.0 * style - 1.0, 0.0, 1.0)
    angle = np.arctan2(fr.y, fr.x)
    cap = _ellipse(fr.x, fr.y + 0.02, values["face_width"] + volume, _HEAD_HALF_HEIGHT + volume - 0.02)
    return cap, curl * np.sin(angle * 14.0 + style * 9.0), volume


def _back_hair(values: dict[str, np.ndarray], fr: _Frame) -> list[_Layer]:
    """Hair behind the head: the cap and a rounded box falling to `hair_length`, both cut there."""
    cap, curl, volume = _hair_cap(values, fr)
    bottom = values["hair_length"] - _HEAD_CENTRE[1]
    top = -0.15
    half_w = values["face_width"] + 0.03 + volume * 0.8
    fall = _rounded_box(fr.x, fr.y - (top + bottom) / 2, half_w, (bottom - top) / 2, 0.03)
    back = np.minimum(np.maximum(cap, fr.y - bottom), fall) + curl
    return [_Layer(_coverage(back, fr.size), fr.hair * 0.85, _HAIR, fr.rows)]


def _body(values: dict[str, np.ndarray], fr: _Frame) -> list[_Layer]:
    """Neck and shirt (the shirt is not rolled with the head; its colour opposes the background's hue)."""
    n = fr.skin.shape[0]
    neck = _rounded_box(fr.u - _HEAD_CENTRE[0], fr.v - 0.92, 0.075 + 0.1 * (values["face_width"] - 0.19), 0.2, 0.02)
    hue = (values["background_hue"][:, 0, 0] + 0.5) % 1.0
    shirt_colour = _hsv_to_rgb(hue, 0.45, 0.28 + 0.3 * values["background_lightness"][:, 0, 0]).reshape(n, 1, 1, 3)
    shirt = _ellipse(fr.u - _HEAD_CENTRE[0], fr.v - 1.13, 0.42, 0.24)
    return [
        _Layer(_coverage(neck, fr.size), fr.skin * 0.82, _SKIN, fr.rows),
        _Layer(_coverage(shirt, fr.size), shirt_colour, frozenset(), fr.rows),
    ]


def _head(values: dict[str, np.ndarray], fr: _Frame) -> list[_Layer]:
    """Ears, then the face."""
    layers = []
    for side in (-1.0, 1.0):
        ear = _ellipse(fr.x - side * (values["face_width"] * 0.96) + values["yaw"] * 0.3, fr.y + 0.05, 0.028, 0.055)
        layers.append(_Layer(_coverage(ear, fr.size), fr.skin * 0.9, _SKIN, fr.rows))
    layers.append(_Layer(_coverage(_face_distance(values, fr.x, fr.y), fr.size), fr.skin, _SKIN, fr.rows))
    return layers


def _nose(values: dict[str, np.ndarray], fr: _Frame) -> list[_Layer]:
    """A shaded lower part, two side lines from the bridge, nostrils, a highlight on the tip."""
    nose_w = values["nose_width"]
    tip = values["nose_length"]
    deps = frozenset({"skin_tone", "nose_width", "nose_length"})
    x, y = fr.xf, fr.y
    ala = _ellipse(x, y - (tip - 0.02), nose_w, 0.034)
    layers = [_Layer(_coverage(ala, fr.size) * 0.5, fr.skin * 0.68, deps, fr.rows)]
    half_len = (tip - 0.02 - _NOSE_TOP_Y) / 2
    for side in (-1.0, 1.0):
        line = _rounded_box(x - side * nose_w * 0.45, y - (_NOSE_TOP_Y + half_len), 0.004, half_len, 0.004)
        layers.append(_Layer(_coverage(line, fr.size) * 0.35, fr.skin * 0.7, deps, fr.rows))
        nostril = _ellipse(x - side * nose_w * 0.5, y - (tip - 0.004), nose_w * 0.34, 0.012)
        layers.append(_Layer(_coverage(nostril, fr.size) * 0.9, fr.skin * 0.25, deps, fr.rows))
    highlight = _ellipse(x, y - (tip - 0.03), nose_w * 0.35, 0.014)
    layers.append(_Layer(_coverage(highlight, fr.size) * 0.35, np.minimum(fr.skin * 1.2, 1.0), deps, fr.rows))
    return layers


def _lips(values: dict[str, np.ndarray], fr: _Frame) -> list[_Layer]:
    """Upper and lower half-ellipses in a tinted skin colour, the upper one with a cupid's bow."""
    x, ym = fr.xf, fr.y - _MOUTH_Y
    mouth_w = 0.36 * values["face_width"]
    fullness = values["lip_fullness"]
    upper_h = 0.007 + 0.02 * fullness
    lower_h = 0.009 + 0.026 * fullness
    bow = 0.006 * np.exp(-((x / 0.012) ** 2))
    upper = np.maximum(_ellipse(x, ym, mouth_w, upper_h - bow), ym)
    lower = np.maximum(_ellipse(x, ym, mouth_w * 0.92, lower_h), -ym)
    deps = frozenset({"skin_tone", "lip_fullness"})
    lip = fr.skin * np.array([0.8, 0.6, 0.6], dtype=np.float32)
    return [
        _Layer(_coverage(upper, fr.size), lip, deps, fr.rows),
        _Layer(_coverage(lower, fr.size), lip * 1.08, deps, fr.rows),
    ]


def _mouth_line(values: dict[str, np.ndarray], fr: _Frame) -> list[_Layer]:
    line = _ellipse(fr.xf, fr.y - _MOUTH_Y, 0.36 * values["face_width"] * 0.98, 0.0035)
    return [_Layer(_coverage(line, fr.size) * 0.85, fr.skin * 0.32, _SKIN, fr.rows)]


def _eyes(values: dict[str, np.ndarray], fr: _Frame) -> list[_Layer]:
    """Sclera (an ellipse, flatter below), iris, pupil and the lash line along the upper lid."""
    eye_w = values["eye_size"]
    eye_h = eye_w * values["eye_openness"]
    deps = frozenset({"eye_openness", "eye_size"})
    layers = []
    for side in (-1.0, 1.0):
        ex = fr.xf - side * values["eye_spacing"]
        ey = fr.y - _EYE_Y
        almond = _ellipse(ex, ey, eye_w, np.where(ey < 0, eye_h, eye_h * 0.8))
        sclera = _coverage(almond, fr.size)
        iris_r = eye_w * 0.5
        iris = _coverage(_ellipse(ex, ey, iris_r, iris_r), fr.size) * sclera
        pupil = _coverage(_ellipse(ex, ey, iris_r * 0.45, iris_r * 0.45), fr.size) * sclera
        lash = _coverage(np.maximum(np.abs(almond) - 0.0035, ey), fr.size)
        layers += [
            _Layer(sclera, np.asarray(_SCLERA, np.float32), deps, fr.rows),
            _Layer(iris, np.asarray(_IRIS, np.float32), deps, fr.rows),
            _Layer(pupil, np.asarray(_PUPIL, np.float32), deps, fr.rows),
            _Layer(lash, np.asarray(_LASH, np.float32), deps, fr.rows),
        ]
    return layers


def _brows(values: dict[str, np.ndarray], fr: _Frame) -> list[_Layer]:
    """Arcs above the eyes, tapering outwards, in a darker hair colour."""
    layers = []
    for side in (-1.0, 1.0):
        bx = fr.xf - side * values["eye_spacing"]
        arch = _EYE_Y - values["brow_height"] - 0.012 * np.clip(1.0 - (bx / 0.07) ** 2, 0.0, 1.0)
        taper = values["brow_thickness"] * (0.5 + 0.5 * np.clip(1.0 - side * bx / 0.08, 0.3, 1.0))
        brow = np.maximum(np.abs(fr.y - arch) - taper / 2, np.abs(bx) - 0.068)
        layers.append(_Layer(_coverage(brow, fr.size), fr.hair * 0.8, _HAIR, fr.rows))
    return layers


def _front_hair(values: dict[str, np.ndarray], fr: _Frame) -> list[_Layer]:
    """Hair over the head: the cap above a hairline that curves down to the temples, parted by the style."""
    cap, curl, _ = _hair_cap(values, fr)
    style = values["hair_style"]
    part = (style - 0.5) * 0.12
    hairline = 0.23 + 0.05 * (1.0 - np.abs(2.0 * style - 1.0)) - _HEAD_CENTRE[1]
    hairline = hairline + 0.09 * np.clip(np.abs(fr.x) / values["face_width"], 0.0, 1.0) ** 2
    hairline = hairline - 0.015 * np.cos((fr.x - part) * 25.0)
    return [_Layer(_coverage(np.maximum(cap + curl, fr.y - hairline), fr.size), fr.hair, _HAIR, fr.rows)]


# the parts of a face, bottom to top, with the attributes each depends on (a superset of its layers')
# and the band of rows (fractions of the side) that holds it at every factor value, pose and size (measured
# at 256x256 over random and extreme factors, with a margin; a test checks banded == whole-image drawing)
_PARTS: tuple[
    tuple[Callable[[dict[str, np.ndarray], _Frame], list[_Layer]], frozenset[str], tuple[float, float]], ...
] = (
    (_back_hair, _HAIR, (0.0, 0.58)),
    (_body, _SKIN, (0.6, 1.0)),
    (_head, _SKIN, (0.1, 0.92)),
    (_nose, frozenset({"skin_tone", "nose_width", "nose_length"}), (0.41, 0.7)),
    (_lips, frozenset({"skin_tone", "lip_fullness"}), (0.66, 0.82)),
    (_mouth_line, _SKIN, (0.66, 0.82)),
    (_eyes, frozenset({"eye_openness", "eye_size"}), (0.34, 0.53)),
    (_brows, _HAIR, (0.28, 0.45)),
    (_front_hair, _HAIR, (0.0, 0.45)),
)
_BANDED = True  # False: draw every part on the whole image (the tests compare the two)


def _draw(part: int, values: dict[str, np.ndarray], fr: _Frame) -> list[_Layer]:
    function, _, (top, bottom) = _PARTS[part]
    return function(values, fr.band(top, bottom) if _BANDED else fr)


def _layers(values: dict[str, np.ndarray], u: np.ndarray, v: np.ndarray, size: int) -> list[list[_Layer]]:
    """Every part's layers, bottom to top."""
    fr = _frame(values, u, v, size)
    return [_draw(i, values, fr) for i in range(len(_PARTS))]


def _visible(parts: list[list[_Layer]], attribute: str) -> np.ndarray:
    """bool [B, S, S]: where a layer that depends on the attribute shows through the layers above it."""
    layers = [layer for part in parts for layer in part]
    shape = (layers[0].alpha.shape[0], layers[0].alpha.shape[2], layers[0].alpha.shape[2])
    transmitted = np.ones(shape, dtype=np.float32)
    visible = np.zeros(shape, dtype=bool)
    for layer in reversed(layers):
        through = transmitted[:, layer.rows]
        if attribute in layer.attributes:
            visible[:, layer.rows] |= (layer.alpha * through) > 0.0
        transmitted[:, layer.rows] = through * (1.0 - layer.alpha)
    return visible


# -- background, light, blur, noise ------------------------------------------------------------------


def _hsv_to_rgb(hue: np.ndarray, saturation: float, value: np.ndarray) -> np.ndarray:
    """HSV (Smith, SIGGRAPH 1978) -> RGB, float32 [n, 3]."""
    h = (hue % 1.0) * 6.0
    k = (np.array([5.0, 3.0, 1.0])[None, :] + h[:, None]) % 6.0
    rgb = value[:, None] - value[:, None] * saturation * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return rgb.astype(np.float32)


def _background(values: dict[str, np.ndarray], u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A flat colour with a gentle vertical gradient: float32 [B, S, S, 3]."""
    n = values["background_hue"].shape[0]
    colour = _hsv_to_rgb(values["background_hue"][:, 0, 0], 0.35, values["background_lightness"][:, 0, 0])
    gradient = (1.08 - 0.16 * v)[..., None]
    return (colour.reshape(n, 1, 1, 3) * gradient).astype(np.float32)


def _lighting(values: dict[str, np.ndarray], u: np.ndarray, v: np.ndarray, size: int) -> np.ndarray:
    """Multiplier per pixel, float32 [B, S, S]: Lambertian shading (ambient 0.62, diffuse 0.38) of the
    head as an ellipsoid, blended softly into a flat level elsewhere, times the intensity."""
    x, y = _head_frame(values, u, v)
    nx = x / (values["face_width"] + 0.03)
    ny = y / (_HEAD_HALF_HEIGHT + 0.03)
    nz = np.sqrt(np.maximum(1.0 - nx**2 - ny**2, 0.0))
    norm = np.sqrt(nx**2 + ny**2 + nz**2) + 1e-6
    azimuth = np.deg2rad(values["light_direction"])
    elevation = np.deg2rad(20.0)
    lx, ly, lz = np.sin(azimuth) * np.cos(elevation), -np.sin(elevation), np.cos(azimuth) * np.cos(elevation)
    lambert = np.maximum((nx * lx + ny * ly + nz * lz) / norm, 0.0)
    head = 0.62 + 0.38 * lambert
    inside = np.clip(0.5 - _face_distance(values, x, y) / 0.08, 0.0, 1.0)
    inside = inside * inside * (3.0 - 2.0 * inside)
    flat = 0.9 + 0.06 * np.sin(azimuth) * (u - 0.5) * 2.0
    return ((inside * head + (1.0 - inside) * flat) * values["light_intensity"]).astype(np.float32)


def _blur_sigma_px(values: dict[str, np.ndarray], size: int) -> np.ndarray:
    return (values["blur"][:, 0, 0] * (size / 64.0)).astype(np.float64)


def _blur_radius_px(sigma: np.ndarray) -> np.ndarray:
    """The truncation radius of each image's Gaussian (2.5 standard deviations), int [B]."""
    return np.ceil(2.5 * sigma - 1e-9).astype(int)


def _blur(image: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Separable Gaussian blur, truncated at `_blur_radius_px` and renormalised at the borders,
    as two batched matrix products: K @ X @ K^T per image and channel."""
    if not np.any(sigma > 0):
        return image
    n, s = image.shape[0], image.shape[1]
    offset = np.arange(s)[:, None] - np.arange(s)[None, :]
    radius = _blur_radius_px(sigma)
    safe = np.maximum(sigma, 1e-6)[:, None, None]
    kernel = np.exp(-(offset[None] ** 2) / (2.0 * safe**2)) * (np.abs(offset)[None] <= radius[:, None, None])
    kernel = (kernel / kernel.sum(axis=2, keepdims=True)).astype(np.float32)
    channels = image.transpose(0, 3, 1, 2)  # [B, 3, S, S]
    blurred = kernel[:, None] @ channels @ kernel[:, None].transpose(0, 1, 3, 2)
    return blurred.transpose(0, 2, 3, 1).reshape(n, s, s, 3)


def _noise(f: np.ndarray, values: dict[str, np.ndarray], size: int) -> np.ndarray:
    """Gaussian sensor noise, float32 [B, S, S, 3]; each image's generator is seeded by a hash of its
    non-attribute factors, so an attribute edit keeps the noise of every pixel it does not touch."""
    sigma = values["noise"][:, 0, 0]
    out = np.zeros((f.shape[0], size, size, 3), dtype=np.float32)
    nuisance = np.ascontiguousarray(f[:, len(ATTRIBUTE_NAMES) :], dtype="<f4")
    for i in range(f.shape[0]):
        if sigma[i] <= 0:
            continue
        digest = hashlib.blake2b(nuisance[i].tobytes() + int(size).to_bytes(4, "little"), digest_size=8).digest()
        rng = np.random.default_rng(int.from_bytes(digest, "little"))
        out[i] = rng.standard_normal((size, size, 3), dtype=np.float32) * sigma[i]
    return out


def _dilate(mask: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Dilate each image's mask by a (2r + 1)-pixel square (the blur's support), r per image."""
    out = mask.copy()
    for step in range(int(radius.max()) if radius.size else 0):
        grown = out.copy()
        grown[:, 1:, :] |= out[:, :-1, :]
        grown[:, :-1, :] |= out[:, 1:, :]
        wider = grown.copy()
        wider[:, :, 1:] |= grown[:, :, :-1]
        wider[:, :, :-1] |= grown[:, :, 1:]
        out = np.where((radius > step)[:, None, None], wider, out)
    return out
