"""The shipped gradeclip-synth weights: they load offline, reach the documented held-out retrieval,
and the explainer runs on them."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
import torch

import gradeclip
from gradeclip.errors import ModelLoadError
from gradeclip.synth import examples, make_scenes
from gradeclip.synth.captions import ATTRIBUTES
from gradeclip.synth.model import shipped_weights
from gradeclip.synth.train import retrieval

CARD = Path(__file__).resolve().parents[1] / "docs" / "model-card-gradeclip-synth.md"


@pytest.fixture(scope="module")
def synth(request):
    """The shipped model, loaded with every network connection refused."""
    patch = pytest.MonkeyPatch()

    def refuse(*args, **kwargs):
        raise AssertionError("gradeclip.load('gradeclip-synth') tried to open a network connection")

    patch.setattr(socket.socket, "connect", refuse)
    patch.setattr(socket, "create_connection", refuse)
    try:
        yield gradeclip.load("gradeclip-synth")
    finally:
        patch.undo()


def record():
    return json.loads(shipped_weights().with_suffix(".json").read_text())


def test_shipped_files_are_small_and_inside_the_package():
    weights = shipped_weights()
    assert weights.parent.name == "assets" and weights.parent.parent == Path(gradeclip.__file__).parent
    assert 100_000 < weights.stat().st_size < 8_000_000


def test_loads_offline_as_an_open_clip_model(synth):
    import open_clip

    model, preprocess, tokenizer = synth
    assert isinstance(model, open_clip.CLIP) and not model.training
    scene = make_scenes(1, "test")[0]
    image = preprocess(scene.pil())
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    tokens = tokenizer(["a red circle"])
    assert tokens.shape == (1, 48)


def test_reaches_the_documented_held_out_retrieval(synth):
    """Text→image R@1 among the model card's 1,000 held-out scenes (split ``test``, seed 0, every
    attribute): the numbers recorded beside the weights at the end of training are reproduced by
    the loaded model (the same scenes and captions, so only float summation order may differ)."""
    model, _, tokenizer = synth
    documented = record()["retrieval"]["test_full"]
    assert documented["count"] == 1000
    measured = retrieval(model, tokenizer, record()["config"], 1000, "test", 0, ATTRIBUTES)
    for key in ("r1", "r1_strict", "r5"):
        assert abs(measured[key] - documented[key]) <= 0.005, (key, measured, documented)


def test_model_card_reports_the_recorded_numbers():
    card = CARD.read_text()
    numbers = record()["retrieval"]
    for name in ("test_full", "test_colour_shape", "val_full"):
        row = re.search(rf"^\|\s*`{name}`.*$", card, re.MULTILINE)
        assert row, f"the model card has no row for {name}"
        for key in ("r1", "r1_strict", "r5"):
            assert f"{numbers[name][key]:.3f}" in row.group(0), (name, key, row.group(0))
    verdict = "met" if numbers["test_full"]["r1"] >= 0.8 else "missed"
    assert f"r1 ≥ 0.8 — **{verdict}**" in card
    assert f"{record()['train_seconds']:.0f} s" in card


def test_explainer_runs_on_the_shipped_model(synth):
    model, _, tokenizer = synth
    example = examples(1)[0]
    from gradeclip.synth.model import images_to_tensor

    images = images_to_tensor(torch.from_numpy(example.scene.image)[None], record()["config"])
    texts = [c.text for c in example.referring if c is not None]
    out = gradeclip.Explainer(model, tokenizer).explain_image(images, texts)
    assert out.maps.shape == (1, len(texts), 8, 8)
    assert torch.isfinite(out.maps).all() and (out.maps.flatten(2).amax(-1) > 0).all()


def test_other_weights_file_and_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        gradeclip.load("gradeclip-synth", pretrained=tmp_path / "nothing.safetensors")
