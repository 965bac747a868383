"""The on-disk store of a dataset run, and its reader :class:`Store`.

Layout of a store folder ``DIR``::

    DIR/manifest.json        model (its weights and their SHA-256s), options, input, package versions, counts, whether complete
    DIR/index.parquet        one row per explained (image, text) pair — written last, only when complete
    DIR/maps/<chunk>.npy     raw grid maps of one chunk: a flat float16 array (np.load(mmap_mode="r"))
    DIR/parts/<chunk>.parquet  the index rows of one chunk; its presence marks the chunk complete
    DIR/texts.npy            the shared text (or class) embeddings [T, E] float32, when there are any
    DIR/overlays/<chunk>/    overlay PNGs, when asked for

A row's map is ``maps/<chunk>.npy[offset : offset + height * width].reshape(height, width)``.
Every file is written under a temporary name and renamed when complete (:mod:`gradeclip.files`),
the map shard before its index part, so a process killed at any moment leaves either a complete
file or an obviously temporary one; a chunk counts as done only when its part exists.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import InputError, StoreError
from .files import is_temporary, write_json, write_with

FORMAT = "gradeclip-store/1"
MANIFEST = "manifest.json"
INDEX = "index.parquet"
TEXTS = "texts.npy"
MAPS = "maps"
PARTS = "parts"
OVERLAYS = "overlays"
UNIT_DONE = b"gradeclip.unit_done"
ROW_GROUP = 65536  # rows per row group of the merged index

#: the index columns, in order
INDEX_SCHEMA = pa.schema(
    [
        ("key", pa.string()),  # the sample's key in its source
        ("path", pa.string()),  # the image file, or "shard.tar#member"
        ("text", pa.string()),  # the text explained (caption, shared text, or class name)
        ("text_index", pa.int32()),  # index in the shared text / class list; null for captions
        ("prediction_rank", pa.int16()),  # zero-shot: 1 = top prediction; null otherwise
        ("is_label", pa.bool_()),  # zero-shot: the text is the sample's ground-truth class
        ("label", pa.string()),  # the sample's label as the source gives it
        ("score", pa.float32()),  # the score the method explains
        ("model_score", pa.float32()),  # the unmodified model's cosine score
        ("shard", pa.string()),  # the map's shard, relative to the store ("maps/c0000000.npy")
        ("offset", pa.int64()),  # first element of the map in its flat shard
        ("height", pa.int32()),  # map grid height
        ("width", pa.int32()),  # map grid width
        ("image_height", pa.int32()),  # the decoded source image's size
        ("image_width", pa.int32()),
        ("input_height", pa.int32()),  # the model input the map was made at (native resolution: per image)
        ("input_width", pa.int32()),
        ("overlay", pa.string()),  # the overlay PNG, relative to the store ("overlays/c0000000/000003-0.png")
        ("words", pa.list_(pa.string())),  # the text's words (with --text-maps)
        ("word_importance", pa.list_(pa.float32())),  # each word's importance, summing to 1 (or all 0)
        ("status", pa.string()),  # "ok" or "error"
        ("error", pa.string()),  # why the pair could not be explained
        ("chunk", pa.string()),  # the unit of work that wrote the row
        ("position", pa.int32()),  # the sample's position within its chunk
        ("warnings", pa.list_(pa.string())),  # what to know about the row: a truncated text, an all-zero map (null: none)
    ]
)


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The store's manifest, or None when there is none. Raises :class:`StoreError` if unreadable."""
    path = root / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path} is unreadable: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise StoreError(f"{path} is not a {FORMAT} manifest")
    return manifest


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _short(value: Any, width: int = 120) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[: width - 3] + "..."


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [
        f"  {name}: store has {_short(old.get(name))}, this run has {_short(new.get(name))}"
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    ]


def _remove_temporaries(folder: Path) -> None:
    """Delete what interrupted writes left in ``folder`` (see :func:`gradeclip.files.is_temporary`)."""
    if folder.is_dir():
        for path in folder.iterdir():
            if is_temporary(path.name):
                path.unlink(missing_ok=True)


