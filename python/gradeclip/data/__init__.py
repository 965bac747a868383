"""gradeclip's data layer: every way images (with captions, labels, masks) come in.

- :class:`Sample`: one image and what its source knows about it (key, caption, label, mask, index).
- Sources: :class:`FolderSource` (a folder of images, with ``.txt`` captions, optional class
  sub-folder labels and a mask folder), :class:`TableSource` (CSV/TSV/parquet, one row per
  image), :class:`TarSource` (webdataset shards), opened by name with :func:`open_source`.
- Decoding: :func:`decode_image`, :func:`load_image`, :func:`load_images` (the one image
  decoder: EXIF orientation, RGB), :func:`load_mask`; an unusable file raises
  :class:`~gradeclip.errors.UnreadableImage`.
- Tables: :func:`read_table` and :func:`pick_column` (the one column rule); class names:
  :func:`read_class_index`.

Dataset runs (:mod:`gradeclip.pipeline`) and evaluation (:mod:`gradeclip.eval`, whose datasets are
views over these sources) read through this package.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError, UnreadableImage
from .folder import LABELS, FolderSource, read_class_index
from .images import IMAGE_EXTENSIONS, MASK_FORMATS, decode_image, is_image_name, load_image, load_images, load_mask
from .samples import IndexedSource, Sample, ShardedSource, ShardError, Source
from .table import TABLE_SUFFIXES, TableSource, pick_column, read_table
from .tars import TAR_SUFFIXES, TarSource

FORMATS = ("auto", "folder", "table", "tar")


def open_source(
    spec: str | os.PathLike[str],
    *,
    format: str = "auto",
    exclude: str | os.PathLike[str] | None = None,
    image_column: str | None = None,
    caption_column: str | None = None,
    label_column: str | None = None,
    key_column: str | None = None,
    images_root: str | os.PathLike[str] | None = None,
) -> Source:
    """Open the input ``spec`` names.

    With ``format="auto"``: a name ending in ``.csv``/``.tsv``/``.parquet`` is a table; one naming
    tar files (``.tar``, ``.tar.gz``, ``.tgz``, brace patterns allowed) is a set of shards; a folder
    is a folder of images, or of shards when it holds tar files and no images at its top level.
    ``exclude`` (a folder to skip, e.g. the store) applies to folders; the column names and
    ``images_root`` to tables.
    """
    if format not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    spec = os.fspath(spec)
    if format == "auto":
        path = Path(spec)
        if spec.lower().endswith(TABLE_SUFFIXES):
            format = "table"
        elif spec.endswith(TAR_SUFFIXES):
            format = "tar"
        elif path.is_dir():
            names = [p.name for p in path.iterdir()]
            has_tars = any(n.endswith(TAR_SUFFIXES) for n in names)
            has_images = any(is_image_name(n) for n in names)
            format = "tar" if has_tars and not has_images else "folder"
        else:
            raise InputError(
                f"cannot tell what {spec!r} is: give a folder of images, a .csv/.tsv/.parquet table, "
                "or tar shards (e.g. 'shards/{00000..00099}.tar')"
            )
    if format == "folder":
        return FolderSource(spec, exclude=exclude)
    if format == "table":
        return TableSource(
            spec, image_column=image_column, caption_column=caption_column, label_column=label_column, key_column=key_column, images_root=images_root
        )
    return TarSource(spec)


__all__ = [
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "LABELS",
    "MASK_FORMATS",
    "FolderSource",
    "IndexedSource",
    "Sample",
    "ShardError",
    "ShardedSource",
    "Source",
    "TableSource",
    "TarSource",
    "UnreadableImage",
    "decode_image",
    "load_image",
    "load_images",
    "load_mask",
    "open_source",
    "pick_column",
    "read_class_index",
    "read_table",
]
