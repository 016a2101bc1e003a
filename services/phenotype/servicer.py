"""The Phenotype gRPC service: list attributes and models, generate faces from factors, encode
faces, edit phenotype attributes with a measured report, and interpolate one attribute.

The method and the report are `services.phenotype.editing`'s; the five models of a set run over
the backend interface (`services.phenotype.models.BackendModelSet`), so every backend serves it.
Every request is checked before any model runs: images (`services.phenotype.images`, limits of
the `[phenotype]` section), attribute and factor names, values in [0, 1], counts.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from typing import Any

import grpc
import numpy as np
from google.protobuf import struct_pb2

from sdk._proto.facet.v1 import phenotype_pb2, phenotype_pb2_grpc
from services.backends import create_backend
from services.backends.base import Backend, ModelMetadata
from services.model_repository import ModelRepository
from services.phenotype import editing, images
from services.phenotype.catalog import ATTRIBUTE_NAMES, ATTRIBUTES, COMPANION_KINDS, Kind, Prop
from services.phenotype.config import PhenotypeConfig
from services.phenotype.models import BackendModelSet
from services.runtime.config import FacetConfig
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, shown
from services.runtime.server import FacetService

log = logging.getLogger(__name__)

BUILD_COMMAND = "facet phenotype build"


def _struct(value: Any) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    if isinstance(value, dict):
        message.update(value)
    return message


def _unit_value(field: str, value: float, what: str = "attribute") -> float:
    """A value on an attribute's or factor's [0, 1] scale, checked.

    Raises:
        InvalidArgument: not finite, or outside [0, 1], naming the field.
    """
    if not math.isfinite(value):
        raise InvalidArgument(f"{field} must be a finite number in [0, 1], got {value}")
    if not 0.0 <= value <= 1.0:
        ends = "ListAttributes names both ends" if what == "attribute" else "0 and 1 are the ends of its range in the procedural faces"
        raise InvalidArgument(f"{field} must be in [0, 1] (the {what}'s scale: {ends}), got {value}")
    return float(value)


def _attribute(field: str, name: str) -> str:
    """Raises InvalidArgument for a name that is not an attribute, listing them."""
    if name not in ATTRIBUTE_NAMES:
        raise InvalidArgument(f"{field}: '{shown(name)}' is not an attribute; attributes: {', '.join(ATTRIBUTE_NAMES)}")
    return name


class PhenotypeService(phenotype_pb2_grpc.PhenotypeServicer, FacetService):
    name = "phenotype"

    def __init__(self, config: FacetConfig) -> None:
        self._backend: Backend = create_backend(config)
        self._config = config.section(PhenotypeConfig)
        self._repository = ModelRepository(config.model_repository)
        self.sets: dict[str, BackendModelSet] = {}
        self._metadata: dict[str, ModelMetadata] = {}

    @property
    def default(self) -> str:
        return self._config.model

    def register(self, server: grpc.aio.Server) -> None:
        phenotype_pb2_grpc.add_PhenotypeServicer_to_server(self, server)

    async def start(self) -> None:
        """Load (and warm) the default face generator and every other one in the repository, with
        their four companion models each.

        Raises:
            FailedPrecondition: the default generator is missing or not a generator, or a
                companion is missing (the message gives the build command).
        """
        kinds = {name: self._repository.get(name).kind for name in self._repository.models()}
        if kinds.get(self.default) != Kind.GENERATOR:
            what = "is not in" if self.default not in kinds else f"is a {kinds[self.default]} model, not a {Kind.GENERATOR}, in"
            raise FailedPrecondition(
                f"face generator '{self.default}' (phenotype.model) {what} the model repository {self._repository.root}; "
                f"build it with `{BUILD_COMMAND}` (or `facet models build`)"
            )
        names = [self.default, *sorted(n for n, k in kinds.items() if k == Kind.GENERATOR and n != self.default)]
        loaded = await self._backend.load_all(names)
        sets = {name: BackendModelSet(self._backend, meta) for name, meta in loaded.items()}
        wanted = {companion: kind for s in sets.values() for role, companion in s.companions.items() for kind in [COMPANION_KINDS[role]]}
        missing = sorted(c for c, kind in wanted.items() if kinds.get(c) != kind)
        if missing:
            raise FailedPrecondition(f"phenotype companion model(s) {', '.join(missing)} missing from {self._repository.root}; rebuild with `{BUILD_COMMAND}`")
        await self._backend.load_all(sorted(wanted))
        self.sets, self._metadata = sets, dict(loaded)
        log.info("serving %d face model sets: %s (default %s)", len(names), ", ".join(names), self.default)

    async def healthy(self) -> bool:
        return await self._backend.serving()

    async def stop(self) -> None:
        await self._backend.close()

    # -- validation ------------------------------------------------------------------------

    def model_set(self, name: str) -> BackendModelSet:
        """The face model set called `name` ("" = the default).

        Raises:
            NotFound: no such generator is served (the message lists them).
        """
        found = self.sets.get(name or self.default)
        if found is None:
            raise NotFound(f"face model '{shown(name)}' is not served; available: {', '.join(self.sets)}")
        return found

    async def _image(self, message: phenotype_pb2.Image, field: str, models: BackendModelSet, present: bool) -> np.ndarray:
        """A request image as the models' input float32 [3, S, S]. Decoding and resizing run in a
        worker thread: a large (legal) image takes a second or more of CPU, and on the event loop
        it would hold up every other call and the health checks meanwhile.

        Raises:
            InvalidArgument: unset, or an image `images.decode_image` refuses (naming `field`).
        """
        if not present:
            raise InvalidArgument(f"{field} is required: send a PNG or raw RGB pixels")

        def decode() -> np.ndarray:
            pixels = images.decode_image(message, field, self._config)
            return images.to_model_input(pixels, models.image_size)[0]

        return await asyncio.to_thread(decode)

    def _replies(self, output: np.ndarray) -> list[phenotype_pb2.Image]:
        return [images.image_message(image) for image in images.from_model_output(output)]

    # -- RPCs ------------------------------------------------------------------------------

    async def ListAttributes(
        self, request: phenotype_pb2.ListAttributesRequest, context: grpc.aio.ServicerContext
    ) -> phenotype_pb2.ListAttributesResponse:
        models = self.model_set(request.model)
        return phenotype_pb2.ListAttributesResponse(
            attributes=[
                phenotype_pb2.AttributeInfo(
                    name=a.name, meaning=a.meaning, low=a.low, high=a.high, min_value=0.0, max_value=1.0,
                    region=phenotype_pb2.Region(top=a.region[0], left=a.region[1], bottom=a.region[2], right=a.region[3]),
                )  # fmt: skip
                for a in ATTRIBUTES
            ],
            image_size=models.image_size,
            factors=list(models.factor_names),
            model=models.name,
        )

    async def ListFaceModels(
        self, request: phenotype_pb2.ListFaceModelsRequest, context: grpc.aio.ServicerContext
    ) -> phenotype_pb2.ListFaceModelsResponse:
        return phenotype_pb2.ListFaceModelsResponse(models=[self._info(name) for name in self.sets])

    def _info(self, name: str) -> phenotype_pb2.FaceModel:
        meta, models = self._metadata[name], self.sets[name]
        p: Mapping[str, Any] = meta.properties
        return phenotype_pb2.FaceModel(
            name=name, version=meta.version, default=name == self.default, image_size=models.image_size,
            latent_dim=models.latent_dim, factors=list(models.factor_names), companions=models.companions,
            metrics=_struct(p.get(Prop.METRICS, {})), architecture=_struct(p.get(Prop.ARCHITECTURE, {})),
            training=_struct(p.get(Prop.TRAINING, {})), source=meta.source,
        )  # fmt: skip

    async def Generate(self, request: phenotype_pb2.GenerateRequest, context: grpc.aio.ServicerContext) -> phenotype_pb2.GenerateResponse:
        models = self.model_set(request.model)
        values: dict[str, float] = {}
        for name, value in sorted(request.factors.items()):
            if name not in models.factor_names:
                raise InvalidArgument(f"factors: '{shown(name)}' is not a factor of face model '{models.name}'; factors: {', '.join(models.factor_names)}")
            values[name] = _unit_value(f"factors['{name}']", value, "factor")
        generated, factors = await editing.generate(models, values, int(request.seed))
        readings = await models.read_attributes(generated)
        return phenotype_pb2.GenerateResponse(
            image=self._replies(generated)[0],
            factors={name: float(factors[0, i]) for i, name in enumerate(models.factor_names)},
            attributes={name: float(readings[0, i]) for i, name in enumerate(ATTRIBUTE_NAMES)},
            model=models.name,
        )

    async def Encode(self, request: phenotype_pb2.EncodeRequest, context: grpc.aio.ServicerContext) -> phenotype_pb2.EncodeResponse:
        models = self.model_set(request.model)
        image = await self._image(request.image, "image", models, request.HasField("image"))
        latent = await models.encode_image(image[None])
        reconstruction = await models.generate(latent)
        readings = await models.read_attributes(image[None])
        return phenotype_pb2.EncodeResponse(
            latent=[float(x) for x in latent[0]],
            attributes={name: float(readings[0, i]) for i, name in enumerate(ATTRIBUTE_NAMES)},
            reconstruction=self._replies(reconstruction)[0],
            reconstruction_error=float(np.abs(reconstruction[0] - image).mean()),
            latent_layout={name: phenotype_pb2.LatentSlice(start=start, stop=stop) for name, (start, stop) in models.layout.items()},
            model=models.name,
        )

    async def Edit(self, request: phenotype_pb2.EditRequest, context: grpc.aio.ServicerContext) -> phenotype_pb2.EditResponse:
        models = self.model_set(request.model)
        limit = self._config.max_edits
        if not request.edits:
            raise InvalidArgument(f"edits is empty: name 1..{limit} attributes, each with a value in [0, 1] or a reference image")
        if len(request.edits) > limit:
            raise InvalidArgument(f"edits has {len(request.edits)} attributes; the limit is phenotype.max_edits ({limit})")
        values: dict[str, float] = {}
        targets: dict[str, phenotype_pb2.EditTarget] = {}
        for name, target in sorted(request.edits.items()):
            _attribute("edits", name)
            kind = target.WhichOneof("target")
            if kind is None:
                raise InvalidArgument(f"edits['{name}'] has no target: set a value in [0, 1] or a reference image")
            if kind == "value":
                values[name] = _unit_value(f"edits['{name}'].value", target.value)
            else:
                targets[name] = target
        image = await self._image(request.image, "image", models, request.HasField("image"))
        references = {name: await self._image(target.reference, f"edits['{name}'].reference", models, True) for name, target in targets.items()}
        result = await editing.edit(models, image, values, references)
        r = result.report
        return phenotype_pb2.EditResponse(
            image=self._replies(result.image[None])[0],
            report=phenotype_pb2.EditReport(
                target=r.target, achieved=r.achieved, drift=r.drift, identity_similarity=r.identity_similarity,
                pixel_change_outside=r.pixel_change_outside, pixel_change_inside=r.pixel_change_inside,
                before=r.before, reconstruction_error=r.reconstruction_error,
            ),  # fmt: skip
            model=models.name,
        )

    async def Interpolate(
        self, request: phenotype_pb2.InterpolateRequest, context: grpc.aio.ServicerContext
    ) -> phenotype_pb2.InterpolateResponse:
        models = self.model_set(request.model)
        attribute = _attribute("attribute", request.attribute)
        limit = self._config.max_interpolation_values
        if not 1 <= len(request.values) <= limit:
            raise InvalidArgument(f"values has {len(request.values)} entries; send 1..phenotype.max_interpolation_values ({limit})")
        values = [_unit_value(f"values[{i}]", v) for i, v in enumerate(request.values)]
        image = await self._image(request.image, "image", models, request.HasField("image"))
        strip = await editing.interpolate(models, image, attribute, values)
        readings = await models.read_attributes(strip)
        column = ATTRIBUTE_NAMES.index(attribute)
        return phenotype_pb2.InterpolateResponse(
            images=self._replies(strip), achieved=[float(x) for x in readings[:, column]], model=models.name
        )
