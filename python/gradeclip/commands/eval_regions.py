"""``gradeclip eval regions``: zero-shot classification of boxes and masks from dense features
(paper Table VII) and retrieval R@1/5/10 (Table IX).

    gradeclip eval regions --model gradeclip-synth --synth 500 --retrieval 1000
    gradeclip eval regions --model gradeclip-synth --pretrained ft/model.safetensors --synth 500 --retrieval 1000
    gradeclip eval regions --model ViT-B-16 --pretrained openai --annotations coco/annotations/instances_val2017.json \\
        --images coco/val2017 --stuff-annotations coco/annotations/stuff_val2017.json --retrieval-data flickr30k_test.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import GradeclipError


def add_parser(sub: Any) -> None:
    """Register ``gradeclip eval regions`` under the ``eval`` sub-commands ``sub``."""
    p = sub.add_parser("regions", help="box / mask zero-shot classification from dense features, and retrieval (paper Tables VII, IX)")
    p.add_argument("--model", required=True, help="open_clip ViT architecture or gradeclip-synth")
    p.add_argument("--pretrained", default=None, help="open_clip tag or checkpoint (e.g. a fine-tuned model.safetensors)")
    p.add_argument("--device", default="cpu")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--synth", type=int, metavar="N", help="the first N held-out (test) scenes of the synthetic world")
    where.add_argument("--annotations", type=Path, help="COCO-format instances JSON (boxes + thing masks)")
    p.add_argument("--images", type=Path, help="folder the annotation file's file_name entries are in")
    p.add_argument("--stuff-annotations", type=Path, help="COCO-format stuff segments JSON (e.g. stuff_val2017.json)")
    p.add_argument("--limit", type=int, default=None, help="only the first N annotated images")
    p.add_argument("--templates", default=None, help="prompt templates: none, simple, openai or a file (default: none for --synth, openai otherwise)")
    p.add_argument("--retrieval", type=int, metavar="N", help="retrieval over N held-out synthetic scenes and their complete captions")
    p.add_argument("--retrieval-data", help="retrieval over the image–caption pairs of a folder, table or shards (e.g. Flickr30k test)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="synthetic world seed")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate; prints the results table (and writes ``--out``). Returns the exit status."""
    try:
        results = _run(args)
    except GradeclipError as exc:
        print(f"gradeclip eval regions: {exc}", file=sys.stderr)
        return 2
    print(table(results))
    if args.out is not None:
        from ..files import write_json

        write_json(args.out, results)
    return 0


def _run(args: argparse.Namespace) -> dict[str, Any]:
    from ..eval.regions import evaluate
    from ..loading import load
    from ..zeroshot import templates

    model, preprocess, tokenizer = load(args.model, args.pretrained, device=args.device)
    results = evaluate(
        model,
        preprocess,
        tokenizer,
        synth=args.synth,
        annotations=args.annotations,
        images=args.images,
        stuff=args.stuff_annotations,
        limit=args.limit,
        templates=templates(args.templates) if args.templates else None,
        retrieval_synth=args.retrieval,
        retrieval_data=args.retrieval_data,
        seed=args.seed,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    return {"model": args.model, "pretrained": args.pretrained, **results}


def table(results: dict[str, Any]) -> str:
    """The results as text: one row per region kind (top-1 / top-5 in %, count), then recall rows."""
    lines = [f"{'regions':<10}{'top-1':>8}{'top-5':>8}{'count':>8}"]
    for kind, r in results["regions"].items():
        lines.append(f"{kind:<10}{100 * r['top1']:>8.1f}{100 * r['top5']:>8.1f}{r['count']:>8}")
    for direction, recall in results.get("retrieval", {}).items():
        lines.append(f"{direction:<10}" + "".join(f"{k.upper()} {100 * v:.1f}  " for k, v in recall.items()))
    return "\n".join(lines)


__all__ = ["add_parser", "run", "table"]
