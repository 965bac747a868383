"""What every input source yields: :class:`Sample`, one image with what the source knows about it
(key, caption, label, mask, position). Images are decoded by :mod:`gradeclip.data.images`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .images import read_file


@dataclass(frozen=True)
class Sample:
    """One input image and what its source says about it.

    Attributes:
        key: unique name of the sample within its source (relative path, row number, tar key).
        path: where the image comes from: a file path, or ``"shard.tar#member"`` inside a tar.
        caption: the sample's own caption, if the source has one.
        label: the ground-truth class: an ``int`` class index when the source knows the classes
            (class sub-folders), else as the source gives it (a class name or an index as text);
            None without one.
        data: the encoded image bytes when the source holds them (tar shards); None when the image
            is read from ``path``.
        problem: why the sample cannot be explained, when the source already knows (e.g. a tar
            sample without an image member); None otherwise.
        mask: the sample's object-mask file (folders read with ``masks=``), else None.
        index: the sample's position in its source (in its shard, for tar shards).
    """

    key: str
    path: str
    caption: str | None = None
    label: str | int | None = None
    data: bytes | None = None
    problem: str | None = None
    mask: str | None = None
    index: int = 0

    def read(self) -> bytes:
        """The encoded image bytes (from memory or from ``path``). Raises :class:`~gradeclip.errors.UnreadableImage`."""
        return self.data if self.data is not None else read_file(self.path)


class Source(ABC):
    """An input source. Subclasses are either random-access (:class:`IndexedSource`) or read as
    a stream of shards (:class:`ShardedSource`)."""

    #: ``"folder"``, ``"table"`` or ``"tar"``
    kind: str
    #: whether samples may carry their own caption (so each image can be explained against it)
    has_captions: bool

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
    """A shard that could not be read to its end (missing, truncated or corrupt archive); the
    samples before the failure were yielded normally."""

    path: str
    reason: str


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
