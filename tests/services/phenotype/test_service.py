"""The phenotype service end to end: a real server process on every backend, a real (tiny) model
set trained by the project's own code on procedural faces (16 x 16), the SDK and raw gRPC."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

import sdk
from sdk._proto.facet.v1 import phenotype_pb2, phenotype_pb2_grpc
from services.phenotype.catalog import ATTRIBUTE_NAMES
from services.phenotype.config import PhenotypeConfig
from tests.services.phenotype.fixtures import FACE_MODEL, SECOND_FACE_MODEL, TEST_IMAGE_SIZE

pytestmark = pytest.mark.integration

LIMITS = PhenotypeConfig()


@pytest.fixture(scope="module")
def client(phenotype_server) -> Iterator[sdk.Client]:  # type: ignore[no-untyped-def]
    with sdk.Client(phenotype=phenotype_server.address) as c:
        yield c


@pytest.fixture(scope="module")
def stub(phenotype_server) -> Iterator[phenotype_pb2_grpc.PhenotypeStub]:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(phenotype_server.address) as channel:
        yield phenotype_pb2_grpc.PhenotypeStub(channel)


@pytest.fixture(scope="module")
def face(client: sdk.Client) -> sdk.Face:
    return client.generate_face(seed=3)


def _raw(image: np.ndarray) -> phenotype_pb2.Image:
    height, width, channels = image.shape
    return phenotype_pb2.Image(raw=phenotype_pb2.RawImage(height=height, width=width, channels=channels, data=image.tobytes()))


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _refused(call, request) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as raised:
        call(request, timeout=60)
    return raised.value


def test_attributes_and_models_are_listed(client: sdk.Client) -> None:
    attributes = client.list_attributes()
    assert [a.name for a in attributes.attributes] == list(ATTRIBUTE_NAMES)
    assert attributes.image_size == TEST_IMAGE_SIZE and attributes.model == FACE_MODEL
    assert tuple(attributes.factors[: len(ATTRIBUTE_NAMES)]) == ATTRIBUTE_NAMES and len(attributes.factors) > len(ATTRIBUTE_NAMES)
    skin = attributes.attributes[0]
    assert "Fitzpatrick" in skin.low and "Fitzpatrick" in skin.high
    models = client.list_face_models()
    assert [m.name for m in models] == [FACE_MODEL, SECOND_FACE_MODEL] and models[0].default and not models[1].default
    assert set(models[0].companions) == {"factor_encoder", "image_encoder", "regressor", "identity"}
    assert models[0].metrics["generator"]["stage1_l1"] < models[0].metrics["generator"]["mean_face_l1"]
    evaluation = models[0].metrics["evaluation"]  # stored by the build: how well each attribute's edits act
    assert evaluation["faces"] == 16 and evaluation["targets"] == [0.1, 0.5, 0.9] and set(evaluation["attributes"]) == set(ATTRIBUTE_NAMES)
    assert all(0.0 <= row["within"] <= 1.0 for row in evaluation["attributes"].values())
    skin = evaluation["attributes"]["skin_tone"]
    assert skin["error"] < skin["no_edit_error"]  # editing skin tone beats leaving the face as it is


def test_generate_is_seeded_and_keeps_the_factors_given(client: sdk.Client, face: np.ndarray) -> None:
    assert face.dtype == np.uint8 and face.shape == (TEST_IMAGE_SIZE, TEST_IMAGE_SIZE, 3)
    assert np.array_equal(client.generate_face(seed=3), face)
    assert not np.array_equal(client.generate_face(seed=4), face)
    light = client.generate_face({"skin_tone": 0.0}, seed=3)
    dark = client.generate_face({"skin_tone": 1.0}, seed=3)
    assert light.astype(float).mean() > dark.astype(float).mean()  # darker skin, the same face otherwise


def test_an_edit_moves_its_attribute_the_way_asked_and_reports_the_rest(client: sdk.Client, face: np.ndarray) -> None:
    darker, report = client.edit_phenotype(face, {"skin_tone": 1.0})
    lighter, low = client.edit_phenotype(face, {"skin_tone": 0.0})
    assert darker.shape == face.shape and darker.dtype == np.uint8
    assert report.target == {"skin_tone": 1.0} and low.target == {"skin_tone": 0.0}
    assert report.achieved["skin_tone"] > low.achieved["skin_tone"] + 0.2  # read by the regressor, trained apart
    assert set(report.drift) == set(ATTRIBUTE_NAMES) - {"skin_tone"} and set(report.before) == set(ATTRIBUTE_NAMES)
    assert -1.0 <= report.identity_similarity <= 1.0
    assert 0.0 <= report.pixel_change_outside <= 1.0 and 0.0 <= report.pixel_change_inside <= 1.0
    assert 0.0 <= report.reconstruction_error < 0.2
    assert darker.astype(float).mean() < lighter.astype(float).mean()


def test_a_reference_image_gives_its_attribute(client: sdk.Client, face: np.ndarray) -> None:
    """A reference's target is the regressor's reading of it: a blond reference asks for more
    blond than a dark-haired one of the same seed (a relation, not a tiny model's calibration)."""
    blond = client.generate_face({"hair_colour": 1.0}, seed=8)
    dark = client.generate_face({"hair_colour": 0.0}, seed=8)
    edited, report = client.edit_phenotype(face, {"hair_colour": blond, "nose_width": 0.5})
    _, from_dark = client.edit_phenotype(face, {"hair_colour": dark})
    assert set(report.target) == {"hair_colour", "nose_width"} and report.target["nose_width"] == 0.5
    assert report.target["hair_colour"] > from_dark.target["hair_colour"] + 0.1
    assert edited.shape == face.shape


def test_an_edit_that_changes_nothing_reports_nothing_changed(client: sdk.Client, face: np.ndarray) -> None:
    """Copying an attribute from the image itself: the same latent, so the report is measured
    against the reconstruction — no drift, no pixel change, the same identity, target reached."""
    edited, report = client.edit_phenotype(face, {"hair_colour": face})
    assert report.identity_similarity == pytest.approx(1.0, abs=1e-5)
    assert report.pixel_change_inside == pytest.approx(0.0, abs=1e-6) and report.pixel_change_outside == pytest.approx(0.0, abs=1e-6)
    assert all(abs(d) < 1e-5 for d in report.drift.values())
    assert report.achieved["hair_colour"] == pytest.approx(report.target["hair_colour"], abs=1e-5)


def test_interpolation_is_a_strip_in_order(client: sdk.Client, face: np.ndarray) -> None:
    strip = client.interpolate_phenotype(face, "skin_tone", [0.0, 0.5, 1.0])
    assert len(strip) == 3 and all(s.shape == face.shape for s in strip)
    brightness = [s.astype(float).mean() for s in strip]
    assert brightness[0] > brightness[-1]
    # each image's reading: darker as asked (skin_tone 1 is the darkest end)
    assert strip.values == (0.0, 0.5, 1.0) and strip.attribute == "skin_tone" and strip.model == FACE_MODEL
    assert strip.achieved[0] < strip.achieved[-1]


def test_a_generated_face_carries_the_factors_it_was_made_from_and_its_readings(client: sdk.Client, face: sdk.Face) -> None:
    """The factors drawn from the seed are returned (the same seed, the same factors), the given
    ones are kept, and the regressor's readings follow the factor asked for."""
    factors = client.list_attributes().factors
    assert set(face.factors) == set(factors) and all(0.0 <= v <= 1.0 for v in face.factors.values())
    assert set(face.attributes) == set(ATTRIBUTE_NAMES) and face.model == FACE_MODEL
    assert client.generate_face(seed=3).factors == face.factors
    light = client.generate_face({"skin_tone": 0.0}, seed=3)
    dark = client.generate_face({"skin_tone": 1.0}, seed=3)
    assert light.factors == {**face.factors, "skin_tone": 0.0} and dark.factors["skin_tone"] == 1.0
    assert light.attributes["skin_tone"] < dark.attributes["skin_tone"]


def test_encode_returns_the_latent_its_layout_and_a_reconstruction(client: sdk.Client, face: np.ndarray) -> None:
    encoded = client.encode_face(face)
    stops = [stop for _, stop in encoded.latent_layout.values()]
    assert encoded.latent.shape == (max(stops),) and list(encoded.latent_layout)[: len(ATTRIBUTE_NAMES)] == list(ATTRIBUTE_NAMES)
    assert encoded.reconstruction.shape == face.shape and set(encoded.attributes) == set(ATTRIBUTE_NAMES)
    assert encoded.reconstruction_error < 0.2


def test_a_png_and_a_larger_photo_are_read(client: sdk.Client, stub: phenotype_pb2_grpc.PhenotypeStub, face: np.ndarray) -> None:
    reply = stub.Encode(phenotype_pb2.EncodeRequest(image=phenotype_pb2.Image(png=_png(face))), timeout=60)
    assert reply.reconstruction.raw.height == TEST_IMAGE_SIZE
    big = np.kron(face, np.ones((8, 6, 1), dtype=np.uint8))  # 128 x 96: centre-cropped, then resized
    edited, _ = client.edit_phenotype(big, {"lip_fullness": 0.9})
    assert edited.shape == (TEST_IMAGE_SIZE, TEST_IMAGE_SIZE, 3)


# -- bad input: every RPC, raw gRPC (the service's own checks, not the SDK's) -------------------


def _edit(stub: phenotype_pb2_grpc.PhenotypeStub, face: np.ndarray, **edits: phenotype_pb2.EditTarget) -> grpc.RpcError:
    return _refused(stub.Edit, phenotype_pb2.EditRequest(image=_raw(face), edits=edits))


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        ({}, "edits is empty"),
        ({"nope": phenotype_pb2.EditTarget(value=0.5)}, "'nope' is not an attribute; attributes: skin_tone"),
        ({"skin_tone": phenotype_pb2.EditTarget(value=1.5)}, "edits['skin_tone'].value must be in [0, 1]"),
        ({"skin_tone": phenotype_pb2.EditTarget(value=-0.1)}, "must be in [0, 1]"),
        ({"skin_tone": phenotype_pb2.EditTarget(value=math.nan)}, "must be a finite number in [0, 1], got nan"),
        ({"skin_tone": phenotype_pb2.EditTarget(value=math.inf)}, "must be a finite number"),
        ({"skin_tone": phenotype_pb2.EditTarget()}, "edits['skin_tone'] has no target"),
        ({"hair_colour": phenotype_pb2.EditTarget(reference=phenotype_pb2.Image(png=b"not a png"))}, "edits['hair_colour'].reference"),
    ],
)
def test_bad_edits_are_invalid_argument(stub: phenotype_pb2_grpc.PhenotypeStub, face: np.ndarray, edits: dict, message: str) -> None:  # type: ignore[type-arg]
    error = _edit(stub, face, **edits)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and message in error.details(), error.details()


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (None, "image is required"),
        (phenotype_pb2.Image(png=b"GIF89a" + bytes(40)), "image"),
        (phenotype_pb2.Image(png=b""), "image"),
        (phenotype_pb2.Image(raw=phenotype_pb2.RawImage(height=16, width=16, channels=3, data=bytes(10))), "image"),
        (phenotype_pb2.Image(raw=phenotype_pb2.RawImage(height=8, width=8, channels=3, data=bytes(8 * 8 * 3))), "min_image_side"),
        (phenotype_pb2.Image(raw=phenotype_pb2.RawImage(height=16, width=16, channels=2, data=bytes(16 * 16 * 2))), "channels"),
    ],
)
def test_bad_images_are_invalid_argument_on_every_rpc_that_takes_one(
    stub: phenotype_pb2_grpc.PhenotypeStub, image: phenotype_pb2.Image | None, message: str
) -> None:
    requests = [
        (stub.Encode, phenotype_pb2.EncodeRequest(image=image)),
        (stub.Edit, phenotype_pb2.EditRequest(image=image, edits={"skin_tone": phenotype_pb2.EditTarget(value=0.5)})),
        (stub.Interpolate, phenotype_pb2.InterpolateRequest(image=image, attribute="skin_tone", values=[0.5])),
    ]
    for call, request in requests:
        error = _refused(call, request)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and message in error.details(), error.details()
        assert "Traceback" not in error.details()


