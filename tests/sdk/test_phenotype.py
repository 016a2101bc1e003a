"""The phenotype part of the SDK without a server: the requests it builds, the replies it reads, and
each argument it refuses before sending (`sdk.InvalidArgument` naming the argument)."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import struct_pb2

import sdk
from sdk import _phenotype as phenotype
from sdk._proto.facet.v1 import phenotype_pb2

RNG = np.random.default_rng(5)
FACE = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
OTHER = RNG.integers(0, 256, (20, 24, 3), dtype=np.uint8)
PNG = b"\x89PNG\r\n\x1a\n" + b"rest of the file: checked by the service"


def raw(image: np.ndarray) -> phenotype_pb2.Image:
    return phenotype_pb2.Image(raw=phenotype_pb2.RawImage(height=image.shape[0], width=image.shape[1], channels=3, data=image.tobytes()))


def round_trip(message):  # type: ignore[no-untyped-def]
    """The message as the server receives it."""
    return type(message).FromString(message.SerializeToString())


# -- requests -----------------------------------------------------------------------------------


def test_an_edit_request_carries_values_and_reference_images(tmp_path: Path) -> None:
    path = tmp_path / "reference.png"
    path.write_bytes(PNG)
    request = round_trip(
        phenotype.edit_request(FACE, {"skin_tone": 0.8, "nose_width": OTHER, "hair_colour": path, "lip_fullness": np.float32(0.25)}, None)
    )
    assert request.model == ""
    assert request.image.raw.data == FACE.tobytes() and (request.image.raw.height, request.image.raw.width) == (32, 32)
    assert request.edits["skin_tone"].WhichOneof("target") == "value" and request.edits["skin_tone"].value == 0.8
    assert request.edits["lip_fullness"].value == 0.25
    assert request.edits["nose_width"].reference.raw.data == OTHER.tobytes()
    assert request.edits["hair_colour"].reference.png == PNG
    # 0.0 is a value, not an unset field
    assert round_trip(phenotype.edit_request(PNG, {"skin_tone": 0}, "faces")).edits["skin_tone"].WhichOneof("target") == "value"


def test_generate_and_interpolate_requests() -> None:
    request = round_trip(phenotype.generate_request({"skin_tone": 1, "yaw": 0.5}, 2**64 - 1, "configfaces-64"))
    assert dict(request.factors) == {"skin_tone": 1.0, "yaw": 0.5}
    assert request.seed == 2**64 - 1 and request.model == "configfaces-64"
    assert dict(phenotype.generate_request(None, 0, None).factors) == {}
    request = round_trip(phenotype.interpolate_request(FACE, "hair_colour", (v / 4 for v in range(5)), None))
    assert request.attribute == "hair_colour" and list(request.values) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert round_trip(phenotype.encode_request(PNG, None)).image.png == PNG


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        ({}, r"edits is empty: name at least one attribute, e.g. \{'skin_tone': 0.8\}"),
        ([("skin_tone", 0.8)], r"edits must be a dict \{attribute: value in \[0, 1\] or reference image\}, got list"),
        ({3: 0.5}, r"edits has a key that is not a string: int 3"),
        ({"skin_tone": math.nan}, r"edits\['skin_tone'\] must be a finite number, got nan"),
        ({"skin_tone": math.inf}, r"edits\['skin_tone'\] must be a finite number, got inf"),
        ({"skin_tone": 1.5}, r"edits\['skin_tone'\] must be between 0.0 and 1.0, got 1.5"),
        ({"skin_tone": -0.1}, r"edits\['skin_tone'\] must be between 0.0 and 1.0, got -0.1"),
        ({"skin_tone": True}, r"edits\['skin_tone'\] must be a value in \[0, 1\] or a reference image .* got bool"),
        ({"skin_tone": [0.5]}, r"edits\['skin_tone'\] must be a value in \[0, 1\] or a reference image .* got list"),
        ({"nose_width": OTHER / 255.0}, r"edits\['nose_width'\] must be a uint8 array \(0..255\), got dtype float64: for values in \[0, 1\] convert with"),
        ({"nose_width": b"JPEG bytes"}, r"edits\['nose_width'\] \(bytes\) is not a PNG file"),
    ],
)
def test_bad_edits_are_refused_before_sending(edits: object, message: str) -> None:
    with pytest.raises(sdk.InvalidArgument, match=message) as caught:
        phenotype.edit_request(FACE, edits, None)
    assert caught.value.request_id is None


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (FACE.astype(np.float32) / 255, r"image must be a uint8 array \(0..255\), got dtype float32: for values in \[0, 1\] convert with \(np.clip\(image, 0, 1\) \* 255\).round\(\).astype\(np.uint8\)"),
        (np.zeros((0, 0, 3), np.uint8), r"image is empty"),
        (np.zeros((32, 32, 2, 3), np.uint8), r"image must have shape \(H, W, 3\) RGB, \(H, W\) or \(H, W, 1\) grey, \(H, W, 2\) grey\+alpha or \(H, W, 4\) RGBA, got \(32, 32, 2, 3\)"),
        (None, r"image must be a numpy uint8 array \(H, W, 3\), PNG bytes or a path to a PNG file, got NoneType"),
    ],
)
def test_bad_images_are_refused_before_sending(image: object, message: str) -> None:
    for build in (lambda: phenotype.edit_request(image, {"skin_tone": 0.5}, None), lambda: phenotype.encode_request(image, None),
                  lambda: phenotype.interpolate_request(image, "skin_tone", [0.5], None)):  # fmt: skip
        with pytest.raises(sdk.InvalidArgument, match=message):
            build()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: phenotype.generate_request({"skin_tone": 2.0}, 0, None), r"factors\['skin_tone'\] must be between 0.0 and 1.0, got 2.0"),
        (lambda: phenotype.generate_request({"skin_tone": math.nan}, 0, None), r"factors\['skin_tone'\] must be a finite number, got nan"),
        (lambda: phenotype.generate_request({1: 0.5}, 0, None), r"factors has a key that is not a string: int 1"),
        (lambda: phenotype.generate_request([0.5], 0, None), r"factors must be a dict \{factor: value in \[0, 1\]\}"),
        (lambda: phenotype.generate_request(None, -1, None), r"seed must be between 0 and 18446744073709551615, got -1"),
        (lambda: phenotype.generate_request(None, 2**64, None), r"seed must be between 0 and 18446744073709551615"),
        (lambda: phenotype.generate_request(None, 3.0, None), r"seed must be an integer, got float 3.0"),
        (lambda: phenotype.generate_request(None, 0, 7), r"model must be a string, got int 7"),
        (lambda: phenotype.interpolate_request(FACE, "hair_colour", 0.5, None), r"values must be a list of values in \[0, 1\], e.g. \[0.0, 0.5, 1.0\], got float"),
        (lambda: phenotype.interpolate_request(FACE, "hair_colour", [], None), r"values is empty: give at least one value in \[0, 1\]"),
        (lambda: phenotype.interpolate_request(FACE, "hair_colour", [0.5, math.nan], None), r"values\[1\] must be a finite number, got nan"),
        (lambda: phenotype.interpolate_request(FACE, "hair_colour", [0.5, 1.01], None), r"values\[1\] must be between 0.0 and 1.0, got 1.01"),
        (lambda: phenotype.interpolate_request(FACE, None, [0.5], None), r"attribute must be a string, got NoneType"),
    ],
)
def test_bad_arguments_are_refused_before_sending(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(sdk.InvalidArgument, match=message):
        call()


# -- replies ------------------------------------------------------------------------------------


def test_an_edit_reply_becomes_an_image_and_its_report() -> None:
    report = phenotype_pb2.EditReport(
        target={"skin_tone": 0.8}, achieved={"skin_tone": 0.74}, drift={"hair_colour": 0.01, "nose_width": -0.02},
        identity_similarity=0.93, pixel_change_outside=0.004, pixel_change_inside=0.12, before={"skin_tone": 0.3, "hair_colour": 0.5},
    )  # fmt: skip
    edited, parsed = phenotype.parse_edited(round_trip(phenotype_pb2.EditResponse(image=raw(FACE), report=report, model="configfaces-64")))
    assert edited.dtype == np.uint8 and edited.shape == (32, 32, 3)
    np.testing.assert_array_equal(edited, FACE)
    assert parsed == phenotype.EditReport(
        target={"skin_tone": 0.8}, achieved={"skin_tone": 0.74}, drift={"hair_colour": 0.01, "nose_width": -0.02},
        identity_similarity=0.93, pixel_change_outside=0.004, pixel_change_inside=0.12, before={"skin_tone": 0.3, "hair_colour": 0.5},
        model="configfaces-64",
    )  # fmt: skip
    assert parsed.error == pytest.approx({"skin_tone": -0.06})


def test_a_reply_with_a_non_finite_number_or_a_broken_image_is_refused() -> None:
    nan_report = phenotype_pb2.EditResponse(image=raw(FACE), report=phenotype_pb2.EditReport(drift={"eye_size": math.nan}))
    with pytest.raises(sdk.InvalidArgument, match=r"report.drift\['eye_size'\] is not finite"):
        phenotype.parse_edited(nan_report)
    short = phenotype_pb2.Image(raw=phenotype_pb2.RawImage(height=32, width=32, channels=3, data=FACE.tobytes()[:-1]))
    with pytest.raises(sdk.InvalidArgument, match=r"images\[1\].raw.data has 3071 bytes"):
        phenotype.parse_interpolated(phenotype_pb2.InterpolateResponse(images=[raw(FACE), short]), phenotype_pb2.InterpolateRequest(values=[0.0, 1.0]))


def test_an_encode_reply_becomes_an_encoded_face() -> None:
    latent = np.arange(10, dtype=np.float32) / 10
    reply = phenotype_pb2.EncodeResponse(
        latent=latent.tolist(), attributes={"skin_tone": 0.4}, reconstruction=raw(FACE), reconstruction_error=0.05, model="m",
        latent_layout={"skin_tone": phenotype_pb2.LatentSlice(start=0, stop=2), "identity": phenotype_pb2.LatentSlice(start=2, stop=10)},
    )  # fmt: skip
    face = phenotype.parse_encoded(round_trip(reply))
    assert face.latent.dtype == np.float32
    np.testing.assert_array_equal(face.latent, latent)
    np.testing.assert_array_equal(face.slice("identity"), latent[2:])
    assert face.latent_layout == {"skin_tone": (0, 2), "identity": (2, 10)}
    assert face.attributes == {"skin_tone": 0.4} and face.reconstruction_error == pytest.approx(0.05) and face.model == "m"
    np.testing.assert_array_equal(face.reconstruction, FACE)
    reply.latent_layout["identity"].stop = 11
    with pytest.raises(sdk.InvalidArgument, match=r"latent_layout\['identity'\] = \[2, 11\) is outside the latent's 10 values"):
        phenotype.parse_encoded(reply)


def test_attribute_and_model_replies() -> None:
    reply = phenotype_pb2.ListAttributesResponse(
        attributes=[phenotype_pb2.AttributeInfo(name="skin_tone", meaning="skin colour", low="Fitzpatrick type I (lightest)",
                                                high="Fitzpatrick type VI (darkest)", min_value=0, max_value=1,
                                                region=phenotype_pb2.Region(top=0.12, left=0.15, bottom=0.98, right=0.85))],
        image_size=64, factors=["skin_tone", "yaw"], model="configfaces-64",
    )  # fmt: skip
    attributes = phenotype.parse_attributes(round_trip(reply))
    assert len(attributes) == 1 and attributes.names == ["skin_tone"] and attributes[0].region == (0.12, 0.15, 0.98, 0.85)
    assert (attributes.image_size, attributes.factors, attributes.model) == (64, ("skin_tone", "yaw"), "configfaces-64")
    assert (attributes[0].min_value, attributes[0].max_value, attributes[0].high) == (0.0, 1.0, "Fitzpatrick type VI (darkest)")
    metrics = struct_pb2.Struct()
    metrics.update({"identity_similarity": 0.9})
    model = phenotype.parse_face_model(
        phenotype_pb2.FaceModel(name="configfaces-64", version=1, default=True, image_size=64, latent_dim=96,
                                companions={"regressor": "configfaces-64-regressor"}, metrics=metrics)
    )  # fmt: skip
    assert model.metrics == {"identity_similarity": 0.9} and model.companions == {"regressor": "configfaces-64-regressor"}
    assert (model.default, model.latent_dim, model.architecture) == (True, 96, {})


def test_sync_and_async_methods_are_twins() -> None:
    sync = {n for n in vars(phenotype.PhenotypeMethods) if not n.startswith("_")}
    asynchronous = {n for n in vars(phenotype.AsyncPhenotypeMethods) if not n.startswith("_")}
    assert sync == asynchronous == {"list_attributes", "list_face_models", "generate_face", "encode_face", "edit_phenotype", "interpolate_phenotype"}
    assert all(getattr(phenotype.AsyncPhenotypeMethods, n).__doc__ for n in asynchronous)


def test_a_generated_face_is_an_array_carrying_its_factors_and_readings() -> None:
    """`generate_face` returns a numpy array that passes anywhere an image goes, with what the
    service measured of it; a copy or a pickled face keeps them; np.asarray is the plain array."""
    reply = phenotype_pb2.GenerateResponse(image=raw(FACE), factors={"skin_tone": 0.25, "pose": 0.5}, attributes={"skin_tone": 0.31}, model="m")
    face = phenotype.parse_generated(round_trip(reply))
    assert isinstance(face, np.ndarray) and np.array_equal(face, FACE) and face.dtype == np.uint8
    assert (face.factors, face.attributes, face.model) == ({"skin_tone": 0.25, "pose": 0.5}, {"skin_tone": 0.31}, "m")
    assert type(np.asarray(face)) is np.ndarray and float(face.mean()) == pytest.approx(FACE.mean())
    for kept in (face.copy(), pickle.loads(pickle.dumps(face))):
        assert isinstance(kept, sdk.Face) and np.array_equal(kept, FACE)
        assert (kept.factors, kept.attributes, kept.model) == (face.factors, face.attributes, face.model)
    assert phenotype.edit_request(face, {"skin_tone": 0.5}, None).image == raw(FACE)  # sent as the image it is
    bad = phenotype_pb2.GenerateResponse(image=raw(FACE), attributes={"skin_tone": math.nan})
    with pytest.raises(sdk.InvalidArgument, match="attributes"):
        phenotype.parse_generated(bad)


def test_an_interpolation_is_a_strip_with_each_images_reading() -> None:
    request = phenotype.interpolate_request(FACE, "hair_colour", [0.0, 0.5, 1.0], None)
    reply = phenotype_pb2.InterpolateResponse(images=[raw(FACE), raw(FACE), raw(FACE)], achieved=[0.1, 0.45, 0.8], model="m")
    strip = phenotype.parse_interpolated(round_trip(reply), request)
    assert len(strip) == 3 and all(np.array_equal(image, FACE) for image in strip) and len(strip[:2]) == 2
    assert (strip.attribute, strip.values, strip.achieved, strip.model) == ("hair_colour", (0.0, 0.5, 1.0), (0.1, 0.45, 0.8), "m")
    again = phenotype.parse_interpolated(round_trip(reply), request)
    assert (strip == again) is False and strip != again and strip == strip  # compared by identity, never raises
    short = phenotype_pb2.InterpolateResponse(images=[raw(FACE)] * 3, achieved=[0.1, 0.45], model="m")
    with pytest.raises(sdk.InvalidArgument, match="3 images and 2 readings for 3 values"):
        phenotype.parse_interpolated(short, request)
