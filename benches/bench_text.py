"""Text-explanation throughput: gradeclip's batched explain_text vs the naive per-pair loop.

The baseline is the SPEC §3 reference of the parity tests (tests/reference_text.py): one
(image, text) pair at a time, full autograd over the whole 77-token context. It is given the
image embeddings for free (computed once, outside its timing); gradeclip's time includes
everything explain_text does (image-tower forward, tokenising, mapping tokens to words).
Both run in this process on the same model, and their outputs are compared.

    PYTHONPATH=python python benches/bench_text.py                       # ViT-B-32, CPU
    PYTHONPATH=python python benches/bench_text.py --device cuda --images 16 --texts 64
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_text import reference_text_importance  # noqa: E402

import gradeclip  # noqa: E402

SUBJECTS = ["dog", "tabby cat", "red car", "old man", "hippopotamus", "bicycle", "bowl of soup", "lighthouse"]
SCENES = [
    "a photo of a {}",
    "a {} on a wooden bench next to the river",
    "two children playing with a {} in the garden, on a sunny afternoon",
    "close-up of a {}",
    "a black and white photograph of a {} standing in front of an old brick building in the rain",
    "the {}",
]


def captions(count: int) -> list[str]:
    """``count`` captions of varied lengths (2 to ~25 tokens)."""
    return [SCENES[i % len(SCENES)].format(SUBJECTS[i % len(SUBJECTS)]) for i in range(count)]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--images", type=int, default=4, help="B")
    parser.add_argument("--texts", type=int, default=16, help="T")
    parser.add_argument("--n-layers", type=int, default=8)
    parser.add_argument("--heads", default="single", choices=["single", "model"])
    parser.add_argument("--naive-pairs", type=int, default=8, help="pairs the naive loop runs (its rate is per pair)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    model, _, tokenizer = gradeclip.load(args.model, device=args.device)
    explainer = gradeclip.Explainer(model, tokenizer)
    size = model.visual.image_size
    images = torch.randn(args.images, 3, *((size, size) if isinstance(size, int) else size), device=args.device)
    texts = captions(args.texts)
    pairs = args.images * args.texts

    explainer.explain_text(images, texts, n_layers=args.n_layers, heads=args.heads)  # warm-up
    batched = []
    for _ in range(args.repeats):
        sync(args.device)
        start = time.perf_counter()
        res = explainer.explain_text(images, texts, n_layers=args.n_layers, heads=args.heads)
        sync(args.device)
        batched.append(time.perf_counter() - start)

    with torch.no_grad():
        targets = F.normalize(model.encode_image(images), dim=-1)
    ids = tokenizer(texts).to(args.device)
    chosen = [(k % args.images, (k * 7) % args.texts) for k in range(args.naive_pairs)]
    naive = []
    worst = 0.0
    for _ in range(args.repeats):
        sync(args.device)
        start = time.perf_counter()
        outputs = [reference_text_importance(model, ids[t], targets[b], n_layers=args.n_layers, heads=args.heads) for b, t in chosen]
        sync(args.device)
        naive.append(time.perf_counter() - start)
    for (b, t), (ref, _, _) in zip(chosen, outputs):
        worst = max(worst, (res.importance[b, t].cpu() - ref.cpu()).abs().max().item())

    batched_rate = pairs / statistics.median(batched)
    naive_rate = len(chosen) / statistics.median(naive)
    print(f"model {args.model} (random weights), device {args.device}, torch threads {torch.get_num_threads()}, "
          f"n_layers {args.n_layers}, heads {args.heads}, B={args.images} T={args.texts}, median of {args.repeats}")
    print(f"{'method':<34} {'pairs':>6} {'seconds':>9} {'pairs/s':>9} {'ratio':>7}")
    print(f"{'naive per-pair loop (reference)':<34} {len(chosen):>6} {statistics.median(naive):>9.3f} {naive_rate:>9.1f} {1.0:>7.1f}")
    print(f"{'gradeclip explain_text (batched)':<34} {pairs:>6} {statistics.median(batched):>9.3f} {batched_rate:>9.1f} "
          f"{batched_rate / naive_rate:>7.1f}")
    print(f"max |importance difference| over the {len(chosen)} compared pairs: {worst:.2e}")


if __name__ == "__main__":
    main()
