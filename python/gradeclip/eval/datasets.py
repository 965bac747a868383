"""Readers for the dataset layouts the paper evaluated on.

- :class:`ImageFolder`: an ImageNet-style folder, one sub-folder per class (e.g. ImageNet's
  ``val/n01440764/…JPEG``), with an optional class index file; for zero-shot classification.
- :class:`CaptionTable`: an image–caption table (CSV, TSV or parquet; one row per caption, an
  image may have several rows); for image–text retrieval (e.g. MS COCO Karpathy split).
- :class:`MaskFolder`: an image folder and a mask folder with the same relative paths (masks as
  PNG: binary/greyscale, or ImageNet-S style RGB with the class id in ``R + 256·G``); for
  localisation (e.g. ImageNet-S).

Every dataset is a sequence of :class:`Sample` in a fixed (sorted) order; ``sample.index`` is its
position, which also names its deletion fill stream, so results do not depend on chunking.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.samples import IMAGE_EXTENSIONS
from ..data.table import CAPTION_COLUMNS, IMAGE_COLUMNS, TABLE_SUFFIXES, read_table
from ..errors import InputError

MASK_FORMATS = ("auto", "binary", "imagenet-s")
#: ImageNet-S class ids that are not an object: 0 = background, 1000 = ignored
IMAGENET_S_NOT_OBJECT = (0, 1000)


@dataclass(frozen=True)
class Sample:
    """One evaluation item.

    Attributes:
        index: position in the dataset (also its deletion fill stream).
        key: a stable id (the path relative to the dataset root).
        image: the image file.
        label: class index (classification / localisation with classes), else None.
        caption: the caption (retrieval), else None.
        mask: the mask file (localisation), else None.
    """

    index: int
    key: str
    image: Path
    label: int | None = None
    caption: str | None = None
    mask: Path | None = None


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file as uint8 RGB ``[H, W, 3]`` (greyscale, palette and alpha converted)."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read image {os.fspath(path)!r}: {exc}") from exc


def load_mask(path: str | os.PathLike[str], mask_format: str = "auto") -> np.ndarray:
    """A mask PNG as bool ``[H, W]`` (True = object).

    ``mask_format``: ``"binary"`` (non-zero = object, for greyscale / palette / 1-bit masks),
    ``"imagenet-s"`` (RGB with class id ``R + 256·G``; ids 0 and 1000 are not object) or
    ``"auto"`` (ImageNet-S for RGB/RGBA files, binary otherwise).
    """
    if mask_format not in MASK_FORMATS:
        raise InputError(f"mask_format must be one of {', '.join(MASK_FORMATS)}, got {mask_format!r}")
    try:
        with Image.open(path) as img:
            rgb = img.mode in ("RGB", "RGBA")
            if mask_format == "imagenet-s" or (mask_format == "auto" and rgb):
                pixels = np.asarray(img.convert("RGB")).astype(np.int32)
                ids = pixels[..., 0] + 256 * pixels[..., 1]
                return ~np.isin(ids, IMAGENET_S_NOT_OBJECT)
            return np.asarray(img) != 0
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read mask {os.fspath(path)!r}: {exc}") from exc


def _image_files(root: Path) -> list[Path]:
    if not root.is_dir():
        raise InputError(f"{os.fspath(root)!r} is not a folder")
    files = [p for p in root.rglob("*") if p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS and p.is_file()]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def read_class_index(path: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """A class index file → ``(folders, names)`` in label order.

    Formats: JSON ``{"0": ["n01440764", "tench"], …}`` (Keras' ``imagenet_class_index.json``),
    JSON ``{"n01440764": 0, …}``, a JSON list of folder names, or a text file with one class per
    line: ``folder`` or ``folder<whitespace>class name``.
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


def _readable(name: str) -> str:
    return name.replace("_", " ")


class _Samples(Sequence[Sample]):
    samples: list[Sample]
    root: Path

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):  # type: ignore[override]
        return self.samples[i]

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)


