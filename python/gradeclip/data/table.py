"""A table (CSV, TSV or parquet) with one row per sample: an image-path column and optional
caption, label and key columns. Relative image paths are resolved against ``images_root``
(default: the table's own folder)."""

from __future__ import annotations

import csv
import hashlib
import os
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError
from .samples import IndexedSource, Sample

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")
#: column names tried, in order, when a column is not named explicitly
IMAGE_COLUMNS = ("image", "image_path", "filepath", "file_path", "path", "file", "filename")
CAPTION_COLUMNS = ("caption", "text", "title")
LABEL_COLUMNS = ("label", "class", "class_name")
KEY_COLUMNS = ("key",)


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path: str) -> bool:
    """Whether an image column's entry is a URL (``scheme://...``: http, https, s3, gs, ...)."""
    return _URL.match(path) is not None


def read_table(path: Path) -> pa.Table:
    """Every column of a CSV/TSV (as strings, header row required) or parquet file."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        from pyarrow import csv as pacsv

        delimiter = "\t" if suffix == ".tsv" else ","
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f, delimiter=delimiter), None)
        if not header:
            raise InputError(f"table {path} is empty: a header row naming the columns is needed")
        return pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(column_types={name: pa.string() for name in header}),
        )
    except InputError:
        raise
    except (OSError, pa.ArrowException, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read table {path}: {exc}") from exc


def pick_column(table: pa.Table, given: str | None, candidates: tuple[str, ...], what: str, required: bool, where: str) -> str | None:
    """The column holding ``what`` (``"image"``, ``"caption"``, …) — the one rule every table reader uses:
    the column named ``given`` (which must exist), else the first of ``candidates`` present, else
    None (or, when ``required``, an :class:`InputError` naming the ``--<what>-column`` flag).
    ``where`` names the table in messages."""
    if given is not None:
        if given not in table.column_names:
            raise InputError(f"{where} has no {what} column {given!r}; its columns: {', '.join(table.column_names)}")
        return given
    for name in candidates:
        if name in table.column_names:
            return name
    if required:
        raise InputError(
            f"cannot tell which column holds the {what}s: {where} has no {what} column (tried {', '.join(candidates)}); "
            f"name it with --{what}-column ({what}_column= in Python). Its columns: {', '.join(table.column_names)}"
        )
    return None


def _strings(table: pa.Table, name: str | None) -> pa.Array | None:
    if name is None:
        return None
    column = table.column(name).combine_chunks()
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type) or pa.types.is_struct(column.type):
        raise InputError(f"column {name!r} holds {column.type}, not text; image bytes inside tables are not supported (use files or tar shards)")
    return column.cast(pa.string())


class TableSource(IndexedSource):
    """Samples from a CSV/TSV/parquet table, in row order.

    Args:
        path: the table file.
        image_column, caption_column, label_column, key_column: column names; when not given, the
            first present of :data:`IMAGE_COLUMNS`, :data:`CAPTION_COLUMNS`, :data:`LABEL_COLUMNS`,
            :data:`KEY_COLUMNS` is used (the caption, label and key columns are optional).
        images_root: folder that relative image paths are resolved against.
        require_captions: make the caption column required (image–caption tables).

    Keys come from the key column (values must be unique) or are the row number (``"0"``, ``"1"``, …).
    """

    kind = "table"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        image_column: str | None = None,
        caption_column: str | None = None,
        label_column: str | None = None,
        key_column: str | None = None,
        images_root: str | os.PathLike[str] | None = None,
        require_captions: bool = False,
    ):
        self.path = Path(path).resolve()
        if not self.path.is_file():
            raise InputError(f"table {self.path} does not exist")
        table = read_table(self.path)
        where = f"table {self.path}"
        image = pick_column(table, image_column, IMAGE_COLUMNS, "image", True, where)
        caption = pick_column(table, caption_column, CAPTION_COLUMNS, "caption", require_captions, where)
        label = pick_column(table, label_column, LABEL_COLUMNS, "label", False, where)
        key = pick_column(table, key_column, KEY_COLUMNS, "key", False, where)
        self.columns = {"image": image, "caption": caption, "label": label, "key": key}
        self.root = Path(images_root).resolve() if images_root is not None else self.path.parent
        paths = _strings(table, image)
        assert paths is not None
        if paths.null_count:
            raise InputError(f"column {image!r} has {paths.null_count} empty cell(s); every row needs an image path")
        first = paths[0].as_py() if len(paths) else ""
        if is_url(first):
            raise InputError(f"column {image!r} holds URLs ({first!r}); gradeclip reads local files only (download with img2dataset first)")
        keys = _strings(table, key)
        if keys is None:
            keys = pa.array([str(i) for i in range(table.num_rows)], pa.string())
        else:
            if keys.null_count:
                raise InputError(f"key column {key!r} has {keys.null_count} empty cell(s)")
            counts = pc.value_counts(keys)
            duplicates = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
            if len(duplicates):
                raise InputError(f"key column {key!r} repeats keys, e.g. {duplicates.to_pylist()[:5]}; keys must be unique")
        self._keys = keys
        self._paths = paths
        self._captions = _strings(table, caption)
        self._labels = _strings(table, label)
        self.has_captions = self._captions is not None

    def __len__(self) -> int:
        return len(self._keys)

    def _column(self, array: pa.Array | None, start: int, stop: int) -> list[Any]:
        return [None] * (stop - start) if array is None else array.slice(start, stop - start).to_pylist()

    def samples(self, start: int, stop: int) -> list[Sample]:
        rows = zip(
            self._column(self._keys, start, stop),
            self._column(self._paths, start, stop),
            self._column(self._captions, start, stop),
            self._column(self._labels, start, stop),
        )
        return [
            Sample(
                key=key,
                path=path if is_url(path) else str(self.root / path),
                caption=(caption or "").strip() or None,
                label=(label or "").strip() or None,
                problem=f"URLs are not fetched ({path!r}): gradeclip reads local files only (download with img2dataset first)" if is_url(path) else None,
                index=start + i,
            )
            for i, (key, path, caption, label) in enumerate(rows)
        ]

    def image_names(self) -> list[str]:
        """The image column as written (paths relative to ``root``), in row order."""
        return self._paths.to_pylist()

    def fingerprint(self) -> dict[str, Any]:
        digest = hashlib.sha256()
        for name, array in (("key", self._keys), ("path", self._paths), ("caption", self._captions), ("label", self._labels)):
            digest.update(f"\x1e{name}".encode())
            for value in [] if array is None else array.to_pylist():
                digest.update(b"\x00" if value is None else f"\x1f{value}".encode())
        return {"kind": self.kind, "table": str(self.path), "root": str(self.root), "columns": self.columns, "count": len(self), "sha256": digest.hexdigest()}

    def describe(self) -> str:
        return f"table {self.path} ({len(self):,} rows, image column {self.columns['image']!r})"
