"""Face images between numpy, PNG files and the `facet.v1.Image` message, without Pillow.

What the phenotype methods take as an image, and what they return:

- **numpy arrays** `uint8` of shape `(H, W, 3)` (RGB); `(H, W)` or `(H, W, 1)` grey is repeated
  into the three channels and `(H, W, 4)` RGBA loses its alpha channel (not composited, as
  Pillow's `convert("RGB")` does). Arrays travel as raw pixels (`RawImage`): no encoding cost.
- **PNG bytes**, or a **path** (`str` / `pathlib.Path`) to a PNG file: sent as the file's bytes
  (the service decodes them; it reads PNG only).
- Results are numpy arrays `uint8 (H, W, 3)`.

PNG is written here with zlib alone and read here for the common case (8-bit, non-interlaced
grey, grey+alpha, RGB or RGBA: what `save_grid` and most tools write); any other PNG (16-bit,
palette, interlaced) is read with Pillow when it is installed, with an error saying to install it
otherwise. The format is the PNG specification, RFC 2083 (W3C PNG 1.0): the signature (§3.1),
chunks with a CRC-32 (§3.2, §3.4), IHDR (§4.1.1), scanline filters (§6), the zlib stream split
over IDAT chunks (§4.1.3, §5).
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sdk import _arguments as check
from sdk._errors import InvalidArgument
from sdk._proto.facet.v1 import phenotype_pb2

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"  # RFC 2083 §3.1
# IHDR colour types (RFC 2083 §4.1.1) -> channels, for 8-bit samples
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}
_COLOUR_NAMES = {0: "grey", 2: "RGB", 3: "palette", 4: "grey+alpha", 6: "RGBA"}
RAW_CHANNELS = (1, 3, 4)  # grey, RGB, RGBA: what RawImage.channels may be

ImageLike = np.ndarray | bytes | str | os.PathLike[str]


def _kind(value: object) -> str:
    return type(value).__name__


# -- arrays ---------------------------------------------------------------------------------------


def rgb(array: np.ndarray, name: str = "image") -> np.ndarray:
    """An image array as uint8 RGB (H, W, 3).

    Args:
        array: uint8 (H, W, 3) RGB; (H, W) or (H, W, 1) grey (repeated into three channels);
            (H, W, 2) grey+alpha or (H, W, 4) RGBA (alpha dropped, not composited).
        name: the argument's name, for messages.
    Returns:
        A C-contiguous uint8 array (H, W, 3); `array` itself when it already is one.
    Raises:
        InvalidArgument: another dtype (the message shows the conversion to uint8), another
            shape (a channels-first array is named as such), or no pixels.
    """
    if not isinstance(array, np.ndarray):
        raise InvalidArgument(f"{name} must be a numpy array, PNG bytes or a path to a PNG file, got {_kind(array)}")
    if array.dtype != np.uint8:
        raise InvalidArgument(f"{name} must be a uint8 array (0..255), got dtype {array.dtype}: {_conversion_hint(array.dtype)}")
    shape = tuple(array.shape)
    if array.ndim == 3 and shape[0] in (1, 3, 4) and shape[2] not in (1, 2, 3, 4):
        raise InvalidArgument(
            f"{name} must be channels-last (H, W, 3), got shape {shape}, which looks channels-first: "
            "use np.transpose(image, (1, 2, 0))"
        )
    if not (array.ndim == 2 or (array.ndim == 3 and shape[2] in (1, 2, 3, 4))):
        raise InvalidArgument(f"{name} must have shape (H, W, 3) RGB, (H, W) or (H, W, 1) grey, (H, W, 2) grey+alpha or (H, W, 4) RGBA, got {shape}")
    if array.size == 0:
        raise InvalidArgument(f"{name} is empty (shape {shape}): an image needs at least one pixel")
    if array.ndim == 2:
        array = array[:, :, None]
    channels = array.shape[2]
    if channels in (1, 2):  # grey (+ alpha)
        array = np.repeat(array[:, :, :1], 3, axis=2)
    elif channels == 4:
        array = array[:, :, :3]
    return np.ascontiguousarray(array)


def _conversion_hint(dtype: np.dtype[Any]) -> str:
    if dtype.kind == "f":
        return "for values in [0, 1] convert with (np.clip(image, 0, 1) * 255).round().astype(np.uint8)"
    if dtype == np.uint16:
        return "for 16-bit values convert with (image >> 8).astype(np.uint8)"
    if dtype.kind in "iu":
        return "for values in 0..255 convert with np.clip(image, 0, 255).astype(np.uint8)"
    return "an image is an array of uint8 pixel values 0..255"


# -- messages -------------------------------------------------------------------------------------


def image_message(image: object, name: str = "image") -> phenotype_pb2.Image:
    """The `facet.v1.Image` of an image argument.

    Args:
        image: a numpy uint8 array (H, W, 3), (H, W) grey or (H, W, 4) RGBA (sent raw as RGB,
            see `rgb`); PNG bytes (sent as they are); or a str / Path naming a PNG file (its
            bytes are sent).
        name: the argument's name, for messages ("image", "edits['hair_colour']").
    Returns:
        `Image(raw=RawImage(height, width, channels=3, data))` or `Image(png=...)`.
    Raises:
        InvalidArgument: an array `rgb` refuses, bytes that are not PNG, a path with no file or
            a file that is not PNG (checked by its signature; the service checks the rest and
            the size limits), or another type.
    """
    if isinstance(image, np.ndarray):
        array = rgb(image, name)
        height, width, _ = array.shape
        return phenotype_pb2.Image(raw=phenotype_pb2.RawImage(height=height, width=width, channels=3, data=array.tobytes()))
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        _check_signature(data, f"{name} (bytes)")
        return phenotype_pb2.Image(png=data)
    if isinstance(image, (str, os.PathLike)):
        return phenotype_pb2.Image(png=_read_png_file(image, name))
    raise InvalidArgument(
        f"{name} must be a numpy uint8 array (H, W, 3), PNG bytes or a path to a PNG file, got {_kind(image)}"
    )


def image_array(image: object, name: str = "image") -> np.ndarray:
    """An image argument as a uint8 RGB array (H, W, 3): arrays through `rgb`, PNG bytes and PNG
    files decoded (`decode_png`).

    Raises:
        InvalidArgument: as `image_message`, and a PNG that cannot be decoded.
        ImportError: a PNG this module does not read (16-bit, palette, interlaced) and Pillow
            is not installed.
    """
    if isinstance(image, np.ndarray):
        return rgb(image, name)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_png(bytes(image), f"{name} (bytes)")
    if isinstance(image, (str, os.PathLike)):
        return decode_png(_read_png_file(image, name), f"{name} ({os.fspath(image)})")
    raise InvalidArgument(
        f"{name} must be a numpy uint8 array (H, W, 3), PNG bytes or a path to a PNG file, got {_kind(image)}"
    )


def array_from_message(message: phenotype_pb2.Image, what: str = "image") -> np.ndarray:
    """A reply's image as uint8 RGB (H, W, 3).

    Raises:
        InvalidArgument: an unset image, raw bytes that do not match height x width x channels,
            channels other than 1, 3 or 4, a PNG that cannot be decoded (the transport reports
            it as ProtocolError: a bad reply is the server's fault).
    """
    kind = message.WhichOneof("data")
    if kind == "png":
        return decode_png(message.png, what)
    if kind != "raw":
        raise InvalidArgument(f"{what} is unset (neither png nor raw)")
    raw = message.raw
    if raw.channels not in RAW_CHANNELS:
        raise InvalidArgument(f"{what}.raw.channels must be 1, 3 or 4, got {raw.channels}")
    if raw.height < 1 or raw.width < 1:
        raise InvalidArgument(f"{what}.raw has no pixels ({raw.height} x {raw.width})")
    expected = raw.height * raw.width * raw.channels
    if len(raw.data) != expected:
        raise InvalidArgument(
            f"{what}.raw.data has {len(raw.data)} bytes; height x width x channels = "
            f"{raw.height} x {raw.width} x {raw.channels} = {expected}"
        )
    array = np.frombuffer(raw.data, dtype=np.uint8).reshape(raw.height, raw.width, raw.channels)
    return rgb(array, what)


def format_hint(data: bytes) -> str:
    """" (it looks like JPEG)" when `data` starts with a common non-PNG image format's signature,
    else "": for the refusal of a file that is not PNG (the SDK's and the service's)."""
    for signature, name in ((b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"BM", "BMP"), (b"RIFF", "RIFF/WebP")):
        if data.startswith(signature):
            return f" (it looks like {name})"
    return ""


def _check_signature(data: bytes, name: str) -> None:
    if not data.startswith(PNG_SIGNATURE):
        raise InvalidArgument(f"{name} is not a PNG file{format_hint(data)}: it does not start with the PNG signature; convert it to PNG first")


def _read_png_file(path: str | os.PathLike[str], name: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        hint = ""
        if isinstance(path, str):
            try:
                float(path)
                hint = " (a string is read as the path of a PNG file; a value must be a number, e.g. 0.5 rather than '0.5')"
            except ValueError:
                pass
        raise InvalidArgument(f"{name}: cannot read {os.fspath(path)!r}: {exc.strerror or exc}{hint}") from None
    _check_signature(data, f"{name} ({os.fspath(path)})")
    return data


# -- PNG ------------------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    """One chunk: length, type, data, CRC-32 of type and data (RFC 2083 §3.2, §3.4)."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(image: np.ndarray, compression_level: int = 6) -> bytes:
    """An 8-bit RGB PNG file of an image, with zlib only.

    Every scanline has filter type 0 (None, RFC 2083 §6.2); the pixels are one zlib stream in
    one IDAT chunk (§4.1.3).

    Args:
        image: uint8 (H, W, 3) (grey and RGBA are converted as `rgb` says).
        compression_level: zlib's level, 0..9.
    Returns:
        The PNG file's bytes.
    Raises:
        InvalidArgument: an image `rgb` refuses.
    """
    array = rgb(image)
    height, width, _ = array.shape
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, deflate, no interlace
    scanlines = np.concatenate([np.zeros((height, 1), np.uint8), array.reshape(height, width * 3)], axis=1)
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(scanlines.tobytes(), compression_level)) + _chunk(b"IEND", b"")


