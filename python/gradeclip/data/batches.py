"""The DataLoader side of a dataset run: work plans turned into batches of decoded, preprocessed
images, prepared in worker processes.

Chunks are the unit a store commits: chunk ``c`` of a random-access source holds samples
``[c·S, (c+1)·S)`` and is named by :func:`indexed_chunk`; chunk ``b`` of tar shard ``j`` holds that
shard's samples ``[b·S, (b+1)·S)`` and is named by :func:`shard_chunk`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import UnreadableImage
from .images import decode_image
from .samples import IndexedSource, Sample, ShardedSource, ShardError


def indexed_chunk(index: int) -> str:
    """The name of chunk ``index`` of a folder or table."""
    return f"c{index:07d}"


@dataclass
class Batch:
    """A batch of consecutive samples of one chunk, decoded and preprocessed by a worker.

    ``groups`` holds the decoded samples' inputs, one ``(indices into samples, float32
    [n, 3, H, W])`` per input size (one with the model's preprocess; native resolution can give
    several); ``errors`` maps the other samples' indices to why they failed. ``first`` is
    ``samples[0]``'s position in the chunk. ``final``: the chunk's last batch; ``unit_done``: also
    the last of its unit of work (a tar shard); ``shard_error``: the shard broke off here.
    ``originals``: when the run draws overlays, each decoded sample's image as uint8 RGB ``[H, W, 3]``.
    """

    chunk: str
    first: int
    samples: list[Sample]
    groups: list[tuple[list[int], Tensor]]
    sizes: list[tuple[int, int]]
    errors: dict[int, str]
    final: bool
    unit_done: bool = False
    shard_error: ShardError | None = None
    originals: dict[int, np.ndarray] | None = None

    def pin_memory(self) -> Batch:
        """Called by the DataLoader's pinning thread (CUDA only)."""
        self.groups = [(indices, images.pin_memory()) for indices, images in self.groups]
        return self


def prepare(
    samples: list[Sample], preprocess: Callable[[Image.Image], Tensor], originals: dict[int, np.ndarray] | None = None
) -> tuple[list[tuple[list[int], Tensor]], list[tuple[int, int]], dict[int, str]]:
    """Decode and preprocess ``samples``: ``(groups, original (height, width) per sample (0, 0 for
    failures), {index: reason} for failures)``; ``groups`` stacks the decoded samples' inputs by
    input size, ``(indices, float32 [n, 3, H, W])`` each, in the order the sizes first occur.
    With ``originals`` given, each decoded sample's image (uint8 RGB ``[H, W, 3]``) is put in it
    under its index."""
    by_size: dict[tuple[int, ...], tuple[list[int], list[Tensor]]] = {}
    sizes, errors = [], {}
    for i, sample in enumerate(samples):
        sizes.append((0, 0))
        if sample.problem is not None:
            errors[i] = sample.problem
            continue
        try:
            image = decode_image(sample.read())
            tensor = preprocess(image)
        except UnreadableImage as exc:
            errors[i] = str(exc)
            continue
        except Exception as exc:  # a preprocessing failure of one image must not stop the run
            errors[i] = f"preprocessing failed: {type(exc).__name__}: {exc}"
            continue
        indices, tensors = by_size.setdefault(tuple(tensor.shape), ([], []))
        indices.append(i)
        tensors.append(tensor)
        sizes[i] = (image.height, image.width)
        if originals is not None:
            originals[i] = np.asarray(image)
    return [(indices, torch.stack(tensors)) for indices, tensors in by_size.values()], sizes, errors


def _strip(sample: Sample) -> Sample:
    """The sample without its image bytes (they stay in the worker)."""
    return sample if sample.data is None else replace(sample, data=None)


def _batch(
    chunk: str, first: int, samples: list[Sample], preprocess: Callable[[Image.Image], Tensor], keep: bool, final: bool, **flags: Any
) -> Batch:
    originals: dict[int, np.ndarray] | None = {} if keep else None
    groups, sizes, errors = prepare(samples, preprocess, originals)
    return Batch(chunk, first, [_strip(s) for s in samples], groups, sizes, errors, final, originals=originals, **flags)


