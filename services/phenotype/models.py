"""A phenotype model set on a backend: the five graphs of `services.phenotype.catalog` as the
`editing.ModelSet` the edits run on (so on every backend: ONNX Runtime, Triton, Ray Serve).

Each method is one `Backend.infer` call of one model, so concurrent calls' images meet in that
model's dynamic batcher. Every output is checked finite (`finite_output`): a model that produces
NaN or inf is INTERNAL, never a silently broken image or report.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from services.backends.base import Backend, ModelMetadata
from services.phenotype.catalog import ATTRIBUTE_NAMES, COMPANION_KINDS, IDENTITY_SLICE, Prop, Tensor, companion_name
from services.runtime.outputs import finite_output


class BackendModelSet:
    """The generator `metadata.name` and its four companions, loaded on `backend`.

    Args:
        backend: the inference backend with all five models loaded.
        metadata: the generator's repository metadata (`Prop.*`).
    Raises:
        KeyError: the metadata lacks a `Prop` the set needs (not a phenotype generator's export).
        ValueError: its layout or factor order breaks the catalog's contract.
    """

    def __init__(self, backend: Backend, metadata: ModelMetadata) -> None:
        p = metadata.properties
        self._backend = backend
        self.name = metadata.name
        self.image_size = int(p[Prop.IMAGE_SIZE])
        self.latent_dim = int(p[Prop.LATENT_DIM])
        slices = sorted(((str(k), (int(v[0]), int(v[1]))) for k, v in p[Prop.LATENT_LAYOUT].items()), key=lambda item: item[1])
        self.layout: Mapping[str, tuple[int, int]] = dict(slices)  # by position (the metadata's JSON may sort keys)
        self.factor_names: tuple[str, ...] = tuple(p[Prop.FACTORS])
        companions = dict(p.get(Prop.COMPANIONS) or {})
        self.companions = {role: str(companions.get(role) or companion_name(self.name, role)) for role in COMPANION_KINDS}
        if list(self.layout) != [*ATTRIBUTE_NAMES, IDENTITY_SLICE]:
            raise ValueError(f"generator {self.name!r}: latent layout {list(self.layout)} (by position) is not the catalog's attributes then identity")
        if self.factor_names[: len(ATTRIBUTE_NAMES)] != ATTRIBUTE_NAMES:
            raise ValueError(f"generator {self.name!r}: factors {self.factor_names} do not start with the catalog's attributes")

    @property
    def models(self) -> tuple[str, ...]:
        """The five repository names the set needs loaded: the generator first."""
        return (self.name, *self.companions.values())

    async def _run(self, model: str, name: str, output: str, value: np.ndarray, what: str) -> np.ndarray:
        out = await self._backend.infer(model, {name: np.ascontiguousarray(value, dtype=np.float32)})
        return finite_output(f"{what} of phenotype model set '{self.name}'", np.asarray(out[output], dtype=np.float32))

    async def generate(self, latent: np.ndarray) -> np.ndarray:
        """latent float32 [B, latent_dim] -> image float32 [B, 3, S, S], clipped to [0, 1]."""
        image = await self._run(self.name, Tensor.LATENT, Tensor.IMAGE, latent, "the generator")
        return np.clip(image, 0.0, 1.0)

    async def encode_factors(self, factors: np.ndarray) -> np.ndarray:
        """factors float32 [B, F] in [0, 1] -> latent float32 [B, latent_dim]."""
        return await self._run(self.companions["factor_encoder"], Tensor.FACTORS, Tensor.LATENT, factors, "the factor encoder")

    async def encode_image(self, image: np.ndarray) -> np.ndarray:
        """image float32 [B, 3, S, S] -> latent float32 [B, latent_dim]."""
        return await self._run(self.companions["image_encoder"], Tensor.IMAGE, Tensor.LATENT, image, "the image encoder")

    async def read_attributes(self, image: np.ndarray) -> np.ndarray:
        """image -> the regressor's attribute readings float32 [B, len(ATTRIBUTE_NAMES)]."""
        return await self._run(self.companions["regressor"], Tensor.IMAGE, Tensor.ATTRIBUTES, image, "the attribute regressor")

    async def embed_identity(self, image: np.ndarray) -> np.ndarray:
        """image -> identity embedding float32 [B, D], L2-normalised here again (a graph's rounding aside)."""
        embedding = await self._run(self.companions["identity"], Tensor.IMAGE, Tensor.EMBEDDING, image, "the identity embedding")
        norms = np.linalg.norm(embedding, axis=1, keepdims=True)
        return embedding / np.maximum(norms, 1e-12)
