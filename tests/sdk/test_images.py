"""The SDK's images without Pillow: arrays to `facet.v1.Image` and back, the zlib PNG writer and
reader checked against Pillow's (installed here, so it serves as the independent reference),
`save_grid`'s layout, and each bad image argument's message."""

from __future__ import annotations

import builtins
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import sdk
from sdk import _images

RNG = np.random.default_rng(3)
FACE = RNG.integers(0, 256, (24, 20, 3), dtype=np.uint8)  # height 24, width 20


def pillow_png(array: np.ndarray, mode: str | None = None) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array, mode).save(out, "PNG")
    return out.getvalue()


def pillow_read(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def filtered_png(array: np.ndarray) -> bytes:
    """An 8-bit PNG whose scanlines use the five filter types in turn (RFC 2083 §6), written here
    from the specification's formulas."""
    height, width, channels = array.shape
    pixels = array.reshape(height, width * channels).astype(np.int64)
    lines = []
    for y in range(height):
        kind = y % 5
        line = pixels[y]
        up = pixels[y - 1] if y else np.zeros_like(line)
        left = np.concatenate([np.zeros(channels, np.int64), line[:-channels]])
        upper_left = np.concatenate([np.zeros(channels, np.int64), up[:-channels]])
        if kind == 0:
            out = line
        elif kind == 1:
            out = line - left
        elif kind == 2:
            out = line - up
        elif kind == 3:
            out = line - (left + up) // 2
        else:
            estimate = left + up - upper_left
            pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - upper_left)
            predictor = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upper_left))
            out = line - predictor
        lines.append(bytes([kind]) + (out % 256).astype(np.uint8).tobytes())
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(lines))) + chunk(b"IEND", b"")


# -- arrays and messages --------------------------------------------------------------------------


def test_an_array_travels_raw_and_comes_back_the_same() -> None:
    message = _images.image_message(FACE)
    assert message.WhichOneof("data") == "raw"
    assert (message.raw.height, message.raw.width, message.raw.channels) == (24, 20, 3)
    assert len(message.raw.data) == FACE.nbytes  # no encoding
    back = _images.array_from_message(message)
    assert back.dtype == np.uint8 and back.shape == (24, 20, 3)
    np.testing.assert_array_equal(back, FACE)


def test_grey_is_repeated_and_alpha_dropped() -> None:
    grey = FACE[:, :, 0]
    np.testing.assert_array_equal(_images.array_from_message(_images.image_message(grey)), np.stack([grey] * 3, axis=2))
    np.testing.assert_array_equal(_images.array_from_message(_images.image_message(grey[:, :, None])), np.stack([grey] * 3, axis=2))
    rgba = np.dstack([FACE, np.zeros((24, 20), np.uint8)])
    np.testing.assert_array_equal(_images.array_from_message(_images.image_message(rgba)), FACE)


def test_png_bytes_and_paths_are_sent_as_they_are(tmp_path: Path) -> None:
    data = pillow_png(FACE)
    assert _images.image_message(data).png == data
    path = tmp_path / "face.png"
    path.write_bytes(data)
    assert _images.image_message(path).png == data
    assert _images.image_message(str(path)).png == data
    np.testing.assert_array_equal(_images.image_array(path), FACE)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (FACE.astype(np.float32) / 255, r"image must be a uint8 array \(0..255\), got dtype float32: for values in \[0, 1\] convert with \(np.clip\(image, 0, 1\) \* 255\).round\(\).astype\(np.uint8\)"),
        (FACE.astype(np.uint16) * 257, r"got dtype uint16: for 16-bit values convert with \(image >> 8\).astype\(np.uint8\)"),
        (FACE.astype(np.int64), r"got dtype int64: for values in 0..255 convert with np.clip\(image, 0, 255\).astype\(np.uint8\)"),
        (FACE > 100, r"got dtype bool"),
        (np.zeros((0, 20, 3), np.uint8), r"image is empty \(shape \(0, 20, 3\)\): an image needs at least one pixel"),
        (np.zeros((3, 24, 20), np.uint8), r"image must be channels-last \(H, W, 3\), got shape \(3, 24, 20\), which looks channels-first: use np.transpose\(image, \(1, 2, 0\)\)"),
        (np.zeros((24, 20, 5), np.uint8), r"image must have shape \(H, W, 3\) RGB, \(H, W\) or \(H, W, 1\) grey, \(H, W, 2\) grey\+alpha or \(H, W, 4\) RGBA, got \(24, 20, 5\)"),
        (np.zeros((2, 24, 20, 3), np.uint8), r"got \(2, 24, 20, 3\)"),
        (b"GIF89a...", r"image \(bytes\) is not a PNG file \(it looks like GIF\): it does not start with the PNG signature; convert it to PNG first"),
        (b"\xff\xd8\xff\xe0JFIF", r"image \(bytes\) is not a PNG file \(it looks like JPEG\)"),
        (b"plain text", r"image \(bytes\) is not a PNG file: it does not start"),
        ([[1, 2], [3, 4]], r"image must be a numpy uint8 array \(H, W, 3\), PNG bytes or a path to a PNG file, got list"),
    ],
)
def test_bad_images_are_refused_before_sending(image: object, message: str) -> None:
    with pytest.raises(sdk.InvalidArgument, match=message) as caught:
        _images.image_message(image)
    assert caught.value.request_id is None  # nothing was sent


