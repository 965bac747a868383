"""Make the outputs docs/analysis.md shows, with the shipped gradeclip-synth model.

    PYTHONPATH=python python scripts/analysis_docs.py OUT      (then copy OUT/*.png to docs/analysis/)

Writes OUT/addibility, OUT/attributes (100 held-out scenes) and OUT/concreteness: a caption
table of 300 synthetic scenes (random captions of the world, seed 0) and six scikit-image photos
with everyday captions (words the world's vocabulary lacks: the shipped tokenizer still reads them).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from gradeclip.cli import main
from gradeclip.synth import make_scene, random_caption

PHOTOS = {
    "astronaut": "a woman in a white space suit",
    "chelsea": "a cat sitting on a wooden table",
    "coffee": "a cup of coffee on a red plate",
    "rocket": "a rocket on the launch pad",
    "hubble_deep_field": "many small galaxies in the dark sky",
    "immunohistochemistry": "pink and blue cells under a microscope",
}


def caption_table(folder: Path, scenes: int = 300) -> Path:
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(scenes):
        scene = make_scene(i, "test")
        scene.pil().save(folder / f"scene{i:04d}.png")
        rows.append({"image": f"scene{i:04d}.png", "caption": random_caption(scene, rng).text})
    for name, caption in PHOTOS.items():
        Image.fromarray(getattr(data, name)()).convert("RGB").save(folder / f"{name}.png")
        rows.append({"image": f"{name}.png", "caption": caption})
    with open(folder / "captions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["image", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    return folder / "captions.csv"


def run(out: Path) -> None:
    scene = make_scene(3, "test")
    scene.pil().save(out / "scene3.png")
    model = ["--model", "gradeclip-synth"]
    assert main(["analyze", "addibility", *model, "--image", str(out / "scene3.png"), "--phrases", "purple star", "orange star", "pink circle", "--out", str(out / "addibility")]) == 0
    assert main(["analyze", "attributes", *model, "--scenes", "100", "--out", str(out / "attributes")]) == 0
    table = caption_table(out / "captions")
    assert main(["analyze", "concreteness", *model, "--data", str(table), "--top-n", "1000", "--out", str(out / "concreteness"), "--quiet"]) == 0


if __name__ == "__main__":
    target = Path(sys.argv[1])
    target.mkdir(parents=True, exist_ok=True)
    run(target)