def decode_png(data: bytes, what: str = "png") -> np.ndarray:
    """A PNG file's pixels as uint8 RGB (H, W, 3).

    8-bit non-interlaced grey, grey+alpha, RGB and RGBA PNGs are read here (`read_png`); any
    other PNG with Pillow.

    Raises:
        InvalidArgument: not PNG, truncated or corrupt (a bad CRC, a short zlib stream), or larger
            than `MAX_PNG_PIXELS` (read from the header before anything is decompressed: a
            decompression bomb is refused unread).
        ImportError: a PNG of another kind and Pillow is not installed.
    """
    _check_png_size(data, what)
    try:
        return read_png(data, what)
    except _NeedsPillow as reason:
        try:
            from PIL import Image, UnidentifiedImageError
        except ImportError:
            raise ImportError(f"{what} is a {reason}, which needs Pillow to read: pip install pillow") from None
        import io

        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                if image.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit grey: keep the high byte
                    return rgb((np.asarray(image, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8), what)
                return rgb(np.asarray(image.convert("RGB")), what)
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
            raise InvalidArgument(f"{what} is not a readable PNG: {exc}") from None


# The largest PNG the SDK decodes (a 8192 x 8192 photograph): a file's header states its size, and a
# small file can claim gigabytes of pixels; the service's own limit is phenotype.max_image_side.
MAX_PNG_PIXELS = 8192 * 8192


def _check_png_size(data: bytes, what: str) -> None:
    """Raises InvalidArgument when the PNG's IHDR (bytes 16..24) claims more than `MAX_PNG_PIXELS`."""
    if len(data) >= 24 and data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        if width * height > MAX_PNG_PIXELS:
            raise InvalidArgument(
                f"{what} is a PNG of {width} x {height} pixels: more than the SDK decodes ({MAX_PNG_PIXELS:,} pixels); downscale it first"
            )


class _NeedsPillow(Exception):
    """A valid PNG of a kind `read_png` does not decode (the message says which)."""


def read_png(data: bytes, what: str = "png") -> np.ndarray:
    """Decode an 8-bit, non-interlaced grey / grey+alpha / RGB / RGBA PNG with zlib and numpy.

    Returns:
        uint8 (H, W, 3) (grey repeated, alpha dropped).
    Raises:
        InvalidArgument: not PNG, truncated, a bad CRC or zlib stream, an unknown filter type.
        _NeedsPillow: a valid PNG of another kind (16-bit, palette, interlaced).
    """
    if not data.startswith(PNG_SIGNATURE):
        raise InvalidArgument(f"{what} is not a PNG file (it does not start with the PNG signature)")
    position, header, idat = len(PNG_SIGNATURE), b"", []
    while True:
        if position + 8 > len(data):
            raise InvalidArgument(f"{what} is a truncated PNG: it ends at byte {len(data)} before its IEND chunk")
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        end = position + 8 + length + 4
        if end > len(data):
            raise InvalidArgument(f"{what} is a truncated PNG: its {kind.decode('latin-1')} chunk needs {end} bytes, the file has {len(data)}")
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise InvalidArgument(f"{what} is a corrupt PNG: the CRC of its {kind.decode('latin-1')} chunk does not match")
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        elif kind == b"acTL":
            raise InvalidArgument(f"{what} is an animated PNG: send one frame")
        position = end
    if len(header) != 13:
        raise InvalidArgument(f"{what} is a corrupt PNG: no valid IHDR chunk")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if width < 1 or height < 1:
        raise InvalidArgument(f"{what} has no pixels ({width} x {height})")
    if depth != 8 or colour not in _CHANNELS or interlace:
        kind = _COLOUR_NAMES.get(colour, f"colour type {colour}")
        raise _NeedsPillow(f"{depth}-bit {kind}{' interlaced' if interlace else ''} PNG")
    channels = _CHANNELS[colour]
    stride = width * channels
    _check_png_size(data, what)
    expected = height * (stride + 1)
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(b"".join(idat), expected + 1)  # never more than the header's size (+1 to notice excess)
    except zlib.error as exc:
        raise InvalidArgument(f"{what} is a corrupt or truncated PNG: its pixel data does not decompress ({exc})") from None
    if len(raw) > expected or inflater.unconsumed_tail:
        raise InvalidArgument(f"{what} is a corrupt PNG: its pixel data inflates to more than its {width} x {height} header says")
    if len(raw) != height * (stride + 1):
        raise InvalidArgument(f"{what} is a truncated PNG: {len(raw)} bytes of pixel data, {height * (stride + 1)} expected")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, stride + 1)
    pixels = np.empty((height, stride), dtype=np.uint8)
    previous = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        pixels[y] = previous = _unfilter(int(rows[y, 0]), rows[y, 1:], previous, channels, what)
    return rgb(pixels.reshape(height, width, channels), what)


