"""Input sources for dataset runs: a folder of images, a table, or webdataset tar shards."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError
from .folder import FolderSource
from .samples import IMAGE_EXTENSIONS, IndexedSource, Sample, ShardedSource, ShardError, Source, UnreadableImage, decode_image
from .table import TABLE_SUFFIXES, TableSource
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
            has_images = any(n.rpartition(".")[2].lower() in IMAGE_EXTENSIONS for n in names if "." in n)
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
    "open_source",
]
