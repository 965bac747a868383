"""`gradeclip demo` runs offline end to end and writes what it says it writes."""

from __future__ import annotations

from PIL import Image

from gradeclip.cli import main
from gradeclip.demo import PHOTOS


def test_demo_command_writes_overlays_words_and_page(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--model", "ViT-S-32"]) == 0
    printed = capsys.readouterr().out
    assert "RANDOM weights" in printed and "index.html" in printed
    overlays = sorted((out / "overlays").glob("*.png"))
    assert len(overlays) == len(PHOTOS) ** 2
    with Image.open(overlays[0]) as im:
        assert im.size == (224, 224) and im.mode == "RGB"
    assert len(list((out / "words").glob("*.png"))) == len(PHOTOS)
    page = (out / "index.html").read_text()
    assert "Random weights" in page
    assert all(f"overlays/{p.name}__{q.name}.png" in page for p in PHOTOS for q in PHOTOS)
    assert not list(out.glob(".*.tmp"))