class StoreWriter:
    """Writes a store: opened once per run by every rank, prepared by one (:meth:`prepare`)."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    def prepare(self, config: dict[str, Any], *, overwrite: bool, extra: dict[str, Any]) -> bool:
        """Make ``root`` a store for ``config`` (JSON-able: model, options, input fingerprint …).

        A new or empty folder becomes a store. A store made with the same ``config`` is resumed:
        leftover temporary files are removed, finished chunks are kept. A store made with another
        ``config`` is refused unless ``overwrite``, which deletes the store's own files (nothing
        else in the folder). ``extra`` (versions, run settings) goes into the manifest unchecked.

        Returns:
            whether an existing store is resumed.

        Raises:
            StoreError: the folder is a store for another config (without ``overwrite``), or holds
                files that are not a store's.
        """
        config = json.loads(json.dumps(config))
        manifest = read_manifest(self.root) if self.root.is_dir() else None
        resumed = False
        if manifest is not None:
            if manifest.get("config") == config:
                resumed = True
            elif overwrite:
                self.clear()
            else:
                diff = "\n".join(_differences(manifest.get("config", {}), config))
                older = "parameters_sha256" not in manifest.get("config", {})
                why = " (by an older gradeclip, which did not record the model's identity)" if older else ""
                raise StoreError(
                    f"{self.root} holds a store made{why} with different settings:\n{diff}\n"
                    "Use another --out folder, or --overwrite to delete that store and start again."
                )
        elif self.root.is_dir() and any(self.root.iterdir()):
            ours = any((self.root / name).exists() for name in (INDEX, MAPS, PARTS, TEXTS, OVERLAYS))
            if not (ours and overwrite):
                what = "a store without its manifest (an interrupted --overwrite?)" if ours else "files that are not a gradeclip store"
                hint = " Use --overwrite to delete it." if ours else " Choose a new or empty folder."
                raise StoreError(f"{self.root} holds {what}.{hint}")
            self.clear()
        (self.root / MAPS).mkdir(parents=True, exist_ok=True)
        (self.root / PARTS).mkdir(exist_ok=True)
        for folder in (self.root, self.root / MAPS, self.root / PARTS, *(self.root / OVERLAYS).glob("*")):
            _remove_temporaries(folder)
        if resumed:
            assert manifest is not None
            manifest.update(extra, complete=False, resumed=_now())
        else:
            manifest = {"format": FORMAT, "config": config, "complete": False, "created": _now(), **extra}
        write_json(self.root / MANIFEST, manifest, sort_keys=True)
        (self.root / INDEX).unlink(missing_ok=True)  # written again when this run completes
        return resumed

    def clear(self) -> None:
        """Delete the store's own files (the manifest last), leaving anything else in the folder."""
        (self.root / INDEX).unlink(missing_ok=True)
        (self.root / TEXTS).unlink(missing_ok=True)
        for name in (PARTS, MAPS, OVERLAYS):
            shutil.rmtree(self.root / name, ignore_errors=True)
        (self.root / MANIFEST).unlink(missing_ok=True)

    def completed(self) -> dict[str, bool]:
        """Every finished chunk, mapped to whether it also finished its unit of work (the last
        chunk of a tar shard)."""
        done = {}
        for path in (self.root / PARTS).glob("*.parquet"):
            metadata = pq.read_schema(path).metadata or {}
            done[path.stem] = metadata.get(UNIT_DONE) == b"1"
        return done

    def commit(self, chunk: ChunkBuffer, unit_done: bool) -> None:
        """Write a finished chunk: its map shard, then its index part (which marks it done)."""
        table = chunk.table()
        if chunk.maps:
            flat = np.concatenate([m.reshape(-1) for m in chunk.maps]).astype(np.float16, copy=False)
            write_with(self.root / MAPS / f"{chunk.name}.npy", lambda f: np.save(f, flat, allow_pickle=False))
        metadata = {UNIT_DONE: b"1" if unit_done else b"0"}
        write_with(self.root / PARTS / f"{chunk.name}.parquet", lambda f: pq.write_table(table.replace_schema_metadata(metadata), f))

    def save_texts(self, embeddings: np.ndarray) -> None:
        """Keep the shared text embeddings ``[T, E]`` float32 for resumed runs and other ranks."""
        write_with(self.root / TEXTS, lambda f: np.save(f, embeddings.astype(np.float32), allow_pickle=False))

    def load_texts(self) -> np.ndarray | None:
        """The saved text embeddings ``[T, E]`` float32, or None."""
        path = self.root / TEXTS
        return np.load(path, allow_pickle=False) if path.exists() else None

    def merge(self, extra: dict[str, Any]) -> dict[str, int]:
        """Join every chunk's part, in chunk order, into ``index.parquet``; then mark the manifest
        complete with the counts (and ``extra``). Returns the counts."""
        parts = sorted((self.root / PARTS).glob("*.parquet"))
        counts = {"chunks": len(parts), "rows": 0, "ok": 0, "errors": 0, "samples": 0, "failed_samples": 0}

        def write(f: IO[bytes]) -> None:
            with pq.ParquetWriter(f, INDEX_SCHEMA) as writer:
                pending: list[pa.Table] = []
                for path in parts:
                    table = pq.read_table(path).replace_schema_metadata(None)
                    _count(table, counts)
                    pending.append(table)
                    if sum(t.num_rows for t in pending) >= ROW_GROUP:
                        writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP)
                        pending = []
                if pending:
                    writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP)

        write_with(self.root / INDEX, write)
        manifest = read_manifest(self.root) or {}
        manifest.update(extra, complete=True, finished=_now(), counts=counts)
        write_json(self.root / MANIFEST, manifest, sort_keys=True)
        return counts