def test_a_path_with_no_png_is_refused(tmp_path: Path) -> None:
    with pytest.raises(sdk.InvalidArgument, match=r"image: cannot read '.*missing.png': No such file or directory"):
        _images.image_message(tmp_path / "missing.png")
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    with pytest.raises(sdk.InvalidArgument, match=r"image \(.*notes.png\) is not a PNG file"):
        _images.image_message(text)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"height": 2, "width": 2, "channels": 3, "data": bytes(11)}, r"image.raw.data has 11 bytes; height x width x channels = 2 x 2 x 3 = 12"),
        ({"height": 2, "width": 2, "channels": 2, "data": bytes(8)}, r"image.raw.channels must be 1, 3 or 4, got 2"),
        ({"height": 0, "width": 2, "channels": 3, "data": b""}, r"image.raw has no pixels \(0 x 2\)"),
    ],
)
def test_a_bad_reply_image_is_refused(raw: dict[str, object], message: str) -> None:
    with pytest.raises(sdk.InvalidArgument, match=message):
        _images.array_from_message(_images.phenotype_pb2.Image(raw=_images.phenotype_pb2.RawImage(**raw)))  # type: ignore[arg-type]
    with pytest.raises(sdk.InvalidArgument, match=r"image is unset"):
        _images.array_from_message(_images.phenotype_pb2.Image())


# -- PNG ------------------------------------------------------------------------------------------


def test_written_pngs_read_back_with_pillow() -> None:
    data = _images.encode_png(FACE)
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "RGB", (20, 24))
        np.testing.assert_array_equal(np.asarray(image), FACE)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_every_filter_type_is_read_as_pillow_reads_it(channels: int) -> None:
    array = np.cumsum(RNG.integers(0, 40, (23, 17, channels)), axis=1).astype(np.uint8)  # smooth rows, wrapping
    data = filtered_png(array)
    np.testing.assert_array_equal(_images.read_png(data), pillow_read(data))


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA"])
def test_pillow_written_pngs_read_as_pillow_reads_them(mode: str) -> None:
    source = {"RGB": FACE, "RGBA": np.dstack([FACE, FACE[:, :, :1]]), "L": FACE[:, :, 0], "LA": FACE[:, :, :2]}[mode]
    data = pillow_png(source, mode)
    np.testing.assert_array_equal(_images.read_png(data), pillow_read(data))