def _worker_slice(items: Sequence[Any]) -> Sequence[Any]:
    info = get_worker_info()
    return items if info is None else items[info.id :: info.num_workers]


class IndexedBatches(IterableDataset):
    """Batches of a random-access source: ``plan`` lists ``(chunk, first position, start, stop,
    final)``; worker ``w`` of ``K`` prepares entries ``w, w+K, …`` so batches arrive in plan order.
    ``keep_originals``: also ship each decoded image (for overlays on the originals)."""

    def __init__(
        self, source: IndexedSource, plan: list[tuple[str, int, int, int, bool]], preprocess: Callable[[Image.Image], Tensor], keep_originals: bool = False
    ):
        self.source, self.plan, self.preprocess, self.keep = source, plan, preprocess, keep_originals

    def __iter__(self) -> Iterator[Batch]:
        for chunk, first, start, stop, final in _worker_slice(self.plan):
            yield _batch(chunk, first, self.source.samples(start, stop), self.preprocess, self.keep, final)


def shard_chunk(shard: int, block: int) -> str:
    """The name of chunk ``block`` of tar shard ``shard``."""
    return f"s{shard:06d}-{block:05d}"


class ShardBatches(IterableDataset):
    """Batches of a tar source: worker ``w`` of ``K`` streams shards ``shards[w::K]``; chunks in
    ``done`` are read past without decoding. ``keep_originals`` as for :class:`IndexedBatches`."""

    def __init__(
        self,
        source: ShardedSource,
        shards: list[int],
        done: set[str],
        preprocess: Callable[[Image.Image], Tensor],
        batch_size: int,
        shard_size: int,
        keep_originals: bool = False,
    ):
        self.source, self.shards, self.done, self.preprocess = source, shards, done, preprocess
        self.batch_size, self.shard_size, self.keep = batch_size, shard_size, keep_originals

    def __iter__(self) -> Iterator[Batch]:
        for shard in _worker_slice(self.shards):
            yield from self._read(shard)

    def _read(self, shard: int) -> Iterator[Batch]:
        size = self.shard_size
        items = _Peekable(self.source.read_shard(shard))
        pending: list[Sample] = []
        first = 0  # chunk offset of pending[0]
        position = 0  # shard position of the next sample
        for item in items:
            if isinstance(item, ShardError):  # the shard broke off: what is pending ends with the error
                block, offset = divmod(position, size)
                yield self._batch(shard_chunk(shard, block), offset - len(pending), pending, True, unit_done=True, shard_error=item)
                return
            block, offset = divmod(position, size)
            position += 1
            chunk = shard_chunk(shard, block)
            if chunk in self.done:
                continue
            if not pending:
                first = offset
            pending.append(item)
            upcoming = items.peek()
            if upcoming is None:
                yield self._batch(chunk, first, pending, True, unit_done=True)
                return
            chunk_full = offset == size - 1
            if chunk_full or (len(pending) >= self.batch_size and not isinstance(upcoming, ShardError)):
                yield self._batch(chunk, first, pending, chunk_full)
                pending = []
        block, offset = divmod(position, size)  # an empty shard, or one whose last chunks were done
        yield self._batch(shard_chunk(shard, block), offset, [], True, unit_done=True)

    def _batch(self, chunk: str, first: int, samples: list[Sample], final: bool, **flags: Any) -> Batch:
        return _batch(chunk, first, samples, self.preprocess, self.keep, final, **flags)


class _Peekable:
    """An iterator that can look at its next item (None at the end)."""

    _END = object()

    def __init__(self, iterator: Iterator[Any]):
        self._iterator = iterator
        self._next: Any = self._END

    def __iter__(self) -> _Peekable:
        return self

    def __next__(self) -> Any:
        if self._next is not self._END:
            item, self._next = self._next, self._END
            return item
        return next(self._iterator)

    def peek(self) -> Any:
        if self._next is self._END:
            self._next = next(self._iterator, None)
        return self._next


def identity(batch: Batch) -> Batch:
    return batch


def worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers decode images; the main process owns the cores for the model
