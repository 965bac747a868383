"""A folder of images, searched recursively; an image's caption, if any, is the text file beside
it with the same stem (``cat.jpg`` + ``cat.txt``, the layout img2dataset's ``files`` output uses).

Optionally, class sub-folders give labels (``root/<class folder>/<image>``, ImageNet's layout,
with an optional class index file naming the classes) and a mask folder with the same relative
layout gives each image its object mask (``masks/<rel>.png``, ImageNet-S's layout).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..errors import InputError
from .images import is_image_name
from .samples import IndexedSource, Sample

#: how :class:`FolderSource` labels images: not at all, by class sub-folder (every image must sit
#: in one), or by class sub-folder when every image sits in one
LABELS = ("none", "folders", "auto")


def read_caption(path: str) -> str | None:
    """The stripped text of a caption file, or None when it is empty or unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read().strip()
    except OSError:
        return None
    return text or None


def _readable(name: str) -> str:
    return name.replace("_", " ")


def read_class_index(path: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """A class index file → ``(folders, names)`` in label order.

    Formats: JSON ``{"0": ["n01440764", "tench"], …}`` (Keras' ``imagenet_class_index.json``),
    JSON ``{"n01440764": 0, …}``, a JSON list of folder names, or a text file with one class per
    line: ``folder`` or ``folder<whitespace>class name``. Names read ``_`` as a space.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read class index {os.fspath(path)!r}: {exc}") from exc
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"class index {os.fspath(path)!r} is not valid JSON: {exc}") from exc
        if isinstance(data, list):
            folders = [str(f) for f in data]
            return folders, [_readable(f) for f in folders]
        if isinstance(data, dict) and all(isinstance(v, list) and len(v) == 2 for v in data.values()):
            rows = sorted(((int(k), str(v[0]), str(v[1])) for k, v in data.items()))
            if [r[0] for r in rows] != list(range(len(rows))):
                raise InputError(f"class index {os.fspath(path)!r}: labels must be 0..{len(rows) - 1}")
            return [r[1] for r in rows], [_readable(r[2]) for r in rows]
        if isinstance(data, dict) and all(isinstance(v, int) for v in data.values()):
            by_label = sorted((v, k) for k, v in data.items())
            if [v for v, _ in by_label] != list(range(len(by_label))):
                raise InputError(f"class index {os.fspath(path)!r}: labels must be 0..{len(by_label) - 1}")
            return [k for _, k in by_label], [_readable(k) for _, k in by_label]
        raise InputError(f"class index {os.fspath(path)!r}: unrecognised JSON layout")
    folders, names = [], []
    for line in text.splitlines():
        parts = line.strip().split(maxsplit=1)
        if not parts:
            continue
        folders.append(parts[0])
        names.append(_readable(parts[1] if len(parts) > 1 else parts[0]))
    return folders, names


def _class_labels(root: Path, keys: list[str], class_index: str | os.PathLike[str] | None) -> tuple[list[int], list[str]]:
    """Labels of ``keys`` (relative paths) from their first folder, and the class names in label order."""
    if any("/" not in key for key in keys):
        raise InputError(f"{os.fspath(root)!r}: every image must sit in a class sub-folder")
    folder_of = [key.split("/", 1)[0] for key in keys]
    if class_index is not None:
        folders, names = read_class_index(class_index)
    else:
        folders = sorted(set(folder_of))
        names = [_readable(f) for f in folders]
    label_of = {f: i for i, f in enumerate(folders)}
    unknown = sorted({f for f in folder_of if f not in label_of})
    if unknown:
        raise InputError(f"class folders not in the class index: {', '.join(unknown[:5])}{' …' if len(unknown) > 5 else ''}")
    return [label_of[f] for f in folder_of], names


class FolderSource(IndexedSource):
    """Every image file under ``root`` (by extension, case-insensitive), in sorted order of the
    path relative to ``root``. Entries whose name starts with a dot are skipped, and so is
    ``exclude`` (the store being written, when it lies inside ``root``). Symbolic links to files are
    followed; links to folders are not.

    Args:
        root: the folder.
        exclude: a folder inside ``root`` to skip.
        labels: one of :data:`LABELS`: ``"folders"`` labels each image by its class sub-folder
            (``Sample.label`` an ``int``; ``class_names`` in label order), ``"auto"`` does so when
            every image sits in one, ``"none"`` (the default) gives no labels.
        class_index: with labels, a file giving the label order and names
            (:func:`read_class_index`); without it, labels follow the sorted folder names and the
            names are the folder names (``_`` read as a space).
        masks: a folder of object masks with the same relative layout: image ``<rel>.<ext>`` pairs
            with ``masks/<rel>.png`` (``Sample.mask``); images without a mask are left out and
            counted in ``missing_masks``.

    Keys are the relative paths (``"cats/001.jpg"``); ``Sample.index`` is the position.
    """

    kind = "folder"

    def __init__(
        self,
        root: str | os.PathLike[str],
        exclude: str | os.PathLike[str] | None = None,
        *,
        labels: str = "none",
        class_index: str | os.PathLike[str] | None = None,
        masks: str | os.PathLike[str] | None = None,
    ):
        if labels not in LABELS:
            raise InputError(f"labels must be one of {', '.join(LABELS)}, got {labels!r}")
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
                if name.startswith(".") or not is_image_name(name):
                    continue
                rel = (here / name).relative_to(self.root).as_posix()
                caption = name.rpartition(".")[0] + ".txt"
                keys.append(rel)
                captions.append(str(here / caption) if caption in names else None)
        order = sorted(range(len(keys)), key=keys.__getitem__)
        keys, captions = [keys[i] for i in order], [captions[i] for i in order]
        self.mask_root: Path | None = None
        self.missing_masks = 0
        mask_files: list[str] | None = None
        if masks is not None:
            self.mask_root = Path(masks).resolve()
            if not self.mask_root.is_dir():
                raise InputError(f"mask folder {os.fspath(masks)!r} does not exist")
            pairs = [(n, str(self.mask_root / Path(key).with_suffix(".png"))) for n, key in enumerate(keys)]
            kept = [(n, m) for n, m in pairs if os.path.isfile(m)]
            self.missing_masks = len(pairs) - len(kept)
            if not kept:
                raise InputError(f"no image under {os.fspath(root)!r} has a mask under {os.fspath(masks)!r}")
            keys, captions = [keys[n] for n, _ in kept], [captions[n] for n, _ in kept]
            mask_files = [m for _, m in kept]
        label_list: list[int] | None = None
        #: class names in label order (empty without labels)
        self.class_names: list[str] = []
        if labels == "folders" or (labels == "auto" and keys and all("/" in key for key in keys)):
            label_list, self.class_names = _class_labels(Path(root), keys, class_index)
        # Arrow arrays, not Python lists: DataLoader workers share them without copy-on-access growth.
        self._keys = pa.array(keys, pa.string())
        self._captions = pa.array(captions, pa.string())
        self._masks = None if mask_files is None else pa.array(mask_files, pa.string())
        self._labels = None if label_list is None else pa.array(label_list, pa.int64())
        self.has_captions = self._captions.null_count < len(self._captions)

    def __len__(self) -> int:
        return len(self._keys)

    def _column(self, array: pa.Array | None, start: int, stop: int) -> list[Any]:
        return [None] * (stop - start) if array is None else array.slice(start, stop - start).to_pylist()

    def samples(self, start: int, stop: int) -> list[Sample]:
        columns = (self._column(a, start, stop) for a in (self._keys, self._captions, self._labels, self._masks))
        return [
            Sample(key=key, path=str(self.root / key), caption=None if cap is None else read_caption(cap), label=label, mask=mask, index=start + i)
            for i, (key, cap, label, mask) in enumerate(zip(*columns))
        ]

    def fingerprint(self) -> dict[str, Any]:
        digest = hashlib.sha256()
        for key, cap in zip(self._keys.to_pylist(), self._captions.to_pylist()):
            digest.update(f"{key}\t{cap is not None}\n".encode())
        out = {"kind": self.kind, "root": str(self.root), "count": len(self), "sha256": digest.hexdigest()}
        if self._labels is not None:
            out["labels"] = hashlib.sha256(json.dumps([self.class_names, self._labels.to_pylist()]).encode()).hexdigest()
        if self.mask_root is not None:
            out["masks"] = str(self.mask_root)
        return out

    def describe(self) -> str:
        return f"folder {self.root} ({len(self):,} images)"