def _class_labels(
    root: Path, files: list[Path], class_index: str | os.PathLike[str] | None
) -> tuple[list[int], list[str], list[str]]:
    """Labels of ``files`` from their first folder under ``root``, with the classes' folders and names."""
    folders_of = [p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else None for p in files]
    if any(f is None for f in folders_of):
        raise InputError(f"{os.fspath(root)!r}: every image must sit in a class sub-folder")
    if class_index is not None:
        folders, names = read_class_index(class_index)
    else:
        folders = sorted(set(folders_of))  # type: ignore[arg-type]
        names = [_readable(f) for f in folders]
    label_of = {f: i for i, f in enumerate(folders)}
    unknown = sorted({f for f in folders_of if f not in label_of})  # type: ignore[misc]
    if unknown:
        raise InputError(f"class folders not in the class index: {', '.join(unknown[:5])}{' …' if len(unknown) > 5 else ''}")
    return [label_of[f] for f in folders_of], folders, names  # type: ignore[index]


class ImageFolder(_Samples):
    """An ImageNet-style folder: ``root/<class folder>/<image>``.

    Args:
        root: the folder.
        class_index: optional file giving the label order and names (see
            :func:`read_class_index`); without it, labels follow the sorted folder names (for
            ImageNet's ``n########`` folders that is the standard label order) and names are the
            folder names.
    """

    def __init__(self, root: str | os.PathLike[str], class_index: str | os.PathLike[str] | None = None):
        self.root = Path(root)
        files = _image_files(self.root)
        if not files:
            raise InputError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {os.fspath(self.root)!r}")
        labels, self.class_folders, self.class_names = _class_labels(self.root, files, class_index)
        self.samples = [
            Sample(index=i, key=p.relative_to(self.root).as_posix(), image=p, label=label)
            for i, (p, label) in enumerate(zip(files, labels))
        ]

    def describe(self) -> dict[str, object]:
        return {"kind": "image_folder", "root": os.fspath(self.root), "images": len(self), "classes": len(self.class_names)}


