"""Phenotype editing (`facet.v1.Phenotype`): change facial phenotype attributes of a face image,
keep the rest, and measure what happened.

After Yucer, Atapour-Abarghouei, Al Moubayed, Breckon, "Disentangling Racial Phenotypes:
Fine-Grained Control of Race-related Facial Phenotype Characteristics" (§3), which follows
ConfigNet (Kowalski et al., ECCV 2020, §3): a generator whose latent has one slice per attribute
plus an identity part; a factor encoder maps factor values to that latent (trained on Facet's
procedural faces, whose every factor is known); an image encoder maps an image to it; an edit
overwrites a slice and decodes. Every edit comes with a report measured by an attribute regressor
and an identity embedding trained apart from the generator (another seed, other faces).

Attributes are values in [0, 1] (`list_attributes()` names each end): skin_tone, hair_colour,
eye_openness, eye_size, nose_width, nose_length, lip_fullness. Images go in as numpy uint8
(H, W, 3) arrays (grey and RGBA converted), PNG bytes or PNG paths (`sdk._images`), and come back
as numpy uint8 (image_size, image_size, 3) arrays (64 x 64 for the default model). Limits named
below are keys of the service's `[phenotype]` config section.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

import numpy as np

from sdk import _arguments as check
from sdk._call import Call, Service
from sdk._errors import InvalidArgument
from sdk._images import ImageLike, array_from_message, image_message
from sdk._proto.facet.v1 import phenotype_pb2, phenotype_pb2_grpc
from sdk._struct import from_struct
from sdk._tensors import finite_float, finite_floats
from sdk._transport import AsyncTransport, SyncTransport, docstrings_from

CAPABILITY = "phenotype"
UINT64_MAX = 2**64 - 1
# Every RPC only reads: each is safe to send again after UNAVAILABLE (sdk._retry).
IDEMPOTENT = frozenset({"ListAttributes", "ListFaceModels", "Generate", "Encode", "Edit", "Interpolate"})
SERVICE = Service(CAPABILITY, phenotype_pb2_grpc.PhenotypeStub, idempotent=IDEMPOTENT)

# -- results ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AttributeInfo:
    """One editable attribute.

    Attributes:
        name: what `edit_phenotype`'s edits and `interpolate_phenotype`'s attribute take.
        meaning: one line, e.g. "skin colour of face, ears and neck, along a Fitzpatrick-like I-VI range".
        low: what `min_value` means, e.g. "Fitzpatrick type I (lightest)".
        high: what `max_value` means, e.g. "Fitzpatrick type VI (darkest)".
        min_value: the least value: 0.
        max_value: the greatest value: 1.
        region: where it changes pixels on a centred, upright face: (top, left, bottom, right)
            as fractions of the image side; the report's pixel changes use these boxes.
    """

    name: str
    meaning: str
    low: str
    high: str
    min_value: float
    max_value: float
    region: tuple[float, float, float, float]


@dataclasses.dataclass(frozen=True)
class Attributes(Sequence[AttributeInfo]):
    """The attributes of a face model (`list_attributes`): a sequence of `AttributeInfo` in the
    latent's slice order, with the model's facts.

    Attributes:
        attributes: the `AttributeInfo`s.
        image_size: pixels per side of every image the model returns.
        factors: every factor `generate_face` takes, the attributes first, then the identity
            and nuisance factors of the procedural faces (face shape, pose, lighting, ...).
        model: the face model they belong to.
    """

    attributes: tuple[AttributeInfo, ...]
    image_size: int
    factors: tuple[str, ...]
    model: str

    @overload
    def __getitem__(self, i: int) -> AttributeInfo: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[AttributeInfo, ...]: ...
    def __getitem__(self, i: int | slice) -> AttributeInfo | tuple[AttributeInfo, ...]:
        return self.attributes[i]

    def __len__(self) -> int:
        return len(self.attributes)

    def __iter__(self) -> Iterator[AttributeInfo]:
        return iter(self.attributes)

    @property
    def names(self) -> list[str]:
        """The attribute names, in order."""
        return [a.name for a in self.attributes]


@dataclasses.dataclass(frozen=True)
class FaceModelInfo:
    """A face model the service serves, as its training and export recorded it.

    Attributes:
        name: what every method's `model` takes, e.g. "configfaces-64".
        version: the version served.
        default: the one a call without `model` uses.
        image_size: pixels per side.
        latent_dim: width of its latent.
        factors: as `Attributes.factors`.
        companions: role ("factor_encoder", "image_encoder", "regressor", "identity") -> model name.
        metrics: its evaluation (controllability, drift, identity, reconstruction, Frechet distance).
        architecture: the model configs.
        training: the training configs, seeds and time_s.
        source: where the weights came from.
    """

    name: str
    version: int
    default: bool
    image_size: int
    latent_dim: int
    factors: tuple[str, ...]
    companions: dict[str, str]
    metrics: dict[str, Any]
    architecture: dict[str, Any]
    training: dict[str, Any]
    source: str


class Face(np.ndarray):  # type: ignore[type-arg]
    """A generated face (`generate_face`): a numpy uint8 (image_size, image_size, 3) RGB array like
    any other, carrying what the service measured of it.

    Attributes:
        factors: {factor: value in [0, 1]}: every factor the face was generated from, the ones
            given and the ones drawn from the seed (`list_attributes().factors`).
        attributes: {attribute: value}: the attributes as the regressor (trained apart from the
            generator) reads them off the image: what the face shows, which can differ from the
            factor asked for (the model's controllability, `list_face_models()` metrics).
        model: the face model.

    The readings describe the image as generated. As numpy does for its subclasses, arrays made
    from a Face (a slice, a cast, arithmetic) are Faces with the same readings;
    `np.asarray(face)` is the plain array.
    """

    factors: dict[str, float]
    attributes: dict[str, float]
    model: str

    def __new__(cls, image: np.ndarray, factors: dict[str, float], attributes: dict[str, float], model: str) -> Face:
        face = np.asarray(image).view(cls)
        face.factors, face.attributes, face.model = factors, attributes, model
        return face

    def __array_finalize__(self, obj: Any) -> None:  # an array made from a Face: its readings
        self.factors = getattr(obj, "factors", {})
        self.attributes = getattr(obj, "attributes", {})
        self.model = getattr(obj, "model", "")

    def __reduce__(self) -> Any:  # pickling keeps the readings (a view's state would lose them)
        return (Face, (np.asarray(self).copy(), self.factors, self.attributes, self.model))


@dataclasses.dataclass(frozen=True, eq=False)  # images compare by identity: == of arrays has no single truth value
class Interpolation(Sequence[np.ndarray]):
    """The strip `interpolate_phenotype` returns: a sequence of uint8 (image_size, image_size, 3)
    images, one per value asked for, with what the regressor reads off each.

    Attributes:
        images: the images, in the order of `values`.
        attribute: the attribute set.
        values: the values asked for, in order.
        achieved: the attribute as the regressor (trained apart from the generator) reads it off
            each image: how far the model moved it (an attribute the model controls poorly
            moves less than asked).
        model: the face model.
    """

    images: tuple[np.ndarray, ...]
    attribute: str
    values: tuple[float, ...]
    achieved: tuple[float, ...]
    model: str

    @overload
    def __getitem__(self, i: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[np.ndarray, ...]: ...
    def __getitem__(self, i: int | slice) -> np.ndarray | tuple[np.ndarray, ...]:
        return self.images[i]

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.images)


@dataclasses.dataclass(frozen=True)
class EncodedFace:
    """An image as the face model sees it (`encode_face`).

    Attributes:
        latent: float32 [latent_dim]: the image encoder's latent.
        latent_layout: {slice name: (start, stop)} over `latent`, in the latent's order: one per
            attribute, then "identity".
        attributes: {attribute: value} as the regressor reads them off the image.
        reconstruction: uint8 (image_size, image_size, 3): the generator's decoding of `latent`.
        reconstruction_error: mean absolute difference of the image (as the model sees it:
            centre-cropped and resized) and the reconstruction, on a 0..1 pixel scale.
        model: the face model.
    """

    latent: np.ndarray
    latent_layout: dict[str, tuple[int, int]]
    attributes: dict[str, float]
    reconstruction: np.ndarray
    reconstruction_error: float
    model: str

    def slice(self, name: str) -> np.ndarray:
        """The part of `latent` of one attribute (or "identity"). Raises KeyError for another name."""
        start, stop = self.latent_layout[name]
        return self.latent[start:stop]


@dataclasses.dataclass(frozen=True)
class EditReport:
    """What an edit did, measured by models trained apart from the generator (another seed,
    other faces), on images of the model's size.

    Attributes:
        target: each edited attribute's target: the value asked for, or, for a reference image,
            the regressor's reading of the reference's own reconstruction (what the copied
            slice renders).
        achieved: each edited attribute as the regressor reads it off the edited image.
        drift: every attribute NOT edited: its reading off the edited image minus its reading
            off the unedited reconstruction decode(encode(image)) (0: untouched), so it measures
            the edit, not the reconstruction error.
        identity_similarity: cosine similarity of the identity embeddings of the unedited
            reconstruction and the edited image, in [-1, 1] (1: the same person, as the embedding
            sees it; an edit that changes nothing scores 1).
        pixel_change_outside: mean absolute pixel change (0..1 scale) from the unedited
            reconstruction to the edited image, outside the union of the edited attributes'
            regions (`AttributeInfo.region`): what should stay put.
        pixel_change_inside: the same inside those regions.
        before: every attribute as the regressor reads it off the input.
        reconstruction_error: mean absolute difference (0..1 scale) of the input, at the model's
            size, and its unedited reconstruction: what encoding loses before any edit.
        model: the face model.
        error: (property) achieved - target per edited attribute.
    """

    target: dict[str, float]
    achieved: dict[str, float]
    drift: dict[str, float]
    identity_similarity: float
    pixel_change_outside: float
    pixel_change_inside: float
    before: dict[str, float]
    reconstruction_error: float = 0.0
    model: str = ""

    @property
    def error(self) -> dict[str, float]:
        """achieved - target per edited attribute."""
        return {name: self.achieved[name] - value for name, value in self.target.items() if name in self.achieved}


# -- arguments ----------------------------------------------------------------------------------


def _model(model: object) -> str:
    return "" if model is None else check.text(model, "model")


def _unit(value: object, name: str) -> float:
    """A finite number in [0, 1]: an attribute's or a factor's value."""
    return check.number(value, name, low=0.0, high=1.0)


def _named_values(value: object, name: str, example: str) -> dict[str, object]:
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{name} must be a dict {example}, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise InvalidArgument(f"{name} has a key that is not a string: {type(key).__name__} {key!r}; keys are attribute names")
        check.text(key, f"{name} key {key!r}")
    return dict(value)


def _factors(factors: object) -> dict[str, float]:
    if factors is None:
        return {}
    values = _named_values(factors, "factors", "{factor: value in [0, 1]}, e.g. {'skin_tone': 0.8}")
    return {key: _unit(v, f"factors[{key!r}]") for key, v in values.items()}


def _is_image(value: object) -> bool:
    return isinstance(value, (np.ndarray, bytes, bytearray, memoryview, str, os.PathLike))


def _edits(edits: object) -> dict[str, phenotype_pb2.EditTarget]:
    values = _named_values(edits, "edits", "{attribute: value in [0, 1] or reference image}")
    if not values:
        raise InvalidArgument("edits is empty: name at least one attribute, e.g. {'skin_tone': 0.8}")
    targets = {}
    for key, value in values.items():
        name = f"edits[{key!r}]"
        if isinstance(value, np.ndarray) and value.ndim == 0:
            value = value.item()  # a numpy scalar given as a 0-d array
        if _is_image(value):
            targets[key] = phenotype_pb2.EditTarget(reference=image_message(value, name))
        elif isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
            targets[key] = phenotype_pb2.EditTarget(value=_unit(value, name))
        else:
            raise InvalidArgument(
                f"{name} must be a value in [0, 1] or a reference image (numpy uint8 array, PNG bytes or path), "
                f"got {type(value).__name__}"
            )
    return targets


def _values(values: object) -> list[float]:
    if isinstance(values, (numbers.Real, str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise InvalidArgument(f"values must be a list of values in [0, 1], e.g. [0.0, 0.5, 1.0], got {type(values).__name__}")
    items = [_unit(v, f"values[{i}]") for i, v in enumerate(values)]
    if not items:
        raise InvalidArgument("values is empty: give at least one value in [0, 1]")
    return items


# -- requests and replies -----------------------------------------------------------------------


def _call(method: str, request: Any, parse: Any) -> Call[Any]:
    return Call(SERVICE, method, request, parse)


def _finite_map(values: Mapping[str, float], what: str) -> dict[str, float]:
    return {key: finite_float(v, f"{what}[{key!r}]") for key, v in values.items()}


def list_attributes_request(model: str | None) -> phenotype_pb2.ListAttributesRequest:
    return phenotype_pb2.ListAttributesRequest(model=_model(model))


def parse_attributes(r: phenotype_pb2.ListAttributesResponse) -> Attributes:
    attributes = tuple(
        AttributeInfo(
            name=a.name,
            meaning=a.meaning,
            low=a.low,
            high=a.high,
            min_value=finite_float(a.min_value, f"attributes[{i}].min_value"),
            max_value=finite_float(a.max_value, f"attributes[{i}].max_value"),
            region=(a.region.top, a.region.left, a.region.bottom, a.region.right),
        )
        for i, a in enumerate(r.attributes)
    )
    return Attributes(attributes, image_size=int(r.image_size), factors=tuple(r.factors), model=r.model)


def parse_face_model(m: phenotype_pb2.FaceModel) -> FaceModelInfo:
    return FaceModelInfo(
        name=m.name,
        version=int(m.version),
        default=m.default,
        image_size=int(m.image_size),
        latent_dim=int(m.latent_dim),
        factors=tuple(m.factors),
        companions=dict(m.companions),
        metrics=from_struct(m.metrics),
        architecture=from_struct(m.architecture),
        training=from_struct(m.training),
        source=m.source,
    )


def generate_request(factors: object, seed: object, model: object) -> phenotype_pb2.GenerateRequest:
    return phenotype_pb2.GenerateRequest(
        factors=_factors(factors), seed=check.integer(seed, "seed", high=UINT64_MAX), model=_model(model)
    )


def parse_generated(r: phenotype_pb2.GenerateResponse) -> Face:
    return Face(
        array_from_message(r.image, "image"),
        factors=_finite_map(r.factors, "factors"),
        attributes=_finite_map(r.attributes, "attributes"),
        model=r.model,
    )


def encode_request(image: object, model: object) -> phenotype_pb2.EncodeRequest:
    return phenotype_pb2.EncodeRequest(image=image_message(image, "image"), model=_model(model))


def parse_encoded(r: phenotype_pb2.EncodeResponse) -> EncodedFace:
    latent = finite_floats(r.latent, "latent")
    # by position: a proto map has no order, and the slices' order is the latent's
    layout = dict(sorted(((name, (int(s.start), int(s.stop))) for name, s in r.latent_layout.items()), key=lambda item: item[1]))
    for name, (start, stop) in layout.items():
        if not 0 <= start <= stop <= len(latent):
            raise InvalidArgument(f"latent_layout[{name!r}] = [{start}, {stop}) is outside the latent's {len(latent)} values")
    return EncodedFace(
        latent=latent,
        latent_layout=layout,
        attributes=_finite_map(r.attributes, "attributes"),
        reconstruction=array_from_message(r.reconstruction, "reconstruction"),
        reconstruction_error=finite_float(r.reconstruction_error, "reconstruction_error"),
        model=r.model,
    )


def edit_request(image: object, edits: object, model: object) -> phenotype_pb2.EditRequest:
    request = phenotype_pb2.EditRequest(image=image_message(image, "image"), model=_model(model))
    for key, target in _edits(edits).items():
        request.edits[key].CopyFrom(target)
    return request


def parse_edited(r: phenotype_pb2.EditResponse) -> tuple[np.ndarray, EditReport]:
    report = r.report
    return array_from_message(r.image, "image"), EditReport(
        target=_finite_map(report.target, "report.target"),
        achieved=_finite_map(report.achieved, "report.achieved"),
        drift=_finite_map(report.drift, "report.drift"),
        identity_similarity=finite_float(report.identity_similarity, "report.identity_similarity"),
        pixel_change_outside=finite_float(report.pixel_change_outside, "report.pixel_change_outside"),
        pixel_change_inside=finite_float(report.pixel_change_inside, "report.pixel_change_inside"),
        before=_finite_map(report.before, "report.before"),
        reconstruction_error=finite_float(report.reconstruction_error, "report.reconstruction_error"),
        model=r.model,
    )


def interpolate_request(image: object, attribute: object, values: object, model: object) -> phenotype_pb2.InterpolateRequest:
    return phenotype_pb2.InterpolateRequest(
        image=image_message(image, "image"),
        attribute=check.text(attribute, "attribute"),
        values=_values(values),
        model=_model(model),
    )


def parse_interpolated(r: phenotype_pb2.InterpolateResponse, request: phenotype_pb2.InterpolateRequest) -> Interpolation:
    images = tuple(array_from_message(image, f"images[{i}]") for i, image in enumerate(r.images))
    achieved = tuple(finite_float(v, f"achieved[{i}]") for i, v in enumerate(r.achieved))  # doubles, kept as sent
    if not len(images) == len(achieved) == len(request.values):
        raise InvalidArgument(f"the reply has {len(images)} images and {len(achieved)} readings for {len(request.values)} values")
    return Interpolation(images, request.attribute, tuple(request.values), achieved, r.model)


def _list_attributes_call(model: str | None) -> Call[Attributes]:
    return _call("ListAttributes", list_attributes_request(model), parse_attributes)


def _list_face_models_call() -> Call[list[FaceModelInfo]]:
    return _call("ListFaceModels", phenotype_pb2.ListFaceModelsRequest(), lambda r: [parse_face_model(m) for m in r.models])


def _generate_call(factors: Mapping[str, float] | None, seed: int, model: str | None) -> Call[Face]:
    return _call("Generate", generate_request(factors, seed, model), parse_generated)


def _encode_call(image: ImageLike, model: str | None) -> Call[EncodedFace]:
    return _call("Encode", encode_request(image, model), parse_encoded)


def _edit_call(image: ImageLike, edits: Mapping[str, float | ImageLike], model: str | None) -> Call[tuple[np.ndarray, EditReport]]:
    return _call("Edit", edit_request(image, edits, model), parse_edited)


def _interpolate_call(image: ImageLike, attribute: str, values: Iterable[float], model: str | None) -> Call[Interpolation]:
    request = interpolate_request(image, attribute, values, model)
    return _call("Interpolate", request, lambda r: parse_interpolated(r, request))


# -- methods ------------------------------------------------------------------------------------


class PhenotypeMethods(SyncTransport):
    """The phenotype methods of `sdk.Client`."""

    _service = SERVICE

    def list_attributes(self, *, model: str | None = None, timeout_s: float | None = None) -> Attributes:
        """The attributes a face model edits, with the meaning of each end of their range.

        Args:
            model: a face model from `list_face_models()`; None: the service's default
                (`phenotype.model`, "configfaces-64").
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            Attributes: a sequence of `AttributeInfo(name, meaning, low, high, min_value,
            max_value, region)`, with `.image_size`, `.factors` (what `generate_face` takes)
            and `.names`.
        Raises:
            NotFound: the service serves no face model called `model`.
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated.

        Example:
            >>> client.list_attributes().names
            ['skin_tone', 'hair_colour', 'eye_openness', 'eye_size', 'nose_width', 'nose_length', 'lip_fullness']
        """
        return self._run(_list_attributes_call(model), timeout_s)

    def list_face_models(self, *, timeout_s: float | None = None) -> list[FaceModelInfo]:
        """The face models the service serves, the default first.

        Args:
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            Each one's name, version, image size, latent width, factors, companion models,
            evaluation metrics, architecture and training record.
        Raises:
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated.
        """
        return self._run(_list_face_models_call(), timeout_s)

    def generate_face(
        self,
        factors: Mapping[str, float] | None = None,
        *,
        seed: int = 0,
        model: str | None = None,
        timeout_s: float | None = None,
    ) -> Face:
        """A face from factor values: the factor encoder's latent decoded by the generator
        (ConfigNet's stage 1, Kowalski et al. 2020 §3.1).

        Args:
            factors: {factor: value in [0, 1]} for any of `list_attributes().factors` (the
                attributes, and identity / nuisance factors such as face shape, pose and
                lighting); None or {}: every factor drawn from `seed`.
            seed: 0..2**64-1; draws the factors not given: the same seed and factors give the
                same face.
            model: a face model from `list_face_models()`; None: the service's default.
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            Face: a numpy uint8 (image_size, image_size, 3) RGB array, with `.factors` (every
            factor it was generated from, given or drawn), `.attributes` (what the regressor
            reads off it) and `.model`.
        Raises:
            InvalidArgument: before sending, factors not a dict with str keys, a value that is
                not a finite number in [0, 1], a seed that is not an integer in range; from
                the service, an unknown factor name (the message lists them).
            NotFound: the service serves no face model called `model`.
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated, ResourceExhausted.

        Example:
            >>> face = client.generate_face(seed=3)
            >>> darker = client.generate_face({"skin_tone": 0.9}, seed=3)
            >>> darker.factors["skin_tone"], darker.attributes["skin_tone"]   # asked for, read off the image
        """
        return self._run(_generate_call(factors, seed, model), timeout_s)

    def encode_face(self, image: ImageLike, *, model: str | None = None, timeout_s: float | None = None) -> EncodedFace:
        """An image's latent (the image encoder, ConfigNet's stage 2), its attributes as the
        regressor reads them, and the generator's reconstruction.

        Args:
            image: numpy uint8 (H, W, 3) RGB ((H, W) grey and (H, W, 4) RGBA converted: grey
                repeated, alpha dropped), PNG bytes or a path to a PNG file; each side within
                `phenotype.min_image_side` (16) .. `phenotype.max_image_side` (2048), at most
                `phenotype.max_image_bytes` (16 MiB). The model sees its centre square resized
                to image_size.
            model: a face model from `list_face_models()`; None: the service's default.
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            EncodedFace(latent float32 [latent_dim], latent_layout, attributes,
            reconstruction uint8 (image_size, image_size, 3), reconstruction_error, model).
        Raises:
            InvalidArgument: before sending, an image that is not uint8 (the message shows the
                conversion), of another shape, empty, or bytes / a file that is not PNG; from
                the service, a truncated or corrupt PNG, an animated PNG, a side or size over
                its limit (each message names the limit in force).
            NotFound: the service serves no face model called `model`.
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated, ResourceExhausted.
        """
        return self._run(_encode_call(image, model), timeout_s)

    def edit_phenotype(
        self,
        image: ImageLike,
        edits: Mapping[str, float | ImageLike],
        *,
        model: str | None = None,
        timeout_s: float | None = None,
    ) -> tuple[np.ndarray, EditReport]:
        """The image with some attributes changed, and a measured report of the edit.

        Each edited attribute's slice of the image's latent is overwritten (with the factor
        encoder's slice for the value, or with the reference image's slice) and the latent
        decoded (Yucer et al. §3; ConfigNet §3.3).

        Args:
            image: the face, as `encode_face` takes it.
            edits: {attribute: target}, 1..`phenotype.max_edits` (7) attributes from
                `list_attributes()`; a target is a value in [0, 1] or a reference image (a face
                whose attribute to copy), as `image`.
            model: a face model from `list_face_models()`; None: the service's default.
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            (edited, report): edited is uint8 (image_size, image_size, 3); report is an
            `EditReport` (target, achieved, error, drift, identity_similarity,
            pixel_change_outside, pixel_change_inside, before, reconstruction_error, model).
        Raises:
            InvalidArgument: before sending, edits empty or not a dict, a key that is not a
                string, a value that is NaN, infinite or outside [0, 1], a bad image or
                reference image (named `edits['<attribute>']`); from the service, an unknown
                attribute (the message lists them), more edits than `phenotype.max_edits`, an
                image the service cannot read (as `encode_face`).
            NotFound: the service serves no face model called `model`.
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated, ResourceExhausted.

        Example:
            >>> edited, report = client.edit_phenotype(face, {"skin_tone": 0.8, "nose_width": reference_face})
            >>> report.achieved["skin_tone"], report.drift, report.identity_similarity
        """
        return self._run(_edit_call(image, edits, model), timeout_s)

    def interpolate_phenotype(
        self,
        image: ImageLike,
        attribute: str,
        values: Iterable[float],
        *,
        model: str | None = None,
        timeout_s: float | None = None,
    ) -> Interpolation:
        """The image with one attribute set to each of several values: a strip of faces.

        Args:
            image: the face, as `encode_face` takes it.
            attribute: an attribute from `list_attributes()`.
            values: 1..`phenotype.max_interpolation_values` (16) values, each in [0, 1].
            model: a face model from `list_face_models()`; None: the service's default.
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            Interpolation: a sequence of one uint8 (image_size, image_size, 3) image per value,
            in order, with `.values`, `.achieved` (the attribute as the regressor reads it off
            each image), `.attribute` and `.model`.
        Raises:
            InvalidArgument: before sending, values not a list, empty, or holding a value that
                is not a finite number in [0, 1], a bad image; from the service, an unknown
                attribute, more values than the limit.
            NotFound: the service serves no face model called `model`.
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated, ResourceExhausted.

        Example:
            >>> strip = client.interpolate_phenotype(photo, "hair_colour", [0.0, 0.25, 0.5, 0.75, 1.0])
            >>> sdk.save_grid(strip, "hair.png")
            >>> list(zip(strip.values, strip.achieved))   # asked for, read off each image
        """
        return self._run(_interpolate_call(image, attribute, values, model), timeout_s)


@docstrings_from(PhenotypeMethods)
class AsyncPhenotypeMethods(AsyncTransport):
    """The phenotype methods of `sdk.AsyncClient`: those of `sdk.Client`, awaitable."""

    _service = SERVICE

    async def list_attributes(self, *, model: str | None = None, timeout_s: float | None = None) -> Attributes:
        return await self._run(_list_attributes_call(model), timeout_s)

    async def list_face_models(self, *, timeout_s: float | None = None) -> list[FaceModelInfo]:
        return await self._run(_list_face_models_call(), timeout_s)

    async def generate_face(
        self,
        factors: Mapping[str, float] | None = None,
        *,
        seed: int = 0,
        model: str | None = None,
        timeout_s: float | None = None,
    ) -> Face:
        return await self._run(_generate_call(factors, seed, model), timeout_s)

    async def encode_face(self, image: ImageLike, *, model: str | None = None, timeout_s: float | None = None) -> EncodedFace:
        return await self._run(_encode_call(image, model), timeout_s)

    async def edit_phenotype(
        self,
        image: ImageLike,
        edits: Mapping[str, float | ImageLike],
        *,
        model: str | None = None,
        timeout_s: float | None = None,
    ) -> tuple[np.ndarray, EditReport]:
        return await self._run(_edit_call(image, edits, model), timeout_s)

    async def interpolate_phenotype(
        self,
        image: ImageLike,
        attribute: str,
        values: Iterable[float],
        *,
        model: str | None = None,
        timeout_s: float | None = None,
    ) -> Interpolation:
        return await self._run(_interpolate_call(image, attribute, values, model), timeout_s)
