"""Results read well: one-line reprs, inline HTML views whose pictures are the maps, and pandas
dtypes of the store's index."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from test_store import CONFIG

import gradeclip
from gradeclip import render
from gradeclip.store import ChunkBuffer, Store, StoreWriter

TEXTS = ["a cat", "a dog", "a rocket", "a tree", "a boat", "a car", "a bird"]


@pytest.fixture(scope="module")
def explainer(tiny_model, tokenizer):
    return gradeclip.Explainer(tiny_model, tokenizer)


def pictures(page: str) -> list[np.ndarray]:
    """The embedded PNGs of an HTML view, decoded to uint8 RGB arrays."""
    found = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")) for data in found]


def test_image_explanation_repr_and_html(explainer):
    images = torch.randn(5, 3, 32, 32)
    res = explainer.explain_image(images, TEXTS)
    text = repr(res)
    assert "\n" not in text and len(text) < 300 and "tensor(" not in text
    assert "method='gradeclip'" in text and "5 images × 7 texts" in text and "… 4 more" in text and "[5, 7, 4, 4]" in text
    page = res._repr_html_()
    shown = pictures(page)
    assert len(shown) == 4 * 6 and "showing 4 of 5 images, 6 of 7 texts" in page  # the view is cut at 4 × 6
    heat = render.colorize(res.normalized()[:4, :6].reshape(24, 32, 32))
    np.testing.assert_array_equal(np.stack(shown), heat)  # each picture is that pair's heat map, row by row
    assert f"{float(res.scores[3, 5]):.4f}" in page and "a boat" in page


def test_text_and_pair_views(explainer):
    images = torch.randn(2, 3, 32, 32)
    res = explainer.explain_text(images, ["a cat on a mat", "A dog & a <ball>"], n_layers=2)
    text = repr(res)
    assert "\n" not in text and "2 images × 2 texts" in text and "importance [2, 2, 77]" in text and "n_layers=2" in text
    page = res._repr_html_()
    for b in range(2):
        for t in range(2):
            assert render.text_html(res.words(b, t), text=res.texts[t]) in page
    assert "<ball>" not in page  # captions are escaped
    pair = explainer.explain_pair(images[:1], "a red cat", n_text_layers=2)
    assert repr(pair).startswith("PairExplanation('a red cat', score ") and "red=" in repr(pair)
    pair_page = pair._repr_html_()
    assert len(pictures(pair_page)) == 1 and render.text_html(pair.words, text="a red cat") in pair_page


def test_store_repr_and_pandas_dtypes(tmp_path):
    writer = StoreWriter(tmp_path / "s")
    writer.prepare(CONFIG, overwrite=False, extra={})
    chunk = ChunkBuffer("c0000000")
    grid = np.ones((2, 2), np.float16)
    chunk.add(key="a", path="a.jpg", position=0, map=grid, text="a cat", text_index=0, prediction_rank=1, is_label=True, score=0.5, model_score=0.25)
    chunk.add(key="a", path="a.jpg", position=0, map=grid, text="a dog", text_index=1, prediction_rank=2, is_label=False, score=0.25, model_score=0.125)
    chunk.add(key="b", path="b.jpg", position=1, status="error", error="empty file (0 bytes)")
    writer.commit(chunk, unit_done=True)
    writer.merge({})
    store = Store(tmp_path / "s")
    assert repr(store) == f"Store({str(tmp_path / 's')!r}, 3 rows (2 ok, 1 error), model 'tiny', method None, None mode, complete)"
    frame = store.to_pandas()
    for column in ("text_index", "prediction_rank", "offset", "height", "position"):
        assert frame[column].dtype == pd.Int64Dtype(), column
    assert frame["is_label"].dtype == pd.BooleanDtype() and frame["key"].dtype == pd.StringDtype()
    assert frame["score"].dtype == np.float32
    assert frame["text_index"].tolist()[:2] == [0, 1] and frame["text_index"].isna().tolist() == [False, False, True]
    assert frame["is_label"].tolist()[:2] == [True, False] and pd.isna(frame["is_label"][2])
    assert frame["error"][2] == "empty file (0 bytes)" and pd.isna(frame["error"][0])
