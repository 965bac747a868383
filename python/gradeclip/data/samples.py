"""What every input source yields: samples (an image with its key, caption and label) and the
decoding step that turns their bytes into an RGB image or a reason why it cannot."""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

#: file name extensions recognised as images (lower case, without the dot)
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"})


@dataclass(frozen=True)
class Sample:
    """One input image.

    Attributes:
        key: unique name of the sample within its source (relative path, row number, tar key).
        path: where the image comes from: a file path, or ``"shard.tar#member"`` inside a tar.
        caption: the sample's own caption, if the source has one.
        label: the ground-truth class as given by the source (a class name or an index), if any.
        data: the encoded image bytes when the source holds them (tar shards); None when the image
            is read from ``path``.
        problem: why the sample cannot be explained, when the source already knows (e.g. a tar
            sample without an image member); None otherwise.
    """

    key: str
    path: str
    caption: str | None = None
    label: str | None = None
    data: bytes | None = None
    problem: str | None = None

    def read(self) -> bytes:
        """The encoded image bytes (from memory or from ``path``). Raises :class:`UnreadableImage`."""
        if self.data is not None:
            return self.data
        try:
            with open(self.path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise UnreadableImage(f"cannot read file: {exc.strerror or exc}") from exc


class UnreadableImage(Exception):
    """An image that cannot be used; ``str(exc)`` is the reason recorded in the store's index."""


def decode_image(data: bytes) -> Image.Image:
    """Decode ``data`` fully into an RGB PIL image.

    Raises:
        UnreadableImage: for an empty file, an unknown format, truncated or corrupt data, or an image
            larger than Pillow's decompression-bomb limit; the message says which.
    """
    if not data:
        raise UnreadableImage("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decode everything now: truncation shows here, not later
            return image.convert("RGB")
    except UnidentifiedImageError as exc:
        raise UnreadableImage(f"not a recognised image format ({len(data)} bytes)") from exc
    except Image.DecompressionBombError as exc:
        raise UnreadableImage(f"image too large: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # what Pillow raises for damaged data
        raise UnreadableImage(f"truncated or corrupt image data: {exc}") from exc


class Source(ABC):
    """An input source. Subclasses are either random-access (:class:`IndexedSource`) or read as
    a stream of shards (:class:`ShardedSource`)."""

    #: ``"folder"``, ``"table"`` or ``"tar"``
    kind: str
    #: whether samples may carry their own caption (so each image can be explained against it)
    has_captions: bool
    #: whether samples may carry a ground-truth label
    has_labels: bool

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """A JSON-able identity of the input: equal fingerprints mean the same samples in the same order."""

    @abstractmethod
    def describe(self) -> str:
        """One line for logs and messages, e.g. ``"folder /data/pets (1,234 images)"``."""


class IndexedSource(Source):
    """A source whose samples are known up front and read by position."""

    @abstractmethod
    def __len__(self) -> int:
        """The number of samples."""

    @abstractmethod
    def samples(self, start: int, stop: int) -> list[Sample]:
        """Samples ``start`` (inclusive) to ``stop`` (exclusive), in source order, without image bytes."""


@dataclass(frozen=True)
class ShardError:
    """A shard that could not be read to its end (missing, truncated or corrupt archive).

    ``samples_read`` samples before the failure were yielded normally."""

    path: str
    reason: str
    samples_read: int


class ShardedSource(Source):
    """A source read as a stream, one shard at a time; shards are the unit of parallel work."""

    shards: list[str]

    @abstractmethod
    def read_shard(self, index: int) -> Iterator[Sample | ShardError]:
        """Shard ``index``'s samples, with their bytes, in stored order. A shard that cannot be read
        to its end yields a final :class:`ShardError` instead of raising."""

    def shard_sizes(self) -> list[int] | None:
        """Each shard's number of samples, when the shards come with statistics saying so; else None."""
        return None
