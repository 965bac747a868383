"""Grad-ECLIP visual explanation throughput on the CPU, against encode_image and the authors' shape.

Prints, measured in one run (ViT-B-16 at 224, random weights, B = 8 by default):
  * explain_image images/s ÷ model.encode_image images/s, for T = 1 and T = 16 texts;
  * explain_image pairs/s ÷ the authors' pipeline shape (benches/authors_shape.py) pairs/s.
Text embeddings are computed once beforehand (as a dataset run caches them) for every path.

    python benches/bench_explain.py [--model ViT-B-16] [--batch 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from authors_shape import explain_one_image  # noqa: E402

import gradeclip  # noqa: E402


def timed(fn, repeats: int) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--texts", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()

    torch.manual_seed(0)
    model, _, _ = gradeclip.load(args.model)
    explainer = gradeclip.Explainer(model)
    images = torch.randn(args.batch, 3, 224, 224)
    embed_dim = model.visual.proj.shape[1]
    print(f"# {args.model}, B={args.batch}, CPU: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")

    with torch.no_grad():
        t_encode = timed(lambda: model.encode_image(images), args.repeats)
    encode_ips = args.batch / t_encode
    print(f"encode_image: {encode_ips:.2f} images/s")
    print()
    print("| T | explain images/s | ÷ encode_image | explain pairs/s | authors' shape pairs/s | speed-up vs authors |")
    print("|---|---|---|---|---|---|")
    for n_texts in args.texts:
        texts = F.normalize(torch.randn(n_texts, embed_dim), dim=-1)
        t_explain = timed(lambda: explainer.explain_image(images, texts), args.repeats)
        t_authors = timed(lambda: [explain_one_image(model, images[i : i + 1], texts) for i in range(args.batch)], max(1, args.repeats // 2))
        ips = args.batch / t_explain
        pairs, authors_pairs = ips * n_texts, args.batch * n_texts / t_authors
        print(f"| {n_texts} | {ips:.2f} | {ips / encode_ips:.2f} | {pairs:.1f} | {authors_pairs:.1f} | {pairs / authors_pairs:.1f}× |")


if __name__ == "__main__":
    main()
