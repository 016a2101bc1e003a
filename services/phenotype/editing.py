"""Phenotype edits over the five models of a set, with the measured report (numpy; no backend here).

The method (Yucer et al. §3, after ConfigNet, Kowalski et al. 2020 §3.3): encode the image into
the factorised latent, overwrite the slice of each edited attribute — with the factor encoder's
slice for a value, or with the slice the image encoder gives a reference image — and decode.

The report measures what the edit did, with models that did not make it (`services.phenotype.catalog`):
- `target`: the value asked for; for a reference image, the value the regressor reads off the
  reference's own reconstruction decode(encode(reference)): the slice copied is what the generator
  renders from it, so that is what the edit can reach (a photograph's raw reading is not).
- `achieved`: the regressor's reading of the edited image, per edited attribute.
- `drift`: for every attribute NOT edited, its reading on the edited image minus its reading on
  the unedited reconstruction (decode(encode(image))): the edit's side effect, not the encoder's
  reconstruction error (which is `reconstruction_error`).
- `identity_similarity`: cosine of the identity embeddings of the unedited reconstruction and the
  edited image: the edit's effect on identity, not the encoder's (an edit that changes nothing
  scores 1).
- `pixel_change_inside` / `pixel_change_outside`: mean |edited - reconstruction| (0-1 scale, over
  pixels and channels) inside / outside the union of the edited attributes' canonical regions.
- `reconstruction_error`: mean |reconstruction - input| (0-1 scale).
- `before`: every attribute as the regressor reads it off the input.

Why Facet's own code: the latent surgery and the report are the paper's method and this
service's product; no library does them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from services.phenotype.catalog import ATTRIBUTE_NAMES, ATTRIBUTES, IDENTITY_SLICE


class ModelSet(Protocol):
    """The five models of a set, batched (the servicer implements it over the backend).

    Images are float32 [B, 3, S, S] in [0, 1]; latents float32 [B, latent_dim].
    """

    @property
    def image_size(self) -> int: ...

    @property
    def layout(self) -> Mapping[str, tuple[int, int]]: ...  # `Prop.LATENT_LAYOUT`

    @property
    def factor_names(self) -> Sequence[str]: ...  # `Prop.FACTORS`: the attributes first

    async def generate(self, latent: np.ndarray) -> np.ndarray: ...  # latent -> image

    async def encode_factors(self, factors: np.ndarray) -> np.ndarray: ...  # [B, F] -> latent

    async def encode_image(self, image: np.ndarray) -> np.ndarray: ...  # image -> latent

    async def read_attributes(self, image: np.ndarray) -> np.ndarray: ...  # image -> [B, len(ATTRIBUTES)]

    async def embed_identity(self, image: np.ndarray) -> np.ndarray: ...  # image -> [B, D], L2-normalised


@dataclasses.dataclass(frozen=True)
class EditReport:
    """What an edit did, measured (module docstring). Values of attributes are on their [0, 1] scale."""

    target: dict[str, float]
    achieved: dict[str, float]
    drift: dict[str, float]
    identity_similarity: float
    pixel_change_inside: float
    pixel_change_outside: float
    reconstruction_error: float
    before: dict[str, float]  # every attribute read off the input


@dataclasses.dataclass(frozen=True)
class EditResult:
    """The edited image (float32 [3, S, S] in [0, 1]), its reconstruction-side figures and report."""

    image: np.ndarray
    reconstruction: np.ndarray
    report: EditReport


def region_mask(attributes: Sequence[str], size: int) -> np.ndarray:
    """The union of the attributes' canonical regions (`Attribute.region`) on a size x size image.

    Returns:
        bool [size, size].
    Raises:
        KeyError: an unknown attribute.
    """
    regions = {a.name: a.region for a in ATTRIBUTES}
    mask = np.zeros((size, size), dtype=bool)
    for name in attributes:
        top, left, bottom, right = regions[name]
        mask[int(np.floor(top * size)) : int(np.ceil(bottom * size)), int(np.floor(left * size)) : int(np.ceil(right * size))] = True
    return mask


def _mean_abs(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean |a - b| over the pixels where mask (all channels); 0.0 for an empty mask."""
    if not mask.any():
        return 0.0
    return float(np.abs(a - b)[:, mask].mean())


