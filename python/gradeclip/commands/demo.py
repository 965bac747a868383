"""``gradeclip demo``: the main job on an embedded default, offline."""

from __future__ import annotations

import argparse
import time


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..demo import DEFAULT_MODEL

    p = sub.add_parser("demo", help="explain synthetic scenes and bundled photos; write overlays and an HTML page")
    p.add_argument("--out", default="gradeclip-demo", help="output directory (default: %(default)s)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="gradeclip-synth (the embedded model) or an open_clip architecture (default: %(default)s)")
    p.add_argument(
        "--pretrained",
        default=None,
        help="open_clip tag or local checkpoint (default: the shipped weights for gradeclip-synth, random weights otherwise)",
    )
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import PHOTOS, SCENES, run_demo

    start = time.perf_counter()
    report = run_demo(args.out, args.model, args.pretrained, args.device)
    if report.random_weights:
        print(f"NOTE: {args.model} has RANDOM weights: the maps show the machinery, not what a trained CLIP sees.")
    width = max(len(p.prompt) for p in PHOTOS)
    print(f"{'cosine':>12} " + " ".join(f"{p.prompt:>{width}}" for p in PHOTOS))
    for b, photo in enumerate(PHOTOS):
        print(f"{photo.name:>12} " + " ".join(f"{s:>{width}.3f}" for s in report.scores[b]))
    print(f"wrote {len(report.overlays)} overlays ({SCENES} synthetic scenes, {len(PHOTOS)} photos) and {report.index} in {time.perf_counter() - start:.1f} s")
    return 0
