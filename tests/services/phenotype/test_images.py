"""The phenotype service's images: every bad image a caller can send is INVALID_ARGUMENT naming the
field and the limit (a decompression bomb refused before anything is decompressed), every PNG
kind is converted to 8-bit RGB as documented, and pixels survive the trip to the models and back.
PNG files here are written by Pillow (or by hand, byte by byte, per RFC 2083), not by the code
under test."""

from __future__ import annotations

import io
import re
import struct
import zlib

import grpc
import numpy as np
import pytest
from PIL import Image

from sdk._proto.facet.v1 import phenotype_pb2
from services.phenotype import images
from services.phenotype.config import PhenotypeConfig
from services.runtime.errors import InternalError, InvalidArgument

LIMITS = PhenotypeConfig()
RNG = np.random.default_rng(7)
FACE = RNG.integers(0, 256, (40, 30, 3), dtype=np.uint8)  # height 40, width 30


def pillow_png(array: np.ndarray, mode: str | None = None, **options: object) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array, mode).save(out, "PNG", **options)
    return out.getvalue()


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def hand_png(width: int, height: int, depth: int, colour: int, scanlines: bytes) -> bytes:
    """A PNG written byte by byte (RFC 2083 §3.1, §4.1.1): signature, IHDR, one IDAT, IEND."""
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", scanlines) + chunk(b"IEND", b"")


def png_message(data: bytes) -> phenotype_pb2.Image:
    return phenotype_pb2.Image(png=data)


def raw_message(array: np.ndarray, channels: int | None = None) -> phenotype_pb2.Image:
    height, width = array.shape[:2]
    channels = channels if channels is not None else (array.shape[2] if array.ndim == 3 else 1)
    return phenotype_pb2.Image(raw=phenotype_pb2.RawImage(height=height, width=width, channels=channels, data=array.tobytes()))


def refused(message: phenotype_pb2.Image, match: str, limits: PhenotypeConfig = LIMITS, field: str = "image") -> InvalidArgument:
    """The status and the message (without the "INVALID_ARGUMENT: " that str() puts first)."""
    with pytest.raises(InvalidArgument) as caught:
        images.decode_image(message, field, limits)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert re.search(match, caught.value.message), caught.value.message
    return caught.value


# -- bad input ------------------------------------------------------------------------------------


def test_bytes_that_are_not_an_image_are_refused() -> None:
    refused(png_message(b"definitely not an image"), r"^image.png is not a PNG file: only PNG is read; convert it to PNG or send raw pixels$")


def test_another_image_format_is_named() -> None:
    out = io.BytesIO()
    Image.fromarray(FACE).save(out, "JPEG")
    refused(png_message(out.getvalue()), r"image.png is not a PNG file \(it looks like JPEG\): only PNG is read")


