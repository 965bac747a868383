"""Captions per second of the concreteness analysis' explaining step (each caption against its own
image) on the shipped gradeclip-synth model, CPU: one ``explain_text`` call per caption (the
baseline) vs the groups ``gradeclip.targets.explain_words`` makes (``max_targets`` captions per
call), all measured in this run.

    PYTHONPATH=python python benches/bench_concreteness.py [N]
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

import gradeclip
from gradeclip.synth import make_scene, random_caption
from gradeclip.targets import explain_words


def main(count: int = 64) -> None:
    model, preprocess, tokenizer = gradeclip.load("gradeclip-synth")
    explainer = gradeclip.Explainer(model, tokenizer)
    rng = np.random.default_rng(0)
    scenes = [make_scene(i, "test") for i in range(count)]
    images = torch.stack([preprocess(s.pil()) for s in scenes])
    captions = [[random_caption(s, rng).text] for s in scenes]
    layers = len(explainer.text_tower.blocks)
    explain_words(explainer, images[:2], captions[:2], 2, {"n_layers": layers})  # warm-up
    rows = []
    start = time.perf_counter()
    for i in range(count):
        explainer.explain_text(images[i : i + 1], captions[i], n_layers=layers)
    base = count / (time.perf_counter() - start)
    rows.append(("one call per caption", base))
    for group in (4, 8, 16, 32):
        start = time.perf_counter()
        explain_words(explainer, images, captions, group, {"n_layers": layers})
        rows.append((f"explain_words, {group} per call", count / (time.perf_counter() - start)))
    print(f"{count} captions, gradeclip-synth, CPU, {torch.get_num_threads()} threads")
    print(f"{'':32} {'captions/s':>11} {'ratio':>7}")
    for name, rate in rows:
        print(f"{name:32} {rate:11.1f} {rate / base:7.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 64)
