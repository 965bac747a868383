"""``gradeclip eval`` end to end with a small random-weights open_clip model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import skimage.data
from gradeclip.cli import main
from PIL import Image


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    for name, image in {"astronaut": skimage.data.astronaut(), "coffee": skimage.data.coffee()}.items():
        (root / "images" / name).mkdir(parents=True)
        (root / "masks" / name).mkdir(parents=True)
        Image.fromarray(image).save(root / "images" / name / f"{name}.png")
        mask = np.zeros(image.shape[:2], np.uint8)
        mask[image.shape[0] // 4 : image.shape[0] // 2, image.shape[1] // 3 : 2 * image.shape[1] // 3] = 1
        Image.fromarray(mask).save(root / "masks" / name / f"{name}.png")
    (root / "templates.txt").write_text("a photo of a {}.\n")
    (root / "captions.csv").write_text(
        "image,caption\nimages/astronaut/astronaut.png,an astronaut in a white suit\nimages/coffee/coffee.png,a cup of coffee on a table\n"
    )
    return root


@pytest.mark.slow
def test_faithfulness_and_localization_commands_write_results(folders, tmp_path, capsys):
    common = ["--model", "ViT-S-32", "--templates", str(folders / "templates.txt"), "--no-progress", "--out", str(tmp_path)]
    status = main(
        [
            "eval",
            "faithfulness",
            *common,
            "--images",
            str(folders / "images"),
            "--limit",
            "1",
            "--steps",
            "10",
            "--eval-every",
            "5",
            "--target",
            "gt",
            "--target",
            "pred",
        ]
    )
    assert status == 0
    out = capsys.readouterr()
    assert "Deletion ↓" in out.out and "predicted" in out.out and "has random weights (random, seed 0)" in out.err
    status = main(
        [
            "eval",
            "localization",
            *common,
            "--images",
            str(folders / "images"),
            "--masks",
            str(folders / "masks"),
            "--option",
            'spatial="none"',
        ]
    )
    assert status == 0
    assert "energy-PG" in capsys.readouterr().out
    status = main(
        [
            "eval",
            "text-faithfulness",
            *common[:2],
            "--no-progress",
            "--out",
            str(tmp_path),
            "--captions",
            str(folders / "captions.csv"),
            "--limit",
            "1",
            "--steps",
            "2",
        ]
    )
    assert status == 0
    assert "Table III" in capsys.readouterr().out
    saved = sorted(tmp_path.glob("*.json"))
    assert len(saved) == 4 and len(list(tmp_path.glob("*.csv"))) == 4
    settings = [json.loads(p.read_text())["settings"] for p in saved]
    assert {s["task"] for s in settings} == {"faithfulness", "text_faithfulness", "localization"}
    assert any(s.get("options") == {"spatial": "none"} for s in settings)
    assert len({s["model"] for s in settings}) == 1  # one seeded model, named with its parameters' fingerprint
    assert settings[0]["model"].startswith("ViT-S-32, random, seed 0 weights, parameters sha256:")
    assert main(["eval", "table", *map(str, saved)]) == 0
    assert "gradeclip spatial=none" in capsys.readouterr().out


def test_bad_input_is_a_message_not_a_traceback(folders, capsys):
    status = main(
        [
            "eval",
            "faithfulness",
            "--model",
            "ViT-S-32",
            "--images",
            str(folders / "images"),
            "--steps",
            "10",
            "--eval-every",
            "3",
            "--no-progress",
        ]
    )
    assert status == 2
    assert "must divide" in capsys.readouterr().err