def test_other_pngs_need_pillow_and_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    palette = Image.fromarray(FACE).quantize(colors=8)
    out = io.BytesIO()
    palette.save(out, "PNG")
    data = out.getvalue()
    np.testing.assert_array_equal(_images.decode_png(data), np.asarray(palette.convert("RGB")))  # with Pillow
    real_import = builtins.__import__

    def without_pillow(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "PIL" or name.startswith("PIL."):
            raise ImportError("No module named 'PIL'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_pillow)
    with pytest.raises(ImportError, match=r"^png is a [1-8]-bit palette PNG, which needs Pillow to read: pip install pillow$"):
        _images.decode_png(data)
    np.testing.assert_array_equal(_images.decode_png(pillow_png(FACE)), FACE)  # the common kind still reads


def test_truncated_and_corrupt_pngs_are_refused() -> None:
    data = pillow_png(FACE)
    with pytest.raises(sdk.InvalidArgument, match=r"png is a truncated PNG"):
        _images.read_png(data[: len(data) - 30])
    broken = bytearray(data)
    broken[data.index(b"IDAT") + 10] ^= 0xFF
    with pytest.raises(sdk.InvalidArgument, match=r"png is a corrupt PNG: the CRC of its IDAT chunk does not match"):
        _images.read_png(bytes(broken))
    with pytest.raises(sdk.InvalidArgument, match=r"png is not a PNG file"):
        _images.read_png(b"\xff\xd8\xff\xe0 a JPEG")


# -- save_grid ------------------------------------------------------------------------------------


def test_save_grid_lays_images_out_row_by_row(tmp_path: Path) -> None:
    faces = [np.full((24, 20, 3), 40 * i, np.uint8) for i in range(5)]
    path = _images.save_grid(faces, tmp_path / "grid.png", columns=3, gap=2)
    with Image.open(path) as image:
        grid = np.asarray(image.convert("RGB"))
    assert grid.shape == (2 * 24 + 2, 3 * 20 + 2 * 2, 3)  # 2 rows, 3 columns, 2-pixel gaps
    np.testing.assert_array_equal(grid[:24, 22:42], faces[1])
    np.testing.assert_array_equal(grid[26:, 22:42], faces[4])
    assert (grid[24:26] == 255).all() and (grid[26:, 44:] == 255).all()  # gaps and the empty cell


def test_save_grid_takes_every_kind_of_image_and_centres_smaller_ones(tmp_path: Path) -> None:
    png_path = tmp_path / "face.png"
    png_path.write_bytes(pillow_png(FACE))
    small = np.zeros((10, 10), np.uint8)
    path = _images.save_grid([FACE, pillow_png(FACE), png_path, small], tmp_path / "strip.png", gap=0, background=128)
    grid = pillow_read(path.read_bytes())
    assert grid.shape == (24, 4 * 20, 3)  # one row by default
    for column in range(3):
        np.testing.assert_array_equal(grid[:, 20 * column : 20 * (column + 1)], FACE)
    np.testing.assert_array_equal(grid[7:17, 65:75], 0)  # the 10 x 10 image, centred
    assert (grid[:7, 60:] == 128).all()


@pytest.mark.parametrize(
    ("images", "options", "message"),
    [
        ([], {}, r"images is empty: save_grid needs at least one image"),
        (FACE, {}, r"images must be a list of images, not one image: pass \[image\]"),
        ([FACE, FACE.astype(np.float64)], {}, r"images\[1\] must be a uint8 array"),
        ([FACE], {"columns": 0}, r"columns must be at least 1, got 0"),
        ([FACE], {"gap": -1}, r"gap must be at least 0, got -1"),
        ([FACE], {"background": 256}, r"background must be between 0 and 255, got 256"),
    ],
)
def test_save_grid_refuses_bad_arguments(tmp_path: Path, images: object, options: dict[str, object], message: str) -> None:
    with pytest.raises(sdk.InvalidArgument, match=message):
        _images.save_grid(images, tmp_path / "grid.png", **options)  # type: ignore[arg-type]
    assert not (tmp_path / "grid.png").exists()


def test_the_png_reader_refuses_a_decompression_bomb_from_its_header() -> None:
    """A 69-byte file claiming 40000 x 40000 pixels, and a small header over a long zlib stream:
    refused with sdk.InvalidArgument before anything large is allocated."""
    from sdk._errors import InvalidArgument
    from sdk._images import MAX_PNG_PIXELS, decode_png

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    def png(width: int, height: int, idat: bytes) -> bytes:
        header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")

    with pytest.raises(InvalidArgument, match=f"40000 x 40000 pixels: more than the SDK decodes \\({MAX_PNG_PIXELS:,} pixels\\)"):
        decode_png(png(40000, 40000, b""))
    with pytest.raises(InvalidArgument, match="inflates to more than its 16 x 16 header says"):
        decode_png(png(16, 16, zlib.compress(bytes(16 * 49 * 1000))))


def test_a_number_in_a_string_is_read_as_a_path_and_the_message_says_so() -> None:
    from sdk._errors import InvalidArgument

    with pytest.raises(InvalidArgument, match=r"cannot read '0.5'.*a value must be a number, e.g. 0.5 rather than '0.5'"):
        _images.image_message("0.5", "edits['skin_tone']")