class CaptionTable(_Samples):
    """An image–caption table: one row per caption (CSV, TSV or parquet).

    Args:
        path: ``.csv``, ``.tsv`` or ``.parquet``, read as ``gradeclip explain`` reads tables
            (:func:`gradeclip.data.table.read_table`).
        image_root: folder the image paths are relative to (default: the table's folder).
        image_column, caption_column: column names (default: the first present of
            :data:`gradeclip.data.table.IMAGE_COLUMNS` and :data:`~gradeclip.data.table.CAPTION_COLUMNS`).

    ``images`` lists the distinct images in first-seen order; ``image_of[i]`` is the position in
    ``images`` of row ``i``'s image, so rows sharing an image are each other's ground truth.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        image_root: str | os.PathLike[str] | None = None,
        image_column: str | None = None,
        caption_column: str | None = None,
    ):
        self.path = Path(path)
        self.root = Path(image_root) if image_root is not None else self.path.parent
        columns = _read_table(self.path)
        image_column = _pick_column(columns, image_column, IMAGE_COLUMNS, "image", self.path)
        caption_column = _pick_column(columns, caption_column, CAPTION_COLUMNS, "caption", self.path)
        keys, captions = columns[image_column], columns[caption_column]
        if not keys:
            raise InputError(f"{os.fspath(self.path)!r} has no rows")
        self.images: list[str] = []
        position: dict[str, int] = {}
        self.image_of: list[int] = []
        self.samples = []
        for i, (key, caption) in enumerate(zip(keys, captions)):
            if key is None or caption is None or not str(caption).strip():
                raise InputError(f"{os.fspath(self.path)!r} row {i}: missing image path or empty caption")
            key, caption = str(key), str(caption)
            if key not in position:
                position[key] = len(self.images)
                self.images.append(key)
            self.image_of.append(position[key])
            self.samples.append(Sample(index=i, key=key, image=self.root / key, caption=caption))
        missing = [k for k in self.images if not (self.root / k).is_file()]
        if missing:
            raise InputError(
                f"{len(missing)} images of {os.fspath(self.path)!r} not found under {os.fspath(self.root)!r}, e.g. {missing[0]!r}"
            )

    def describe(self) -> dict[str, object]:
        return {"kind": "caption_table", "path": os.fspath(self.path), "rows": len(self), "images": len(self.images)}


def _read_table(path: Path) -> dict[str, list[object]]:
    """The table's columns as lists (``gradeclip.data``'s reader: CSV/TSV as text, or parquet)."""
    if not path.is_file():
        raise InputError(f"caption table {os.fspath(path)!r} does not exist")
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise InputError(f"caption table must be {', '.join(TABLE_SUFFIXES)}, got {os.fspath(path)!r}")
    return read_table(path).to_pydict()


def _pick_column(columns: dict[str, list[object]], given: str | None, candidates: tuple[str, ...], what: str, path: Path) -> str:
    if given is not None:
        if given not in columns:
            raise InputError(f"{os.fspath(path)!r} has no column {given!r}; columns: {', '.join(columns)}")
        return given
    for name in candidates:
        if name in columns:
            return name
    raise InputError(
        f"{os.fspath(path)!r}: no {what} column (looked for {', '.join(candidates)}); columns: {', '.join(columns)}; name it explicitly"
    )


class MaskFolder(_Samples):
    """Images with object masks: ``images/<rel>.<ext>`` pairs with ``masks/<rel>.png``.

    Args:
        images: the image folder (class sub-folders optional, e.g. ImageNet-S
            ``validation/n01443537/…JPEG``).
        masks: the mask folder with the same relative layout (e.g. ImageNet-S
            ``validation-segmentation/n01443537/…png``).
        class_index: as for :class:`ImageFolder`; used when images sit in class sub-folders.
        mask_format: see :func:`load_mask`.

    Images without a mask file are left out (``missing_masks`` counts them). When every image sits
    in a class sub-folder, samples carry labels and ``class_names`` is set; otherwise labels are
    None and the evaluation needs a text for every image.
    """

    def __init__(
        self,
        images: str | os.PathLike[str],
        masks: str | os.PathLike[str],
        class_index: str | os.PathLike[str] | None = None,
        mask_format: str = "auto",
    ):
        if mask_format not in MASK_FORMATS:
            raise InputError(f"mask_format must be one of {', '.join(MASK_FORMATS)}, got {mask_format!r}")
        self.root = Path(images)
        self.mask_root = Path(masks)
        if not self.mask_root.is_dir():
            raise InputError(f"mask folder {os.fspath(self.mask_root)!r} does not exist")
        self.mask_format = mask_format
        files = _image_files(self.root)
        pairs = [(p, self.mask_root / p.relative_to(self.root).with_suffix(".png")) for p in files]
        kept = [(p, m) for p, m in pairs if m.is_file()]
        self.missing_masks = len(pairs) - len(kept)
        if not kept:
            raise InputError(f"no image under {os.fspath(self.root)!r} has a mask under {os.fspath(self.mask_root)!r}")
        nested = all(len(p.relative_to(self.root).parts) > 1 for p, _ in kept)
        labels: list[int | None]
        if nested:
            found, self.class_folders, names = _class_labels(self.root, [p for p, _ in kept], class_index)
            labels, self.class_names = list(found), names
        else:
            labels, self.class_folders, self.class_names = [None] * len(kept), [], []
        self.samples = [
            Sample(index=i, key=p.relative_to(self.root).as_posix(), image=p, label=label, mask=m)
            for i, ((p, m), label) in enumerate(zip(kept, labels))
        ]

    def describe(self) -> dict[str, object]:
        return {
            "kind": "mask_folder",
            "images": os.fspath(self.root),
            "masks": os.fspath(self.mask_root),
            "pairs": len(self),
            "missing_masks": self.missing_masks,
            "mask_format": self.mask_format,
        }
