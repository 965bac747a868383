"""``gradeclip coverage``: one supported and one refused architecture, through the command line."""

from __future__ import annotations

import json

from gradeclip.cli import main
from gradeclip.coverage import Row, markdown, shrink


def test_shrink_keeps_width_and_cuts_depth():
    cfg = {"vision_cfg": {"layers": 24, "width": 1024, "patch_size": 14}, "text_cfg": {"layers": 12, "width": 768}}
    small, note = shrink(cfg)
    assert small["vision_cfg"] == {"layers": 2, "width": 1024, "patch_size": 14, "image_size": 56}
    assert small["text_cfg"]["layers"] == 2 and cfg["vision_cfg"]["layers"] == 24  # the original is untouched
    assert note == "vision 2/24 blocks, 56 px; text 2/12 blocks"
    rn, note = shrink({"vision_cfg": {"layers": [3, 4, 6, 3], "width": 64}, "text_cfg": {}})
    assert rn["vision_cfg"]["layers"] == [1, 1, 1, 1] and "3-4-6-3" in note


def test_markdown_escapes_and_counts():
    rows = [Row("A", "✓", "✓", "", "x", 1.0), Row("B", "✗", "✓", "visual: a | b", "y", 2.0)]
    table = markdown(rows, "cmd")
    assert "visual ✓ 1, textual ✓ 2, both 1, crashes 0" in table and "Produced by `cmd`" in table
    assert "| B | ✗ | ✓ | visual: a \\| b | y | 2.0 |" in table


def test_cli_covers_and_resumes(tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    out = tmp_path / "coverage.md"
    status = main(["coverage", "--models", "ViT-S-32", "roberta-ViT-B-32", "--resume", str(rows), "--out", str(out)])
    assert status == 0
    done = {r["name"]: r for r in map(json.loads, rows.read_text().splitlines())}
    assert done["ViT-S-32"]["visual"] == done["ViT-S-32"]["textual"] == "✓"
    assert done["roberta-ViT-B-32"]["visual"] == "✓" and done["roberta-ViT-B-32"]["textual"] == "✗"
    assert "mean pooling: no attention at the pooling point" in done["roberta-ViT-B-32"]["reason"]
    assert out.read_text() in capsys.readouterr().out
    assert main(["coverage", "--models", "ViT-S-32", "--resume", str(rows)]) == 0  # reuses the finished row
    assert len(rows.read_text().splitlines()) == 2
    assert main(["coverage", "--models", "ViT-Z-99"]) == 2
