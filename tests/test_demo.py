"""`gradeclip demo` runs offline end to end and writes what it says it writes."""

from __future__ import annotations

import socket

import pytest
from PIL import Image

from gradeclip.cli import main
from gradeclip.demo import DEFAULT_MODEL, PHOTOS, SCENES
from gradeclip.files import is_temporary
from gradeclip.synth import examples


def _check_files(out) -> str:
    """The files every demo run writes; returns the HTML page."""
    from skimage import data

    photo_overlays = sorted((out / "overlays").glob("*.png"))
    assert len(photo_overlays) == len(PHOTOS) ** 2
    for photo in PHOTOS:  # each photo's overlays are drawn on the original, at its own size
        height, width = getattr(data, photo.name)().shape[:2]
        with Image.open(out / "overlays" / f"{photo.name}__{PHOTOS[0].name}.png") as im:
            assert im.size == (width, height) and im.mode == "RGB"
    objects = [(e, k) for e, ex in enumerate(examples(SCENES)) for k, c in enumerate(ex.referring) if c is not None]
    assert sorted(p.name for p in (out / "scenes").glob("*.png")) == sorted(f"scene{e}__o{k}.png" for e, k in objects)
    assert len(list((out / "words").glob("*.png"))) == len(PHOTOS) + SCENES
    page = (out / "index.html").read_text()
    assert all(f"overlays/{p.name}__{q.name}.png" in page for p in PHOTOS for q in PHOTOS)
    assert all(f"scenes/scene{e}__o{k}.png" in page for e, k in objects)
    assert not [p for p in out.rglob("*") if is_temporary(p.name)]
    return page


def test_default_demo_uses_the_embedded_trained_model_offline(tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the demo tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    out = tmp_path / "demo"
    assert DEFAULT_MODEL == "gradeclip-synth"
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "RANDOM" not in printed and "index.html" in printed
    page = _check_files(out)
    assert "Random weights" not in page and "gradeclip-synth (shipped weights)" in page


@pytest.mark.slow
def test_demo_with_a_random_open_clip_model_warns(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--model", "ViT-S-32"]) == 0
    printed = capsys.readouterr().out
    assert "RANDOM weights" in printed and "index.html" in printed
    page = _check_files(out)
    assert "Random weights" in page