def _count(table: pa.Table, counts: dict[str, int]) -> None:
    status = table.column("status").to_pylist()
    chunk = table.column("chunk").to_pylist()
    position = table.column("position").to_pylist()
    samples: dict[tuple[str, int], bool] = {}
    for s, c, p in zip(status, chunk, position):
        samples[(c, p)] = samples.get((c, p), False) or s == "ok"
    counts["rows"] += len(status)
    counts["ok"] += status.count("ok")
    counts["errors"] += len(status) - status.count("ok")
    counts["samples"] += len(samples)
    counts["failed_samples"] += sum(not ok for ok in samples.values())


class ChunkBuffer:
    """The rows and maps of one chunk being filled, in row order."""

    def __init__(self, name: str):
        self.name = name
        self.columns: dict[str, list[Any]] = {field.name: [] for field in INDEX_SCHEMA}
        self.maps: list[np.ndarray] = []
        self._offset = 0

    def __len__(self) -> int:
        return len(self.columns["key"])

    def add(self, *, key: str, path: str, position: int, map: np.ndarray | None = None, status: str = "ok", **values: Any) -> None:
        """Append one row. ``map`` is the raw grid map ``[h, w]`` (stored as float16); the other
        keyword arguments are index columns (missing ones are null)."""
        unknown = set(values) - set(self.columns)
        if unknown:
            raise InputError(f"unknown index columns: {', '.join(sorted(unknown))}")
        row = dict(values, key=key, path=path, position=position, status=status, chunk=self.name)
        if map is not None:
            height, width = map.shape
            row.update(shard=f"{MAPS}/{self.name}.npy", offset=self._offset, height=height, width=width)
            self.maps.append(map)
            self._offset += map.size
        for name, column in self.columns.items():
            column.append(row.get(name))

    def table(self) -> pa.Table:
        """The rows as a table with :data:`INDEX_SCHEMA`."""
        return pa.table(self.columns, schema=INDEX_SCHEMA)


def _with_all_columns(index: pa.Table) -> pa.Table:
    """``index`` with the columns of :data:`INDEX_SCHEMA` in its order; a column that an older
    gradeclip did not write (``warnings``, ``input_height``, ``input_width``) is all null."""
    columns = [
        index.column(field.name) if field.name in index.column_names else pa.nulls(index.num_rows, field.type)
        for field in INDEX_SCHEMA
    ]
    return pa.Table.from_arrays(columns, schema=INDEX_SCHEMA)