async def value_slices(models: ModelSet, values: Mapping[str, float]) -> dict[str, np.ndarray]:
    """The latent slice the factor encoder gives each attribute's value (one batched call).

    The factor encoder feeds each attribute's value only into its own slice (the contract of
    `training.phenotype.model.FactorEncoder`), so the other factors' values do not matter here;
    they are set to 0.5.

    Returns:
        {attribute: float32 [slice width]}.
    """
    if not values:
        return {}
    names = list(values)
    factors = np.full((len(names), len(models.factor_names)), 0.5, dtype=np.float32)
    for row, name in enumerate(names):
        factors[row, list(models.factor_names).index(name)] = values[name]
    latent = await models.encode_factors(factors)
    return {name: latent[row, slice(*models.layout[name])] for row, name in enumerate(names)}


async def edit(
    models: ModelSet, image: np.ndarray, values: Mapping[str, float], references: Mapping[str, np.ndarray]
) -> EditResult:
    """Edit `image`: attributes in `values` to those values, those in `references` copied from their image.

    Args:
        models: the set.
        image: float32 [3, S, S] in [0, 1].
        values: {attribute: value in [0, 1]} (validated by the caller).
        references: {attribute: float32 [3, S, S] reference image}.
    Returns:
        `EditResult`.
    Raises:
        ValueError: no edit, or an attribute in both maps (the servicer refuses these first).
    """
    if not values and not references:
        raise ValueError("an edit needs at least one attribute")
    if set(values) & set(references):
        raise ValueError(f"attributes both set to a value and copied from a reference: {sorted(set(values) & set(references))}")
    ref_names = list(references)
    stack = np.stack([image, *(references[n] for n in ref_names)]).astype(np.float32)
    latents = await models.encode_image(stack)
    latent = latents[:1].copy()
    for name, piece in (await value_slices(models, values)).items():
        latent[0, slice(*models.layout[name])] = piece
    for row, name in enumerate(ref_names, start=1):
        latent[0, slice(*models.layout[name])] = latents[row, slice(*models.layout[name])]
    decoded = await models.generate(np.concatenate([latents[:1], latent, latents[1:]]))  # + the references' reconstructions
    reconstruction, edited = decoded[0], decoded[1]
    readings = await models.read_attributes(np.stack([reconstruction, edited, image, *decoded[2:]]))
    unedited, after, before, ref_readings = readings[0], readings[1], readings[2], readings[3:]
    index = {name: i for i, name in enumerate(ATTRIBUTE_NAMES)}
    target = {name: float(v) for name, v in values.items()}
    target.update({name: float(ref_readings[row, index[name]]) for row, name in enumerate(ref_names)})
    edited_names = [*values, *ref_names]
    embeddings = await models.embed_identity(np.stack([reconstruction, edited]))
    mask = region_mask(edited_names, models.image_size)
    report = EditReport(
        target=target,
        achieved={name: float(after[index[name]]) for name in edited_names},
        drift={name: float(after[i] - unedited[i]) for name, i in index.items() if name not in edited_names},
        identity_similarity=float(np.dot(embeddings[0], embeddings[1])),
        pixel_change_inside=_mean_abs(edited, reconstruction, mask),
        pixel_change_outside=_mean_abs(edited, reconstruction, ~mask),
        reconstruction_error=float(np.abs(reconstruction - image).mean()),
        before={name: float(before[i]) for name, i in index.items()},
    )
    return EditResult(edited, reconstruction, report)


async def interpolate(models: ModelSet, image: np.ndarray, attribute: str, values: Sequence[float]) -> np.ndarray:
    """A strip: `image` with `attribute` set to each of `values` in turn (one batched decode).

    Returns:
        float32 [len(values), 3, S, S].
    """
    latent = await models.encode_image(image[None].astype(np.float32))
    latents = np.repeat(latent, len(values), axis=0)
    factors = np.full((len(values), len(models.factor_names)), 0.5, dtype=np.float32)
    factors[:, list(models.factor_names).index(attribute)] = np.asarray(values, dtype=np.float32)
    pieces = await models.encode_factors(factors)
    span = slice(*models.layout[attribute])
    latents[:, span] = pieces[:, span]
    return await models.generate(latents)


async def generate(models: ModelSet, values: Mapping[str, float], seed: int, count: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Faces from factors: the given attribute values, every other factor drawn uniformly in [0, 1]
    from `numpy.random.default_rng(seed)` (the procedural faces' own prior, `training.phenotype.faces`).

    Returns:
        images float32 [count, 3, S, S] and their factors float32 [count, F].
    """
    rng = np.random.default_rng(seed)
    factors = rng.random((count, len(models.factor_names)), dtype=np.float32)
    for name, value in values.items():
        factors[:, list(models.factor_names).index(name)] = value
    latent = await models.encode_factors(factors)
    return await models.generate(latent), factors


__all__ = ["IDENTITY_SLICE", "EditReport", "EditResult", "ModelSet", "edit", "generate", "interpolate", "region_mask", "value_slices"]
