"""The evaluation's datasets: views over :mod:`gradeclip.data` in the layouts the paper evaluated on.

- :class:`ImageFolder`: an ImageNet-style folder, one sub-folder per class (e.g. ImageNet's
  ``val/n01440764/…JPEG``), with an optional class index file; for zero-shot classification.
- :class:`CaptionTable`: an image–caption table (CSV, TSV or parquet; one row per caption, an
  image may have several rows); for image–text retrieval (e.g. MS COCO Karpathy split).
- :class:`MaskFolder`: an image folder and a mask folder with the same relative paths (masks as
  PNG: binary/greyscale, or ImageNet-S style RGB with the class id in ``R + 256·G``); for
  localisation (e.g. ImageNet-S).

Every dataset is a sequence of :class:`gradeclip.data.Sample` in a fixed (sorted) order;
``sample.index`` is its position, which also names its deletion fill stream, so results do not
depend on chunking. ``describe()`` is the dataset's identity in a result's settings.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..data import IMAGE_EXTENSIONS, MASK_FORMATS, TABLE_SUFFIXES, FolderSource, Sample, TableSource
from ..errors import InputError


class _Samples(Sequence[Sample]):
    samples: list[Sample]
    root: Path

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):  # type: ignore[override]
        return self.samples[i]

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)


def _all(source: FolderSource | TableSource) -> list[Sample]:
    return source.samples(0, len(source))


class ImageFolder(_Samples):
    """An ImageNet-style folder: ``root/<class folder>/<image>``, read by
    :class:`gradeclip.data.FolderSource` with ``labels="folders"``.

    Args:
        root: the folder.
        class_index: optional file giving the label order and names (see
            :func:`gradeclip.data.read_class_index`); without it, labels follow the sorted folder
            names (for ImageNet's ``n########`` folders that is the standard label order) and names
            are the folder names.
    """

    def __init__(self, root: str | os.PathLike[str], class_index: str | os.PathLike[str] | None = None):
        self.root = Path(root)
        source = FolderSource(root, labels="folders", class_index=class_index)
        if not len(source):
            raise InputError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {os.fspath(self.root)!r}")
        self.class_names = source.class_names
        self.samples = _all(source)

    def describe(self) -> dict[str, object]:
        return {"kind": "image_folder", "root": os.fspath(self.root), "images": len(self), "classes": len(self.class_names)}


class CaptionTable(_Samples):
    """An image–caption table: one row per caption (CSV, TSV or parquet), read by
    :class:`gradeclip.data.TableSource`.

    Args:
        path: ``.csv``, ``.tsv`` or ``.parquet``.
        image_root: folder the image paths are relative to (default: the table's folder).
        image_column, caption_column: column names (default: the first present of
            :data:`gradeclip.data.table.IMAGE_COLUMNS` and :data:`~gradeclip.data.table.CAPTION_COLUMNS`).

    A sample's key is its image path as written in the table. ``images`` lists the distinct images
    in first-seen order; ``image_of[i]`` is the position in ``images`` of row ``i``'s image, so rows
    sharing an image are each other's ground truth.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        image_root: str | os.PathLike[str] | None = None,
        image_column: str | None = None,
        caption_column: str | None = None,
    ):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"caption table {os.fspath(path)!r} does not exist")
        if self.path.suffix.lower() not in TABLE_SUFFIXES:
            raise InputError(f"caption table must be {', '.join(TABLE_SUFFIXES)}, got {os.fspath(path)!r}")
        source = TableSource(
            path, image_column=image_column, caption_column=caption_column, images_root=image_root, require_captions=True
        )
        self.root = source.root
        names = source.image_names()
        if not names:
            raise InputError(f"{os.fspath(self.path)!r} has no rows")
        self.images: list[str] = []
        position: dict[str, int] = {}
        self.image_of: list[int] = []
        self.samples = []
        for name, sample in zip(names, _all(source)):
            if sample.caption is None:
                raise InputError(f"{os.fspath(self.path)!r} row {sample.index}: empty caption")
            if name not in position:
                position[name] = len(self.images)
                self.images.append(name)
            self.image_of.append(position[name])
            self.samples.append(Sample(key=name, path=sample.path, caption=sample.caption, index=sample.index))
        missing = [k for k in self.images if not (self.root / k).is_file()]
        if missing:
            raise InputError(
                f"{len(missing)} images of {os.fspath(self.path)!r} not found under {os.fspath(self.root)!r}, e.g. {missing[0]!r}"
            )

    def describe(self) -> dict[str, object]:
        return {"kind": "caption_table", "path": os.fspath(self.path), "rows": len(self), "images": len(self.images)}


class MaskFolder(_Samples):
    """Images with object masks: ``images/<rel>.<ext>`` pairs with ``masks/<rel>.png``, read by
    :class:`gradeclip.data.FolderSource` with ``masks=``.

    Args:
        images: the image folder (class sub-folders optional, e.g. ImageNet-S
            ``validation/n01443537/…JPEG``).
        masks: the mask folder with the same relative layout (e.g. ImageNet-S
            ``validation-segmentation/n01443537/…png``).
        class_index: as for :class:`ImageFolder`; used when images sit in class sub-folders.
        mask_format: see :func:`gradeclip.data.load_mask`.

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
        self.mask_format = mask_format
        source = FolderSource(images, labels="auto", class_index=class_index, masks=masks)
        self.missing_masks = source.missing_masks
        self.class_names = source.class_names
        self.samples = _all(source)

    def describe(self) -> dict[str, object]:
        return {
            "kind": "mask_folder",
            "images": os.fspath(self.root),
            "masks": os.fspath(self.mask_root),
            "pairs": len(self),
            "missing_masks": self.missing_masks,
            "mask_format": self.mask_format,
        }
