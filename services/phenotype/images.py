"""Images into and out of the phenotype models: `facet.v1.Image` messages checked against the
`[phenotype]` limits and decoded to uint8 RGB, and the models' float tensors.

Every bad image is `InvalidArgument` naming the field and the limit, before any pixel is decoded
where that is possible: the byte limit, then the PNG signature and the height and width from its
IHDR chunk (RFC 2083 §4.1.1), so a decompression bomb (a small file that inflates to gigabytes)
is refused unread. Then Pillow decodes. What is converted, and how:

- grey, grey+alpha, palette and RGBA PNGs, and raw images of 1 (grey) or 4 (RGBA) channels,
  become RGB: grey repeated, alpha dropped (not composited: Pillow's `convert("RGB")`);
- 16-bit PNGs become 8-bit by keeping each sample's high byte (what Pillow does for 16-bit RGB);
- refused: anything that is not PNG (JPEG, GIF, ...), a truncated or corrupt PNG, an animated
  PNG (more than one frame), raw channels other than 1, 3 or 4 (2 would be ambiguous: grey+alpha
  or two colours), raw bytes that are not height x width x channels long.

The models see an image as float32 RGB in [0, 1], channels first, `size` x `size`
(`services.phenotype.catalog`): `to_model_input` centre-crops a non-square image to its shorter
side (a face photo is usually centred; squashing it would change face width, an attribute), then
resizes with Lanczos (Pillow's LANCZOS, a windowed sinc: antialiased when reducing) unless it
already is `size` x `size`, so the service's own images pass through unchanged.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib

import numpy as np

from sdk._images import PNG_SIGNATURE, RAW_CHANNELS, encode_png, format_hint, rgb
from sdk._proto.facet.v1 import phenotype_pb2
from services.phenotype.config import PhenotypeConfig
from services.runtime.errors import InternalError, InvalidArgument

__all__ = ["decode_image", "encode_png", "from_model_output", "image_message", "to_model_input"]

_IHDR_END = len(PNG_SIGNATURE) + 8 + 13  # signature, IHDR length and type, IHDR data (RFC 2083 §3.2, §4.1.1)


def decode_image(message: phenotype_pb2.Image, field: str, limits: PhenotypeConfig) -> np.ndarray:
    """A request's image as uint8 RGB [height, width, 3].

    Args:
        message: the `Image` (an unset one is refused as missing).
        field: its name in the request, for messages: "image", "edits['nose_width'].reference".
        limits: the `[phenotype]` section: max_image_bytes, min_image_side, max_image_side.
    Returns:
        uint8 [height, width, 3], C-contiguous.
    Raises:
        InvalidArgument: every bad image (module docstring), naming `field` and the limit.
    """
    kind = message.WhichOneof("data")
    if kind == "png":
        return _decode_png(message.png, f"{field}.png", limits)
    if kind == "raw":
        return _decode_raw(message.raw, f"{field}.raw", limits)
    raise InvalidArgument(f"{field} is required: set {field}.png (a PNG file's bytes) or {field}.raw (uint8 pixels)")


def _check_bytes(size: int, field: str, limits: PhenotypeConfig) -> None:
    if size > limits.max_image_bytes:
        raise InvalidArgument(f"{field} has {size} bytes; the limit is phenotype.max_image_bytes ({limits.max_image_bytes})")


def _check_sides(height: int, width: int, field: str, limits: PhenotypeConfig) -> None:
    low, high = limits.min_image_side, limits.max_image_side
    if not (low <= height <= high and low <= width <= high):
        raise InvalidArgument(
            f"{field} is {height} x {width} pixels (height x width); each side must be between "
            f"phenotype.min_image_side ({low}) and phenotype.max_image_side ({high})"
        )


def _decode_raw(raw: phenotype_pb2.RawImage, field: str, limits: PhenotypeConfig) -> np.ndarray:
    _check_bytes(len(raw.data), f"{field}.data", limits)
    if raw.channels not in RAW_CHANNELS:
        raise InvalidArgument(f"{field}.channels must be 3 (RGB), 1 (grey) or 4 (RGBA), got {raw.channels}")
    _check_sides(raw.height, raw.width, field, limits)
    expected = raw.height * raw.width * raw.channels
    if len(raw.data) != expected:
        raise InvalidArgument(
            f"{field}.data has {len(raw.data)} bytes; height x width x channels = "
            f"{raw.height} x {raw.width} x {raw.channels} = {expected} (one uint8 per sample, row-major, channels last)"
        )
    return rgb(np.frombuffer(raw.data, dtype=np.uint8).reshape(raw.height, raw.width, raw.channels), field)


def _decode_png(data: bytes, field: str, limits: PhenotypeConfig) -> np.ndarray:
    _check_bytes(len(data), field, limits)
    if not data.startswith(PNG_SIGNATURE):
        raise InvalidArgument(f"{field} is not a PNG file{format_hint(data)}: only PNG is read; convert it to PNG or send raw pixels")
    if len(data) < _IHDR_END or data[len(PNG_SIGNATURE) + 4 : len(PNG_SIGNATURE) + 8] != b"IHDR":
        raise InvalidArgument(f"{field} is a truncated or corrupt PNG: it has no complete IHDR header (the file has {len(data)} bytes)")
    width, height = struct.unpack(">II", data[len(PNG_SIGNATURE) + 8 : len(PNG_SIGNATURE) + 16])
    _check_sides(height, width, field, limits)  # before decompressing anything
    _check_chunks(data, field)

    from PIL import Image, UnidentifiedImageError

    unreadable = (OSError, UnidentifiedImageError, SyntaxError, ValueError, EOFError, struct.error,
                  Image.DecompressionBombWarning, Image.DecompressionBombError)  # fmt: skip
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=["PNG"])
    except unreadable as exc:
        raise InvalidArgument(f"{field} is a truncated or corrupt PNG: {_reason(exc)}") from None
    with image:
        # an APNG's acTL chunk, read with the header; Pillow's n_frames counts a default image
        # (shown by viewers without APNG support, not part of the animation) as one more frame
        frames = int(getattr(image, "n_frames", 1))
        if frames > 1:
            default = bool(getattr(image, "default_image", False))
            animation = frames - 1 if default else frames
            raise InvalidArgument(
                f"{field} is an animated PNG of {animation} frame{'s' if animation != 1 else ''}"
                + (" and a separate default image (which viewers without APNG support show)" if default else "")
                + ": send one still image"
            )
        try:
            image.load()
        except unreadable as exc:
            raise InvalidArgument(f"{field} is a truncated or corrupt PNG: {_reason(exc)}") from None
        if image.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit grey: keep the high byte
            return rgb((np.asarray(image, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8), field)
        return rgb(np.asarray(image.convert("RGB")), field)


# Chunks a PNG may have: a real image of the largest allowed side has a few thousand IDAT chunks at
# the usual 8-64 KiB each; a file of a million tiny chunks (legal, under the byte limit) costs
# Pillow tens of seconds of CPU to walk, so it is refused from a cheap scan first.
MAX_PNG_CHUNKS = 65_536


def _check_chunks(data: bytes, field: str) -> None:
    """Raises InvalidArgument when `data` holds more than `MAX_PNG_CHUNKS` chunks, ends before its
    IEND chunk (a file cut short, even where its pixels happen to be complete), or has a complete
    chunk whose CRC-32 (over its type and data, RFC 2083 §3.2) does not match: Pillow checks the
    CRCs of header chunks but not of IDAT, so a PNG damaged in its pixel data would otherwise
    decode to wrong pixels without an error. The scan stops at the limit, so its cost is bounded
    (zlib's CRC-32 runs at memory speed); a chunk cut short by the file's end is left to Pillow,
    which names the truncation."""
    position, count = len(PNG_SIGNATURE), 0
    while position + 8 <= len(data):
        count += 1
        if count > MAX_PNG_CHUNKS:
            raise InvalidArgument(f"{field} has more than {MAX_PNG_CHUNKS} PNG chunks: re-save it (a real image has a few thousand at most)")
        (length,) = struct.unpack(">I", data[position : position + 4])
        end = position + 8 + length
        if end + 4 <= len(data):
            (stored,) = struct.unpack(">I", data[end : end + 4])
            if zlib.crc32(data[position + 4 : end]) != stored:
                kind = data[position + 4 : position + 8].decode("latin-1")
                raise InvalidArgument(f"{field} is a corrupt PNG: chunk {count} ({kind!r}) fails its CRC check, so its bytes were damaged")
        if data[position + 4 : position + 8] == b"IEND":
            return
        position = end + 4
    raise InvalidArgument(f"{field} is a truncated or corrupt PNG: it ends before its IEND chunk (the file has {len(data)} bytes)")


def _reason(exc: BaseException) -> str:
    """Pillow's message without the object reprs some of them carry ("<_io.BytesIO object at 0x...>")."""
    text = re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", str(exc))  # "cannot identify image file <_io.BytesIO ...>"
    return text or type(exc).__name__


def to_model_input(image: np.ndarray, size: int) -> np.ndarray:
    """An RGB image as the models' input: float32 [1, 3, size, size] in [0, 1].

    Args:
        image: uint8 [height, width, 3].
        size: the model's image side (`Prop.IMAGE_SIZE`).
    Returns:
        The centre square (side min(height, width)), resized with Lanczos to size x size when
        it is another size, divided by 255, channels first, with a batch axis.
    """
    height, width, _ = image.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[top : top + side, left : left + side]
    if side != size:
        from PIL import Image

        square = np.asarray(Image.fromarray(np.ascontiguousarray(square)).resize((size, size), Image.Resampling.LANCZOS))
    return np.ascontiguousarray(square.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)


def from_model_output(output: np.ndarray) -> np.ndarray:
    """The generator's images as uint8 RGB.

    Args:
        output: float32 [batch, 3, size, size] (nominally in [0, 1]; values outside are clipped).
    Returns:
        uint8 [batch, size, size, 3]: round(255 * clip(x, 0, 1)).
    Raises:
        InternalError: a non-finite value (a broken model; never sent to a client).
    """
    if not np.isfinite(output).all():
        raise InternalError("the generator produced non-finite pixels")
    pixels = np.rint(np.clip(output, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))


def image_message(image: np.ndarray) -> phenotype_pb2.Image:
    """A reply's image: raw RGB (no encoding cost; the SDK returns it as a numpy array).

    Args:
        image: uint8 [height, width, 3].
    """
    height, width, _ = image.shape
    return phenotype_pb2.Image(raw=phenotype_pb2.RawImage(height=height, width=width, channels=3, data=np.ascontiguousarray(image).tobytes()))