def test_a_truncated_png_is_refused() -> None:
    data = pillow_png(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    refused(png_message(data[: len(data) // 2]), r"^image.png is a truncated or corrupt PNG: ")
    refused(png_message(data[:20]), r"image.png is a truncated or corrupt PNG: it has no complete IHDR header \(the file has 20 bytes\)")


def test_a_corrupt_png_is_refused() -> None:
    data = bytearray(pillow_png(FACE))
    data[-20] ^= 0xFF  # inside the IDAT chunk: its CRC no longer matches
    refused(png_message(bytes(data)), r"^image.png is a corrupt PNG: chunk 2 \('IDAT'\) fails its CRC check")


@pytest.mark.parametrize("kind", [b"IDAT", b"tEXt"])
def test_a_png_whose_chunk_crc_is_wrong_is_refused_though_pillow_would_decode_it(kind: bytes) -> None:
    """Damage only the stored CRC: the pixels still inflate, and Pillow (which does not check IDAT
    or ancillary CRCs) would return an image; the service refuses it as damaged."""
    data = pillow_png(FACE)
    end = data.rindex(b"IEND") - 4
    data = data[:end] + chunk(b"tEXt", b"Comment\x00a face") + data[end:]
    start = data.index(kind) - 4
    (length,) = struct.unpack(">I", data[start : start + 4])
    crc_at = start + 8 + length
    damaged = data[:crc_at] + bytes([data[crc_at] ^ 0x01]) + data[crc_at + 1 :]
    with Image.open(io.BytesIO(damaged)) as image:
        image.load()  # Pillow reads it without complaint
    refused(png_message(damaged), rf"^image.png is a corrupt PNG: chunk \d \('{kind.decode()}'\) fails its CRC check, so its bytes were damaged$")


def test_a_decompression_bomb_is_refused_from_its_header_before_anything_is_decompressed(monkeypatch: pytest.MonkeyPatch) -> None:
    # 4,096 x 4,096 grey: ~16 KiB of PNG that inflates to 16 MiB (48 MiB as RGB); the header
    # could as well say 65,535 x 65,535 (12 GiB as RGB)
    side = 4096
    squeezer = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte 0 and black pixels
    body = b"".join(squeezer.compress(row) for _ in range(side)) + squeezer.flush()
    bomb = hand_png(side, side, 8, 0, body)
    assert len(bomb) < 50_000 < side * side

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("Pillow was asked to open the bomb")

    monkeypatch.setattr(Image, "open", no_decoding)
    refused(
        png_message(bomb),
        r"^image.png is 4096 x 4096 pixels \(height x width\); each side must be between "
        r"phenotype.min_image_side \(16\) and phenotype.max_image_side \(2048\)$",
    )


def test_a_png_of_a_million_tiny_chunks_is_refused_from_a_scan_before_pillow_walks_it(monkeypatch: pytest.MonkeyPatch) -> None:
    data = pillow_png(FACE)
    end = data.rindex(b"IEND") - 4
    flood = data[:end] + chunk(b"tEXt", b"a") * (images.MAX_PNG_CHUNKS + 1) + data[end:]  # ~1.1 MB: under the byte limit
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("Pillow was called on the chunk flood"))
    refused(png_message(flood), rf"image.png has more than {images.MAX_PNG_CHUNKS} PNG chunks")


def test_pillow_messages_carry_no_object_addresses() -> None:
    error = refused(png_message(pillow_png(FACE)[:60]), r"truncated or corrupt PNG")
    assert " at 0x" not in error.message and "BytesIO" not in error.message
    unknown_colour_type = hand_png(32, 32, 8, 7, zlib.compress(bytes(33 * 32)))
    refused(png_message(unknown_colour_type), r"^image.png is a truncated or corrupt PNG: cannot identify image file$")


def test_a_png_cut_before_its_iend_chunk_is_refused_though_its_pixels_are_complete() -> None:
    data = pillow_png(FACE)
    cut = data[: data.rindex(b"IEND") - 4]  # every pixel there, the end marker gone
    refused(png_message(cut), rf"^image.png is a truncated or corrupt PNG: it ends before its IEND chunk \(the file has {len(cut)} bytes\)$")
    assert images.decode_image(png_message(data + b"trailing bytes"), "image", LIMITS).shape == FACE.shape  # bytes after IEND are ignored


@pytest.mark.parametrize(
    ("colours", "default_image", "message"),
    [
        ((0, 255), False, r"^image.png is an animated PNG of 2 frames: send one still image$"),
        # the first image is a default image outside the animation (APNG's IDAT before any fcTL):
        # counted apart, not as one more animation frame
        ((0, 128, 255), True, r"^image.png is an animated PNG of 2 frames and a separate default image \(which viewers without APNG support show\): send one still image$"),
        ((0, 255), True, r"^image.png is an animated PNG of 1 frame and a separate default image .*: send one still image$"),
    ],
)
def test_an_animated_png_is_refused_counting_its_animation_frames(colours: tuple[int, ...], default_image: bool, message: str) -> None:
    frames = [Image.fromarray(np.full((32, 32, 3), c, np.uint8)) for c in colours]
    out = io.BytesIO()
    frames[0].save(out, "PNG", save_all=True, append_images=frames[1:], default_image=default_image)
    assert out.getvalue().count(b"fcTL") == len(colours) - default_image  # the animation's frames, as written
    refused(png_message(out.getvalue()), message)


def test_an_unset_image_is_refused_naming_the_field() -> None:
    refused(phenotype_pb2.Image(), r"^edits\['nose_width'\].reference is required: set edits\['nose_width'\].reference.png", field="edits['nose_width'].reference")


@pytest.mark.parametrize("channels", [0, 2, 5])
def test_raw_channels_other_than_1_3_4_are_refused(channels: int) -> None:
    pixels = np.zeros((20, 20, max(channels, 1)), np.uint8)
    refused(raw_message(pixels, channels), rf"^image.raw.channels must be 3 \(RGB\), 1 \(grey\) or 4 \(RGBA\), got {channels}$")


def test_raw_bytes_of_another_dtype_are_refused_by_their_length() -> None:
    as_float = (FACE / 255.0).astype(np.float32)  # 4 bytes per sample
    refused(
        phenotype_pb2.Image(raw=phenotype_pb2.RawImage(height=40, width=30, channels=3, data=as_float.tobytes())),
        r"image.raw.data has 14400 bytes; height x width x channels = 40 x 30 x 3 = 3600 \(one uint8 per sample",
    )


def test_too_small_is_refused_naming_the_limit() -> None:
    small = np.zeros((8, 40, 3), np.uint8)
    match = r"is 8 x 40 pixels \(height x width\); each side must be between phenotype.min_image_side \(16\) and phenotype.max_image_side \(2048\)"
    refused(raw_message(small), "^image.raw " + match)
    refused(png_message(pillow_png(small)), "^image.png " + match)


def test_too_large_is_refused_naming_the_limits_in_force() -> None:
    limits = PhenotypeConfig(max_image_side=32, max_image_bytes=2000)
    wide = np.zeros((20, 33), np.uint8)  # 660 bytes raw
    refused(raw_message(wide), r"^image.raw is 20 x 33 pixels .* phenotype.max_image_side \(32\)$", limits)
    refused(png_message(pillow_png(wide)), r"^image.png is 20 x 33 pixels .* phenotype.max_image_side \(32\)$", limits)
    noisy = RNG.integers(0, 256, (30, 30, 3), dtype=np.uint8)  # 2,700 bytes raw, more as PNG
    refused(raw_message(noisy), r"^image.raw.data has 2700 bytes; the limit is phenotype.max_image_bytes \(2000\)$", limits)
    refused(png_message(pillow_png(noisy)), r"^image.png has \d+ bytes; the limit is phenotype.max_image_bytes \(2000\)$", limits)


# -- conversions ----------------------------------------------------------------------------------


def test_rgb_png_and_raw_decode_to_the_same_pixels() -> None:
    for message in (raw_message(FACE), png_message(pillow_png(FACE)), png_message(pillow_png(FACE, optimize=True))):
        decoded = images.decode_image(message, "image", LIMITS)
        assert decoded.dtype == np.uint8 and decoded.shape == (40, 30, 3)
        np.testing.assert_array_equal(decoded, FACE)


def test_grey_is_repeated_and_alpha_is_dropped() -> None:
    grey = FACE[:, :, 0]
    alpha = np.full((40, 30), 7, np.uint8)
    rgba = np.dstack([FACE, alpha])
    expected_grey = np.stack([grey] * 3, axis=2)
    for message, expected in (
        (png_message(pillow_png(grey, "L")), expected_grey),
        (raw_message(grey), expected_grey),
        (png_message(pillow_png(np.dstack([grey, alpha]), "LA")), expected_grey),
        (png_message(pillow_png(rgba, "RGBA")), FACE),
        (raw_message(rgba), FACE),
    ):
        np.testing.assert_array_equal(images.decode_image(message, "image", LIMITS), expected)


def test_palette_png_is_converted_to_its_colours() -> None:
    palette_image = Image.fromarray(FACE).quantize(colors=16)
    out = io.BytesIO()
    palette_image.save(out, "PNG")
    expected = np.asarray(palette_image.convert("RGB"))
    np.testing.assert_array_equal(images.decode_image(png_message(out.getvalue()), "image", LIMITS), expected)


def test_16_bit_pngs_keep_the_high_byte() -> None:
    # RGB, 16 bits per sample, every sample 0x12AB (RFC 2083 §4.1.1: colour type 2, depth 16)
    width = height = 16
    scanline = b"\x00" + np.full(width * 3, 0x12AB, ">u2").tobytes()
    rgb16 = hand_png(width, height, 16, 2, zlib.compress(scanline * height))
    np.testing.assert_array_equal(images.decode_image(png_message(rgb16), "image", LIMITS), np.full((16, 16, 3), 0x12, np.uint8))
    grey16 = pillow_png(np.full((16, 16), 40000, np.uint16))  # Pillow writes mode I;16 as 16-bit grey
    np.testing.assert_array_equal(images.decode_image(png_message(grey16), "image", LIMITS), np.full((16, 16, 3), 40000 >> 8, np.uint8))


def test_an_interlaced_png_decodes() -> None:
    np.testing.assert_array_equal(images.decode_image(png_message(interlaced_png(FACE)), "image", LIMITS), FACE)


def interlaced_png(array: np.ndarray) -> bytes:
    """Adam7 (RFC 2083 §2.6), filter 0 everywhere, 8-bit RGB."""
    height, width, _ = array.shape
    passes = ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1))
    body = b""
    for y0, x0, dy, dx in passes:
        sub = array[y0::dy, x0::dx]
        if sub.size:
            body += b"".join(b"\x00" + row.tobytes() for row in sub)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(body)) + chunk(b"IEND", b"")