def _unfilter(kind: int, line: np.ndarray, prior: np.ndarray, bpp: int, what: str) -> np.ndarray:
    """Undo one scanline's filter (RFC 2083 §6.2-6.6); arithmetic is modulo 256."""
    if kind == 0:  # None
        return line.copy()
    if kind == 2:  # Up
        return line + prior
    if kind == 1:  # Sub: a running sum along each channel
        return np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)
    if kind not in (3, 4):
        raise InvalidArgument(f"{what} is a corrupt PNG: unknown scanline filter type {kind}")
    out = bytearray(line.tobytes())
    up = prior.tobytes()
    for i in range(len(out)):  # Average and Paeth depend on the byte just decoded
        left = out[i - bpp] if i >= bpp else 0
        if kind == 3:
            out[i] = (out[i] + ((left + up[i]) >> 1)) & 0xFF
            continue
        upper_left = up[i - bpp] if i >= bpp else 0
        estimate = left + up[i] - upper_left
        pa, pb, pc = abs(estimate - left), abs(estimate - up[i]), abs(estimate - upper_left)
        predictor = left if pa <= pb and pa <= pc else (up[i] if pb <= pc else upper_left)
        out[i] = (out[i] + predictor) & 0xFF
    return np.frombuffer(bytes(out), dtype=np.uint8)


