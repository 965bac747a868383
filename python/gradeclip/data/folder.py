"""A folder of images, searched recursively; an image's caption, if any, is the text file beside
it with the same stem (``cat.jpg`` + ``cat.txt``, the layout img2dataset's ``files`` output uses)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..errors import InputError
from .samples import IMAGE_EXTENSIONS, IndexedSource, Sample


def _is_image(name: str) -> bool:
    return name.rpartition(".")[2].lower() in IMAGE_EXTENSIONS and "." in name


def read_caption(path: str) -> str | None:
    """The stripped text of a caption file, or None when it is empty or unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read().strip()
    except OSError:
        return None
    return text or None


class FolderSource(IndexedSource):
    """Every image file under ``root`` (by extension, case-insensitive), in sorted order of the
    path relative to ``root``. Entries whose name starts with a dot are skipped, and so is
    ``exclude`` (the store being written, when it lies inside ``root``). Symbolic links to files are
    followed; links to folders are not.

    Keys are the relative paths (``"cats/001.jpg"``).
    """

    kind = "folder"
    has_labels = False

    def __init__(self, root: str | os.PathLike[str], exclude: str | os.PathLike[str] | None = None):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise InputError(f"{self.root} is not a folder")
        skip = Path(exclude).resolve() if exclude is not None else None
        keys: list[str] = []
        captions: list[str | None] = []
        for folder, dirs, files in os.walk(self.root):
            here = Path(folder)
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and here / d != skip)
            names = set(files)
            for name in files:
                if name.startswith(".") or not _is_image(name):
                    continue
                rel = (here / name).relative_to(self.root).as_posix()
                caption = name.rpartition(".")[0] + ".txt"
                keys.append(rel)
                captions.append(str(here / caption) if caption in names else None)
        order = sorted(range(len(keys)), key=keys.__getitem__)
        # Arrow arrays, not Python lists: DataLoader workers share them without copy-on-access growth.
        self._keys = pa.array([keys[i] for i in order], pa.string())
        self._captions = pa.array([captions[i] for i in order], pa.string())
        self.has_captions = self._captions.null_count < len(self._captions)

    def __len__(self) -> int:
        return len(self._keys)

    def samples(self, start: int, stop: int) -> list[Sample]:
        keys = self._keys.slice(start, stop - start).to_pylist()
        captions = self._captions.slice(start, stop - start).to_pylist()
        return [
            Sample(key=key, path=str(self.root / key), caption=None if cap is None else read_caption(cap))
            for key, cap in zip(keys, captions)
        ]

    def fingerprint(self) -> dict[str, Any]:
        digest = hashlib.sha256()
        for key, cap in zip(self._keys.to_pylist(), self._captions.to_pylist()):
            digest.update(f"{key}\t{cap is not None}\n".encode())
        return {"kind": self.kind, "root": str(self.root), "count": len(self), "sha256": digest.hexdigest()}

    def describe(self) -> str:
        return f"folder {self.root} ({len(self):,} images)"