# -- to and from the models -----------------------------------------------------------------------


def test_an_image_of_the_model_size_round_trips_exactly() -> None:
    face = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    tensor = images.to_model_input(face, 64)
    assert tensor.dtype == np.float32 and tensor.shape == (1, 3, 64, 64)
    assert 0.0 <= tensor.min() and tensor.max() <= 1.0
    np.testing.assert_array_equal(tensor[0, 1], face[:, :, 1] / np.float32(255))  # channels first
    np.testing.assert_array_equal(images.from_model_output(tensor)[0], face)


def test_a_non_square_image_is_centre_cropped_then_resized() -> None:
    # 32 high, 48 wide: 8 red columns left, 8 blue right, green between; the centre square is green
    image = np.zeros((32, 48, 3), np.uint8)
    image[:, :8] = (255, 0, 0)
    image[:, 40:] = (0, 0, 255)
    image[:, 8:40] = (0, 255, 0)
    np.testing.assert_array_equal(images.to_model_input(image, 32)[0].transpose(1, 2, 0), np.full((32, 32, 3), (0, 1, 0), np.float32))
    tall = np.transpose(image, (1, 0, 2))  # 48 high, 32 wide: the same after cropping rows
    resized = images.to_model_input(tall, 16)
    assert resized.shape == (1, 3, 16, 16)
    np.testing.assert_allclose(resized[0].transpose(1, 2, 0), np.full((16, 16, 3), (0, 1, 0), np.float32), atol=1 / 255)


def test_model_output_is_clipped_and_rounded_and_never_non_finite() -> None:
    output = np.array([-0.5, 0.0, 0.5, 1.0, 2.0, 0.002], np.float32).reshape(1, 1, 2, 3).repeat(3, axis=1)
    pixels = images.from_model_output(output)
    assert pixels.shape == (1, 2, 3, 3) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels[0, :, :, 0], [[0, 0, 128], [255, 255, 1]])
    output[0, 0, 0, 0] = np.nan
    with pytest.raises(InternalError, match="non-finite"):
        images.from_model_output(output)


def test_reply_images_are_raw_and_png_encoding_is_lossless() -> None:
    message = images.image_message(FACE)
    assert message.WhichOneof("data") == "raw"
    assert (message.raw.height, message.raw.width, message.raw.channels) == (40, 30, 3)
    np.testing.assert_array_equal(images.decode_image(message, "image", LIMITS), FACE)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(images.encode_png(FACE)))), FACE)