# -- grids ----------------------------------------------------------------------------------------


def save_grid(
    images: Sequence[ImageLike],
    path: str | os.PathLike[str],
    *,
    columns: int | None = None,
    gap: int = 2,
    background: int = 255,
) -> Path:
    """Write images side by side as one PNG (no Pillow needed for arrays and 8-bit PNGs).

    Cells are as large as the largest image; a smaller image is centred in its cell. Images fill
    the grid row by row.

    Args:
        images: one or more images: numpy uint8 (H, W, 3) / (H, W) / (H, W, 4) arrays, PNG
            bytes or paths to PNG files (as every phenotype method takes them).
        path: the PNG file to write (its folder must exist).
        columns: images per row, >= 1; None: all in one row.
        gap: pixels between cells, >= 0.
        background: grey level 0..255 of the gaps and of the margins around smaller images.
    Returns:
        `path`, as a Path. The file is (rows * cell_height + (rows - 1) * gap) pixels high and
        (columns * cell_width + (columns - 1) * gap) wide, rows = ceil(len(images) / columns).
    Raises:
        InvalidArgument: no images, an image that cannot be read (named by its index), columns
            < 1, gap < 0, background outside 0..255.
        OSError: the file cannot be written.

    Example:
        >>> face = client.generate_face(seed=3)
        >>> edited, report = client.edit_phenotype(face, {"skin_tone": 0.8})
        >>> sdk.save_grid([face, edited], "edit.png")
    """
    if isinstance(images, (np.ndarray, bytes, str, os.PathLike)):
        raise InvalidArgument("images must be a list of images, not one image: pass [image]")
    arrays = [image_array(image, f"images[{i}]") for i, image in enumerate(images)]
    if not arrays:
        raise InvalidArgument("images is empty: save_grid needs at least one image")
    columns = len(arrays) if columns is None else min(check.integer(columns, "columns", low=1), len(arrays))
    gap = check.integer(gap, "gap")
    background = check.integer(background, "background", high=255)
    rows = math.ceil(len(arrays) / columns)
    cell_h = max(a.shape[0] for a in arrays)
    cell_w = max(a.shape[1] for a in arrays)
    grid = np.full((rows * cell_h + (rows - 1) * gap, columns * cell_w + (columns - 1) * gap, 3), background, np.uint8)
    for i, array in enumerate(arrays):
        row, column = divmod(i, columns)
        top = row * (cell_h + gap) + (cell_h - array.shape[0]) // 2
        left = column * (cell_w + gap) + (cell_w - array.shape[1]) // 2
        grid[top : top + array.shape[0], left : left + array.shape[1]] = array
    out = Path(path)
    out.write_bytes(encode_png(grid))
    return out
