"""The store: chunks commit atomically, a finished store reads back exactly what was written, and a
store made with other settings is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gradeclip.errors import InputError, StoreError
from gradeclip.store import INDEX_SCHEMA, ChunkBuffer, Store, StoreWriter

CONFIG = {"model": "tiny", "options": {"heads": "single"}, "input_size": [24, 40], "input": {"sha256": "abc"}}


def fill(writer: StoreWriter, rng: np.random.Generator) -> dict[tuple[str, int], np.ndarray]:
    """Commit three chunks of rows with maps of odd shapes and a few error rows; returns the maps."""
    written = {}
    for c, shapes in enumerate([[(3, 5), (3, 5), None], [(7, 2)], [None, (1, 1), (4, 4)]]):
        chunk = ChunkBuffer(f"c{c:07d}")
        for position, shape in enumerate(shapes):
            if shape is None:
                chunk.add(key=f"k{c}{position}", path="p", position=position, status="error", error="empty file (0 bytes)")
                continue
            grid = rng.random(shape).astype(np.float32) * 3
            written[(chunk.name, position)] = grid.astype(np.float16).astype(np.float32)
            chunk.add(key=f"k{c}{position}", path="p", position=position, map=grid.astype(np.float16), text="t", score=0.5, model_score=0.25, input_height=24, input_width=40)
        writer.commit(chunk, unit_done=False)
    return written


def test_round_trip(tmp_path):
    writer = StoreWriter(tmp_path / "s")
    assert writer.prepare(CONFIG, overwrite=False, extra={"versions": {}}) is False
    written = fill(writer, np.random.default_rng(0))
    assert sorted(writer.completed()) == ["c0000000", "c0000001", "c0000002"]
    with pytest.raises(StoreError, match="not complete"):
        Store(tmp_path / "s")
    partial = Store(tmp_path / "s", partial=True)
    assert len(partial) == 7 and not partial.complete

    counts = writer.merge({})
    assert counts == {"chunks": 3, "rows": 7, "ok": 5, "errors": 2, "samples": 7, "failed_samples": 2}
    store = Store(tmp_path / "s")
    assert store.complete and store.index.schema.equals(INDEX_SCHEMA) and len(store) == 7
    frame = store.to_pandas()
    assert list(frame["key"]) == ["k00", "k01", "k02", "k10", "k20", "k21", "k22"]
    for row, values in enumerate(store):
        expected = written.get((values["chunk"], values["position"]))
        if expected is None:
            assert values["status"] == "error" and values["map"] is None
            with pytest.raises(InputError, match="has no map: empty file"):
                store.map(row)
        else:
            np.testing.assert_array_equal(values["map"], expected)
            np.testing.assert_array_equal(store.map(row), expected)
            assert (values["height"], values["width"]) == expected.shape
    np.testing.assert_array_equal(store.maps([0, 1]), np.stack([written[("c0000000", 0)], written[("c0000000", 1)]]))
    with pytest.raises(InputError, match="differ in shape"):
        store.maps([0, 3])
    with pytest.raises(InputError, match="row must be an integer"):
        store.map(7)
    shard = np.load(tmp_path / "s" / "maps" / "c0000000.npy", mmap_mode="r")
    assert shard.dtype == np.float16 and shard.shape == (30,)


def bilinear_reference(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres (align_corners=False), straight from the definition."""

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        low = np.floor(src).astype(int)
        return low, np.minimum(low + 1, n_in - 1), src - low

    y0, y1, wy = axis(grid.shape[0], height)
    x0, x1, wx = axis(grid.shape[1], width)
    top = grid[y0][:, x0] * (1 - wx) + grid[y0][:, x1] * wx
    bottom = grid[y1][:, x0] * (1 - wx) + grid[y1][:, x1] * wx
    return top * (1 - wy[:, None]) + bottom * wy[:, None]