def test_a_truncated_png_is_invalid_argument(stub: phenotype_pb2_grpc.PhenotypeStub, face: np.ndarray) -> None:
    data = _png(face)
    error = _refused(stub.Encode, phenotype_pb2.EncodeRequest(image=phenotype_pb2.Image(png=data[: len(data) // 2])))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "image" in error.details()


def test_bad_interpolations_and_factors_are_invalid_argument(stub: phenotype_pb2_grpc.PhenotypeStub, face: np.ndarray) -> None:
    too_many = [0.5] * (LIMITS.max_interpolation_values + 1)
    cases = [
        (stub.Interpolate, phenotype_pb2.InterpolateRequest(image=_raw(face), attribute="skin_tone", values=[]), "values has 0 entries"),
        (stub.Interpolate, phenotype_pb2.InterpolateRequest(image=_raw(face), attribute="skin_tone", values=too_many), "max_interpolation_values"),
        (stub.Interpolate, phenotype_pb2.InterpolateRequest(image=_raw(face), attribute="eye_colour", values=[0.5]), "'eye_colour' is not an attribute"),
        (stub.Interpolate, phenotype_pb2.InterpolateRequest(image=_raw(face), attribute="skin_tone", values=[2.0]), "values[0] must be in [0, 1]"),
        (stub.Generate, phenotype_pb2.GenerateRequest(factors={"height": 0.5}), "'height' is not a factor"),
        (stub.Generate, phenotype_pb2.GenerateRequest(factors={"skin_tone": math.nan}), "factors['skin_tone'] must be a finite number"),
    ]  # fmt: skip
    for call, request, message in cases:
        error = _refused(call, request)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and message in error.details(), error.details()


def test_an_unknown_model_is_not_found_on_every_rpc(stub: phenotype_pb2_grpc.PhenotypeStub, face: np.ndarray) -> None:
    edits = {"skin_tone": phenotype_pb2.EditTarget(value=0.5)}
    for call, request in [
        (stub.ListAttributes, phenotype_pb2.ListAttributesRequest(model="nope")),
        (stub.Generate, phenotype_pb2.GenerateRequest(model="nope")),
        (stub.Encode, phenotype_pb2.EncodeRequest(image=_raw(face), model="nope")),
        (stub.Edit, phenotype_pb2.EditRequest(image=_raw(face), edits=edits, model="nope")),
        (stub.Interpolate, phenotype_pb2.InterpolateRequest(image=_raw(face), attribute="skin_tone", values=[0.5], model="nope")),
    ]:
        error = _refused(call, request)
        assert error.code() == grpc.StatusCode.NOT_FOUND and f"available: {FACE_MODEL}, {SECOND_FACE_MODEL}" in error.details()


def test_the_second_model_is_served_by_name(client: sdk.Client, face: np.ndarray) -> None:
    assert np.array_equal(client.generate_face(seed=3, model=SECOND_FACE_MODEL), face)  # the same weights


def test_the_demo_prints_reports_and_writes_the_three_grids(client: sdk.Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`facet up --demo`'s walk-through: generated face, the astronaut, eight real LFW faces above
    their reconstructions (scikit-image's data, installed with the project)."""
    from sdk._images import decode_png
    from services.phenotype.demo import run_demo

    written = run_demo(client, tmp_path)
    assert [p.name for p in written] == ["phenotype-generated.png", "phenotype-photo.png", "phenotype-lfw.png"]
    out = capsys.readouterr().out
    assert "skin_tone 0.85 -> read" in out and "identity similarity" in out and "reconstruction errors" in out
    generated, photo, lfw = (decode_png(p.read_bytes()) for p in written)
    side, gap = TEST_IMAGE_SIZE, 2
    assert generated.shape == (3 * side + 2 * gap, 4 * side + 3 * gap, 3)  # 9 faces in rows of 4
    assert photo.shape == (side, 5 * side + 4 * gap, 3)  # reconstruction, edit, a 3-value strip
    assert lfw.shape == (2 * side + gap, 8 * side + 7 * gap, 3)  # 8 real faces above their reconstructions
    top = lfw[:side].astype(int)
    assert (top[..., 0] == top[..., 1]).all() and (top[..., 1] == top[..., 2]).all()  # the grey photographs
    assert top.std() > 10  # real faces, not a blank row
