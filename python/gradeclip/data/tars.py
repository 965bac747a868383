"""Webdataset tar shards in the img2dataset layout (``key.jpg`` + ``key.txt`` [+ ``key.json``,
``key.cls``]), read as a stream with the standard library's ``tarfile``.

Shards are named by a brace pattern (``data/{00000..00127}.tar``), a folder holding ``*.tar``
files, or one file. A sample is the run of consecutive members sharing a key — the member's path
up to the first dot of its file name, as webdataset defines it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InputError
from .images import IMAGE_EXTENSIONS
from .samples import Sample, ShardedSource, ShardError

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def expand_shards(pattern: str) -> list[str]:
    """The shard paths ``pattern`` names (brace-expanded; a folder means its ``*.tar`` files, sorted).

    Raises:
        InputError: no shard named, a named shard missing, or a name that is not a tar file.
    """
    from braceexpand import braceexpand

    if Path(pattern).is_dir():
        paths = sorted(str(p) for p in Path(pattern).iterdir() if p.name.endswith(TAR_SUFFIXES) and not p.name.startswith("."))
        if not paths:
            raise InputError(f"folder {pattern} holds no tar shards ({', '.join(TAR_SUFFIXES)})")
    else:
        paths = list(braceexpand(pattern))
    not_tar = [p for p in paths if not p.endswith(TAR_SUFFIXES)]
    if not_tar:
        raise InputError(f"not tar shards: {', '.join(not_tar[:5])}")
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise InputError(f"{len(missing)} of {len(paths)} shards do not exist: {', '.join(missing[:5])}{more}")
    return [str(Path(p).resolve()) for p in paths]


def split_key(name: str) -> tuple[str, str] | None:
    """``(key, extension)`` of a tar member name as webdataset splits it: the key is the path up to
    the first dot of the file name, the extension the rest, lower-cased. None without an extension."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot or not stem:
        return None
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _text(data: bytes) -> str | None:
    return data.decode("utf-8", errors="replace").strip() or None


def _sample(shard: str, index: int, key: str, members: dict[str, tuple[str, bytes]]) -> Sample:
    image = next((ext for ext in members if ext in IMAGE_EXTENSIONS), None)
    caption = _text(members["txt"][1]) if "txt" in members else None
    label = _text(members["cls"][1]) if "cls" in members else None
    if image is None:
        problem = f"no image in the sample (members: {', '.join(sorted(members))})"
        return Sample(key=key, path=f"{shard}#{key}", caption=caption, label=label, problem=problem, index=index)
    name, data = members[image]
    return Sample(key=key, path=f"{shard}#{name}", caption=caption, label=label, data=data, index=index)


class TarSource(ShardedSource):
    """Samples streamed from webdataset tar shards, shard by shard, in stored order.

    Captions come from ``key.txt``, labels from ``key.cls``. Keys are webdataset's ``__key__``.
    """

    kind = "tar"
    has_captions = True

    def __init__(self, pattern: str):
        self.pattern = pattern
        self.shards = expand_shards(pattern)

    def read_shard(self, index: int) -> Iterator[Sample | ShardError]:
        path = self.shards[index]
        count = 0
        key: str | None = None
        members: dict[str, tuple[str, bytes]] = {}
        try:
            with tarfile.open(path, mode="r|*") as tar:
                for info in tar:
                    split = split_key(info.name) if info.isfile() else None
                    if split is None:
                        continue
                    if split[0] != key:
                        if key is not None:
                            yield _sample(path, count, key, members)
                            count += 1
                        key, members = split[0], {}
                    handle = tar.extractfile(info)
                    assert handle is not None  # a regular file always has a handle
                    members[split[1]] = (info.name, handle.read())
            if key is not None:
                yield _sample(path, count, key, members)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            lost = f"; sample {key!r} and any after it were not read" if key is not None else ""
            yield ShardError(path=path, reason=f"tar shard unreadable after {count} samples: {exc}{lost}")

    def shard_sizes(self) -> list[int] | None:
        """img2dataset's ``successes`` from each shard's ``<shard>_stats.json``, if every shard has one."""
        sizes = []
        for shard in self.shards:
            stats = Path(shard.removesuffix(".tar") + "_stats.json")
            try:
                sizes.append(int(json.loads(stats.read_text())["successes"]))
            except (OSError, ValueError, KeyError, TypeError):
                return None
        return sizes

    def fingerprint(self) -> dict[str, Any]:
        digest = hashlib.sha256()
        for shard in self.shards:
            digest.update(f"{shard}\t{os.path.getsize(shard)}\n".encode())
        return {"kind": self.kind, "pattern": self.pattern, "shards": len(self.shards), "sha256": digest.hexdigest()}

    def describe(self) -> str:
        return f"tar shards {self.pattern} ({len(self.shards):,} shards)"