class Store:
    """Read a store written by ``gradeclip explain`` (or :func:`gradeclip.explain_dataset`).

    Args:
        root: the store folder.
        partial: also open a store whose run has not finished, from the chunks done so far.

    Raises:
        StoreError: not a store, or (without ``partial``) not complete yet.

    Rows are numbered as in :attr:`index`; maps are read from memory-mapped shards on demand.
    """

    def __init__(self, root: str | os.PathLike[str], *, partial: bool = False):
        self.root = Path(root)
        manifest = read_manifest(self.root)
        if manifest is None:
            raise StoreError(f"{self.root} is not a gradeclip store (no {MANIFEST})")
        self.manifest: dict[str, Any] = manifest
        if (self.root / INDEX).exists():
            self.index: pa.Table = pq.read_table(self.root / INDEX)
        elif partial:
            parts = sorted((self.root / PARTS).glob("*.parquet"))
            tables = [pq.read_table(p).replace_schema_metadata(None) for p in parts]
            self.index = pa.concat_tables(tables) if tables else INDEX_SCHEMA.empty_table()
        else:
            done = len(list((self.root / PARTS).glob("*.parquet")))
            raise StoreError(
                f"the store at {self.root} is not complete ({done} chunks done): run the same "
                "`gradeclip explain` command again to finish it, or open it with partial=True"
            )
        if self.index.column_names != INDEX_SCHEMA.names:  # written before gradeclip kept these columns
            self.index = _with_all_columns(self.index)
        # numpy columns (not Python lists): a store can have tens of millions of rows
        shards = pc.dictionary_encode(self.index.column("shard")).combine_chunks()
        self._shard_names: list[str] = shards.dictionary.to_pylist()
        self._shard_ids = pc.fill_null(shards.indices, -1).to_numpy()
        self._offsets = pc.fill_null(self.index.column("offset"), 0).to_numpy()
        self._heights = pc.fill_null(self.index.column("height"), 0).to_numpy()
        self._widths = pc.fill_null(self.index.column("width"), 0).to_numpy()
        self._arrays: dict[int, np.ndarray] = {}

    @property
    def complete(self) -> bool:
        """Whether the run that wrote the store finished."""
        return bool(self.manifest.get("complete"))

    def __len__(self) -> int:
        return self.index.num_rows

    def __repr__(self) -> str:
        config = self.manifest.get("config", {})
        status = pc.value_counts(self.index.column("status")).to_pylist() if len(self) else []
        counts = ", ".join(f"{c['counts']} {c['values']}" for c in status)
        state = "complete" if self.complete else "partial"
        return (
            f"Store({os.fspath(self.root)!r}, {len(self)} rows ({counts or 'none'}), model {config.get('model')!r}, "
            f"method {config.get('method')!r}, {config.get('mode')} mode, {state})"
        )

    def to_pandas(self) -> Any:
        """The index as a pandas DataFrame (needs pandas), one row per explained pair, columns as
        :data:`INDEX_SCHEMA`: integers as nullable ``Int64`` (``text_index``, ``prediction_rank``,
        the grid and image sizes are missing — ``<NA>`` — where they do not apply), ``is_label``
        as nullable ``boolean``, text columns as ``string``, scores as ``float32``, and ``words`` /
        ``word_importance`` as lists."""
        import pandas as pd

        def dtype(kind: pa.DataType) -> Any:
            if pa.types.is_integer(kind):
                return pd.Int64Dtype()
            if pa.types.is_boolean(kind):
                return pd.BooleanDtype()
            if pa.types.is_string(kind):
                return pd.StringDtype()
            return None  # pandas' own choice (float32, lists)

        return self.index.to_pandas(types_mapper=dtype)

    def _array(self, shard: int) -> np.ndarray:
        if shard not in self._arrays:
            self._arrays[shard] = np.load(self.root / self._shard_names[shard], mmap_mode="r", allow_pickle=False)
        return self._arrays[shard]

    def _row(self, row: int) -> int:
        if isinstance(row, bool) or not isinstance(row, (int, np.integer)) or not -len(self) <= row < len(self):
            raise InputError(f"row must be an integer in [{-len(self)}, {len(self)}), got {row!r}")
        return int(row) % len(self)

    def map(self, row: int) -> np.ndarray:
        """The raw grid map of ``row``: float32 ``[height, width]``. Raises :class:`InputError`
        for a row without a map (``status == "error"``)."""
        row = self._row(row)
        shard = int(self._shard_ids[row])
        if shard < 0:
            raise InputError(f"row {row} has no map: {self.index.column('error')[row].as_py()}")
        start, height, width = int(self._offsets[row]), int(self._heights[row]), int(self._widths[row])
        return np.asarray(self._array(shard)[start : start + height * width], dtype=np.float32).reshape(height, width)

    def maps(self, rows: Sequence[int]) -> np.ndarray:
        """The raw grid maps of ``rows`` stacked: float32 ``[n, height, width]`` (all rows must
        have maps of one shape)."""
        maps = [self.map(r) for r in rows]
        if len({m.shape for m in maps}) > 1:
            raise InputError(f"the rows' maps differ in shape ({sorted({m.shape for m in maps})}); read them one by one with map()")
        if not maps:
            return np.zeros((0, 0, 0), np.float32)
        return np.stack(maps)

    def upsampled(self, row: int, size: tuple[int, int] | None = None, *, normalize: bool = True) -> np.ndarray:
        """The map of ``row`` upsampled bilinearly (``align_corners=False``, SPEC §5) to ``size``
        ``(H, W)`` — by default the row's input size (``input_height``, ``input_width``) — and,
        with ``normalize``, min-max normalised to [0, 1] (a constant map becomes zeros). Returns
        float32 ``[H, W]``."""
        from . import render

        row = self._row(row)
        if size is None:
            size = self._input_size(row)
        up = render.upsample(self.map(row)[None], size)
        return (render.normalize(up) if normalize else up)[0]

    def _input_size(self, row: int) -> tuple[int, int]:
        """``(H, W)`` of the model input of ``row``: its own index columns, or for a store written
        before they existed (one input size per store, the columns null) the manifest's ``input_size``."""
        height, width = self.index.column("input_height")[row].as_py(), self.index.column("input_width")[row].as_py()
        if height is None:
            height, width = self.manifest["config"]["input_size"]
        return (int(height), int(width))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Each row's index columns as a dict, with its raw map (float32 ``[h, w]``, or None) under ``"map"``."""
        row = 0
        for batch in self.index.to_batches():
            for values in batch.to_pylist():
                values["map"] = self.map(row) if self._shard_ids[row] >= 0 else None
                row += 1
                yield values
