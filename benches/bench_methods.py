"""Per-method throughput of every explanation method — the analogue of the Grad-ECLIP paper's Table V.

Each method explains the same batch (default: ViT-B-16 with random weights, B = 8 images of
224 × 224, one text) through ``Explainer.explain_image``; the time counts everything from the
images and the text to the maps (text encoding included), as the paper's does. Grad-ECLIP is the
baseline measured in the same run; ``× Grad-ECLIP`` is each method's time over Grad-ECLIP's. The
paper's own figures (seconds per image, one image at a time on a GPU) are printed beside ours, with
their ratio to the paper's Grad-ECLIP, for comparison of the ratios only.

    PYTHONPATH=python python benches/bench_methods.py                 # the full table (CPU)
    PYTHONPATH=python python benches/bench_methods.py --rise-masks 2000 --methods gradeclip rise

RISE's cost is n_masks forwards per image; the default here (32 masks) keeps the run short and
the row says how many masks were used (the method's default is 2000).
"""

from __future__ import annotations

import argparse
import time

import torch

import gradeclip

# The paper's Table V: average seconds per image (ViT-B/16, one GPU).
PAPER_SECONDS = {
    "raw_attention": 0.0117,
    "rollout": 0.0298,
    "gradcam": 0.0114,
    "game": 0.0228,
    "maskclip": 0.0117,
    "clip_surgery": 2.9423,
    "m2ib": 0.5781,
    "rise": 6.2376,
    "gradeclip": 0.0165,
}


def time_method(explainer: gradeclip.Explainer, images: torch.Tensor, texts: list[str], method: str, options: dict, repeats: int) -> float:
    """Best wall-clock seconds over ``repeats`` calls (after one warm-up call on one image)."""
    explainer.explain_image(images[:1], texts, method=method, **options)
    best = float("inf")
    for _ in range(repeats):
        if images.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        explainer.explain_image(images, texts, method=method, **options)
        if images.is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--rise-masks", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", nargs="*", default=list(gradeclip.methods()))
    args = parser.parse_args()

    torch.manual_seed(0)
    model, _, tokenizer = gradeclip.load(args.model, pretrained=None, device=args.device)
    explainer = gradeclip.Explainer(model, tokenizer)
    images = torch.randn(args.batch, 3, args.size, args.size, device=args.device)
    texts = ["a photo of a dog"]
    methods = ["gradeclip"] + [m for m in args.methods if m != "gradeclip"]
    options = {name: {} for name in methods}
    options["rise"] = {"n_masks": args.rise_masks}

    print(f"{args.model} (random weights), B = {args.batch}, {args.size}×{args.size}, 1 text, device {args.device}, torch threads {torch.get_num_threads()}")
    print(f"{'method':32} {'s/batch':>9} {'images/s':>9} {'× Grad-ECLIP':>13} {'paper s/img':>12} {'paper ×':>8}")
    baseline = None
    for name in methods:
        seconds = time_method(explainer, images, texts, name, options[name], args.repeats)
        baseline = baseline or seconds
        label = name + (f" (n_masks={args.rise_masks})" if name == "rise" else "")
        paper = PAPER_SECONDS.get(name)
        paper_cols = f"{paper:12.4f} {paper / PAPER_SECONDS['gradeclip']:8.2f}" if paper else f"{'—':>12} {'—':>8}"
        print(f"{label:32} {seconds:9.3f} {args.batch / seconds:9.2f} {seconds / baseline:13.2f} {paper_cols}", flush=True)


if __name__ == "__main__":
    main()
