"""The one place gradeclip opens image and mask files: bytes → an upright RGB image, or a mask.

Every reader (dataset runs, evaluation, the demos) decodes through :func:`decode_image`, so an
image means the same pixels everywhere: fully decoded (truncation shows at once), turned upright
by its EXIF orientation tag, high-bit-depth grey scaled to 8 bits, converted to RGB (greyscale,
palette and alpha dropped).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError, UnreadableImage

#: file name extensions recognised as images (lower case, without the dot)
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"})
MASK_FORMATS = ("auto", "binary", "imagenet-s")
#: ImageNet-S class ids that are not an object: 0 = background, 1000 = ignored
IMAGENET_S_NOT_OBJECT = (0, 1000)


def is_image_name(name: str) -> bool:
    """Whether a file name has one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return "." in name and name.rpartition(".")[2].lower() in IMAGE_EXTENSIONS


def read_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of ``path``. Raises :class:`UnreadableImage` when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise UnreadableImage(f"cannot read file: {exc.strerror or exc}") from exc


def _open(data: bytes) -> Image.Image:
    """``data`` fully decoded and turned upright by its EXIF orientation, in the file's own mode."""
    if not data:
        raise UnreadableImage("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decode everything now: truncation shows here, not later
            upright = ImageOps.exif_transpose(image)
            return image.copy() if upright is None else upright
    except UnidentifiedImageError as exc:
        raise UnreadableImage(f"not a recognised image format ({len(data)} bytes)") from exc
    except Image.DecompressionBombError as exc:
        raise UnreadableImage(f"image too large: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # what Pillow raises for damaged data
        raise UnreadableImage(f"truncated or corrupt image data: {exc}") from exc


def _eight_bit(image: Image.Image) -> Image.Image:
    """A grey image with more than 8 bits per pixel as 8-bit grey (mode ``L``), its full range kept:
    16-bit values (``I;16*``, and ``I`` with values in 0..65535) times 255/65535, floats (``F``)
    in [0, 1] times 255, rounded. (Pillow's own conversion clips them at 255: a white image.)

    Raises:
        UnreadableImage: ``I`` or ``F`` values outside those ranges, whose scale is unknown.
    """
    values = np.asarray(image)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode.startswith("I;16") or (image.mode == "I" and low >= 0 and high <= 65535):
        scaled = values.astype(np.float64) * (255 / 65535)
    elif image.mode == "F" and low >= 0 and high <= 1:
        scaled = values.astype(np.float64) * 255
    else:
        raise UnreadableImage(f"{image.mode} image with values {low:g}..{high:g}: no known scale to 8 bits (16-bit 0..65535 or float 0..1)")
    return Image.fromarray(np.rint(scaled).astype(np.uint8), "L")


def decode_image(data: bytes) -> Image.Image:
    """Decode ``data`` into an upright RGB PIL image (EXIF orientation applied). High-bit-depth grey
    images (16-bit PNG/TIFF, 32-bit integer or float TIFF) are scaled to 8 bits over their full
    range first (:func:`_eight_bit`).

    Raises:
        UnreadableImage: for an empty file, an unknown format, truncated or corrupt data, an image
            larger than Pillow's decompression-bomb limit, or high-bit-depth values of unknown scale;
            the message says which.
    """
    image = _open(data)
    if image.mode.startswith("I") or image.mode == "F":
        image = _eight_bit(image)
    return image if image.mode == "RGB" else image.convert("RGB")


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file as uint8 RGB ``[H, W, 3]`` (decoded by :func:`decode_image`).

    Raises:
        UnreadableImage: naming the file and why it cannot be used.
    """
    try:
        return np.asarray(decode_image(read_file(path)))
    except UnreadableImage as exc:
        raise UnreadableImage(f"cannot read image {os.fspath(path)!r}: {exc}") from exc


def load_images(paths: Sequence[str | os.PathLike[str]], threads: int = 4) -> list[np.ndarray]:
    """:func:`load_image` of each path, in order, decoded in up to ``threads`` threads (Pillow
    releases the GIL while decoding)."""
    if not paths:
        return []
    with ThreadPoolExecutor(max_workers=min(threads, len(paths))) as pool:
        return list(pool.map(load_image, paths))


def load_mask(path: str | os.PathLike[str], mask_format: str = "auto") -> np.ndarray:
    """A mask PNG as bool ``[H, W]`` (True = object).

    ``mask_format``: ``"binary"`` (non-zero = object, for greyscale / palette / 1-bit masks),
    ``"imagenet-s"`` (RGB with class id ``R + 256·G``; ids 0 and 1000 are not object) or
    ``"auto"`` (ImageNet-S for RGB/RGBA files, binary otherwise).

    Raises:
        InputError: an unknown ``mask_format``; :class:`UnreadableImage` naming an unreadable file.
    """
    if mask_format not in MASK_FORMATS:
        raise InputError(f"mask_format must be one of {', '.join(MASK_FORMATS)}, got {mask_format!r}")
    try:
        mask = _open(read_file(path))
    except UnreadableImage as exc:
        raise UnreadableImage(f"cannot read mask {os.fspath(path)!r}: {exc}") from exc
    if mask_format == "imagenet-s" or (mask_format == "auto" and mask.mode in ("RGB", "RGBA")):
        pixels = np.asarray(mask.convert("RGB")).astype(np.int32)
        return ~np.isin(pixels[..., 0] + 256 * pixels[..., 1], IMAGENET_S_NOT_OBJECT)
    return np.asarray(mask) != 0
