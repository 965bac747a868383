"""Scenes of the synthetic world written as an image–caption table that :mod:`gradeclip.data`
reads (``pairs.csv``: columns ``image``, ``caption``), e.g. to fine-tune on them."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from ..files import write_text
from .captions import caption_of, random_caption
from .scenes import DEFAULT_SIZE, make_scene

CAPTION_STREAM = 11


def write_pairs(out: str | os.PathLike[str], count: int, split: str = "train", seed: int = 0, size: int = DEFAULT_SIZE, captions: str = "random") -> Path:
    """Draw scenes ``0..count-1`` of ``split`` as PNGs in ``out`` with ``out/pairs.csv``; returns the table's path.

    ``captions="random"`` gives each scene a training caption (:func:`random_caption`: a random
    subset of its objects, optional size and region words, from ``default_rng((seed, 11, index))``);
    ``"complete"`` the caption of every object with every attribute.
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "pairs.csv"
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["image", "caption"])
    for index in range(count):
        scene = make_scene(index, split, seed, size)
        name = f"{split}-{index:06d}.png"
        scene.pil().save(folder / name)
        if captions == "complete":
            text = caption_of(scene).text
        else:
            text = random_caption(scene, np.random.default_rng((seed, CAPTION_STREAM, index))).text
        writer.writerow([name, text])
    write_text(table, rows.getvalue())
    return table