def test_upsampled_matches_reference(tmp_path):
    writer = StoreWriter(tmp_path / "s")
    writer.prepare(CONFIG, overwrite=False, extra={})
    written = fill(writer, np.random.default_rng(1))
    writer.merge({})
    store = Store(tmp_path / "s")
    raw = store.upsampled(0, normalize=False)
    assert raw.shape == (24, 40)  # the row's input size by default
    np.testing.assert_allclose(raw, bilinear_reference(written[("c0000000", 0)], 24, 40), rtol=1e-5, atol=1e-6)
    up = store.upsampled(3, (13, 9))
    ref = bilinear_reference(written[("c0000001", 0)], 13, 9)
    np.testing.assert_allclose(up, (ref - ref.min()) / (ref.max() - ref.min()), rtol=1e-5, atol=1e-6)
    assert store.upsampled(5, (5, 5)).tolist() == np.zeros((5, 5)).tolist()  # a 1×1 map is constant


def test_refuses_other_settings_and_overwrites(tmp_path):
    root = tmp_path / "s"
    writer = StoreWriter(root)
    writer.prepare(CONFIG, overwrite=False, extra={})
    fill(writer, np.random.default_rng(2))
    other = json.loads(json.dumps(CONFIG))
    other["options"]["heads"] = "model"
    with pytest.raises(StoreError, match=r'options: store has \{"heads": "single"\}, this run has \{"heads": "model"\}'):
        writer.prepare(other, overwrite=False, extra={})
    (root / "notes.txt").write_text("mine")
    assert writer.prepare(other, overwrite=True, extra={}) is False
    assert writer.completed() == {} and (root / "notes.txt").read_text() == "mine"
    assert json.loads((root / "manifest.json").read_text())["config"] == other


def test_resume_cleans_temporaries_and_ignores_unfinished_chunks(tmp_path):
    root = tmp_path / "s"
    writer = StoreWriter(root)
    writer.prepare(CONFIG, overwrite=False, extra={})
    fill(writer, np.random.default_rng(3))
    (root / "parts" / "c0000001.parquet").unlink()  # killed after the map shard, before the part
    (root / "maps" / "c0000009.npy.tmp-12-ab").write_bytes(b"half")
    (root / "parts" / "c0000009.parquet.tmp-12-cd").write_bytes(b"half")
    assert writer.prepare(CONFIG, overwrite=False, extra={}) is True
    assert sorted(writer.completed()) == ["c0000000", "c0000002"]
    assert not list(root.glob("*/*.tmp-*"))


def test_refuses_folders_that_are_not_stores(tmp_path):
    (tmp_path / "photo.jpg").write_bytes(b"x")
    with pytest.raises(StoreError, match="not a gradeclip store"):
        StoreWriter(tmp_path).prepare(CONFIG, overwrite=True, extra={})
    with pytest.raises(StoreError, match="no manifest.json"):
        Store(tmp_path)
    (tmp_path / "maps").mkdir()
    with pytest.raises(StoreError, match="without its manifest"):
        StoreWriter(tmp_path).prepare(CONFIG, overwrite=False, extra={})


def test_a_store_written_before_the_warnings_and_input_size_columns_still_reads(tmp_path):
    """Stores made before gradeclip kept per-row warnings and input sizes lack those columns: they
    open with them all null, ``upsampled`` falls back to the store's one input size, and a rerun of
    one is refused saying why (its manifest names no model fingerprint)."""
    import pyarrow.parquet as pq

    writer = StoreWriter(tmp_path / "s")
    writer.prepare(CONFIG, overwrite=False, extra={})
    written = fill(writer, np.random.default_rng(1))
    writer.merge({})
    index = tmp_path / "s" / "index.parquet"
    pq.write_table(pq.read_table(index).drop_columns(["warnings", "input_height", "input_width"]), index)
    store = Store(tmp_path / "s")
    assert store.index.schema.equals(INDEX_SCHEMA) and store.to_pandas()["warnings"].isna().all()
    assert store.to_pandas()["input_height"].isna().all()
    raw = store.upsampled(0, normalize=False)
    np.testing.assert_allclose(raw, bilinear_reference(written[("c0000000", 0)], 24, 40), rtol=1e-5, atol=1e-6)
    with pytest.raises(StoreError, match="by an older gradeclip, which did not record the model's identity"):
        StoreWriter(tmp_path / "s").prepare({**CONFIG, "parameters_sha256": "f" * 64}, overwrite=False, extra={})
