"""Image–caption pairs for fine-tuning, read through :mod:`gradeclip.data`, in a seeded order that
a run can resume at any step.

A random-access source (folder with captions, CSV/TSV/parquet table) is read in epochs, each a
permutation of the samples drawn from ``numpy.random.default_rng((seed, epoch))``; the sample at
position t of the stream is ``perm_{t // n}[t mod n]``. A training step of global batch G takes
positions ``step·G … step·G + G − 1``; micro-batch m of rank r takes its share of them, so two
ranks see exactly the samples one process would. Webdataset shards are streamed, each rank its
own shards (``r, r + world, …``) in a seeded order per epoch; a resumed run re-reads its stream
up to where it stopped.

Samples that cannot train (no caption, an image that fails to decode) are skipped and recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from ..data import IndexedSource, Sample, ShardedSource, ShardError, Source, UnreadableImage, decode_image
from ..errors import InputError

#: separator of phrases in a user's phrase column
PHRASE_SEPARATOR = ";"


@dataclass
class Pair:
    """A decoded training pair: ``image`` ``[3, S, S]`` (preprocessed), its caption, and its phrases
    from the user's column (None when phrases are to be extracted from the caption)."""

    key: str
    image: Tensor
    caption: str
    phrases: list[str] | None


def decode_pair(sample: Sample, preprocess: Callable[[Any], Tensor], phrase_column: bool) -> Pair | str:
    """The :class:`Pair` of ``sample``, or the reason it is skipped."""
    if sample.problem:
        return sample.problem
    if not sample.caption:
        return "no caption"
    try:
        image = preprocess(decode_image(sample.read()))
    except UnreadableImage as exc:
        return str(exc)
    phrases = None
    if phrase_column:
        phrases = [p for p in str(sample.label or "").split(PHRASE_SEPARATOR) if p.strip()]
    return Pair(sample.key, image, sample.caption, phrases)


class PairStream:
    """One rank's pairs, ``share`` samples per micro-batch, from position ``start`` of its stream.

    Iterating yields ``(pairs, skipped)`` per micro-batch: the decoded pairs and ``(key, reason)``
    for each sample skipped.
    """

    def __init__(
        self,
        source: Source,
        preprocess: Callable[[Any], Tensor],
        *,
        micro_batch: int,
        rank: int,
        world: int,
        seed: int,
        start_micro: int,
        phrase_column: bool = False,
    ):
        if micro_batch % world:
            raise InputError(f"the micro-batch of {micro_batch} pairs does not split over {world} ranks; pick --batch-size a multiple of ranks × --accumulate")
        self.source, self.preprocess = source, preprocess
        self.micro_batch, self.share = micro_batch, micro_batch // world
        self.rank, self.world, self.seed = rank, world, seed
        self.start_micro = start_micro
        self.phrase_column = phrase_column
        if isinstance(source, IndexedSource):
            if len(source) == 0:
                raise InputError(f"{source.describe()} holds no samples: nothing to fine-tune on")
        elif isinstance(source, ShardedSource):
            if not source.shards:
                raise InputError(f"{source.describe()} names no shards: nothing to fine-tune on")
            if len(source.shards) < world:
                raise InputError(f"{len(source.shards)} shard(s) cannot feed {world} ranks: each rank streams its own shards")
        else:
            raise InputError(f"{type(source).__name__} is neither a random-access nor a sharded source")

    def _indexed(self, source: IndexedSource) -> Iterator[list[Sample]]:
        n = len(source)
        permutations: dict[int, np.ndarray] = {}

        def position(t: int) -> int:
            epoch = t // n
            if epoch not in permutations:
                if len(permutations) > 1:  # positions only move forward: two epochs live at most
                    permutations.pop(min(permutations))
                permutations[epoch] = np.random.default_rng((self.seed, epoch)).permutation(n)
            return int(permutations[epoch][t % n])

        micro = self.start_micro
        while True:
            begin = micro * self.micro_batch + self.rank * self.share
            yield [sample for t in range(begin, begin + self.share) for sample in source.samples(position(t), position(t) + 1)]
            micro += 1

    def _sharded(self, source: ShardedSource) -> Iterator[list[Sample]]:
        def stream() -> Iterator[Sample]:
            epoch = 0
            while True:
                order = np.random.default_rng((self.seed, epoch)).permutation(len(source.shards))
                mine = [int(s) for s in order[self.rank :: self.world]]
                for shard in mine:
                    for item in source.read_shard(shard):
                        if isinstance(item, ShardError):
                            yield Sample(key=f"{item.path}#end", path=item.path, problem=f"shard unreadable: {item.reason}")
                        else:
                            yield item
                epoch += 1

        samples = stream()
        for _ in range(self.start_micro * self.share):  # re-read up to where the run stopped
            next(samples)
        while True:
            yield [next(samples) for _ in range(self.share)]

    def __iter__(self) -> Iterator[tuple[list[Pair], list[tuple[str, str]]]]:
        chunks = self._indexed(self.source) if isinstance(self.source, IndexedSource) else self._sharded(self.source)  # type: ignore[arg-type]
        for samples in chunks:
            pairs, skipped = [], []
            for sample in samples:
                out = decode_pair(sample, self.preprocess, self.phrase_column)
                if isinstance(out, str):
                    skipped.append((sample.key, out))
                else:
                    pairs.append(out)
            yield pairs, skipped
