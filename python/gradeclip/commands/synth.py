"""``gradeclip synth``: the synthetic world — draw scenes, train the tiny CLIP, measure its retrieval."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import GradeclipError


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("synth", help="the synthetic world: draw scenes, train the tiny CLIP, evaluate it")
    sub = parser.add_subparsers(dest="synth_command", required=True, metavar="SUBCOMMAND")

    train = sub.add_parser("train", help="train the tiny CLIP on the synthetic world (CPU)")
    train.add_argument("--out", type=Path, required=True, help="weights file to write (.safetensors; its .json beside it)")
    train.add_argument("--steps", type=int, default=None, help="optimizer steps")
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--lr", type=float, default=None, help="peak learning rate")
    train.add_argument("--warmup", type=int, default=None, help="linear warm-up steps")
    train.add_argument("--seed", type=int, default=None)
    train.add_argument("--complete-captions", type=float, default=None, help="probability that a training caption mentions every object")
    train.add_argument("--attribute-rate", type=float, default=None, help="probability that a training caption states an object's size (and, apart, its region)")
    train.add_argument("--workers", type=int, default=None, help="data-parallel worker processes sharing each batch")
    train.add_argument("--threads", type=int, default=None, help="torch threads per worker (1 is fastest on a busy machine)")
    train.add_argument("--eval-every", type=int, default=None, help="steps between learning-curve retrieval checks (0: none)")
    train.add_argument("--eval-size", type=int, default=None, help="held-out captions for the final retrieval test (0: skip)")
    train.add_argument("--log", type=Path, default=None, help="append one JSON line per log step to this file")
    train.set_defaults(run=run_train)

    evaluate = sub.add_parser("eval", help="held-out text→image retrieval of a trained model")
    evaluate.add_argument("--weights", type=Path, default=None, help="weights file (default: the shipped gradeclip-synth)")
    evaluate.add_argument("--count", type=int, default=1000, help="captions (and images) in the retrieval pool")
    evaluate.add_argument("--split", choices=("test", "val"), default="test")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.set_defaults(run=run_eval)

    draw = sub.add_parser("draw", help="write scenes as PNGs with their masks and captions (JSON lines)")
    draw.add_argument("--out", type=Path, required=True, help="folder to write into")
    draw.add_argument("--count", type=int, default=16)
    draw.add_argument("--split", choices=("train", "val", "test"), default="test")
    draw.add_argument("--seed", type=int, default=0)
    draw.add_argument("--size", type=int, default=64, help="image side in pixels")
    draw.set_defaults(run=run_draw)

    pairs = sub.add_parser("pairs", help="write scenes as an image–caption table (pairs.csv) to fine-tune on")
    pairs.add_argument("--out", type=Path, required=True, help="folder to write into")
    pairs.add_argument("--count", type=int, default=4096)
    pairs.add_argument("--split", choices=("train", "val", "test"), default="train")
    pairs.add_argument("--seed", type=int, default=0)
    pairs.add_argument("--captions", choices=("random", "complete"), default="random", help="training captions (random objects and attributes) or complete ones")
    pairs.set_defaults(run=run_pairs)


def run_train(args: argparse.Namespace) -> int:
    from ..synth.train import TrainConfig, train

    overrides = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "warmup": args.warmup,
        "seed": args.seed,
        "threads": args.threads,
        "workers": args.workers,
        "complete_captions": args.complete_captions,
        "attribute_rate": args.attribute_rate,
        "eval_every": args.eval_every,
        "eval_size": args.eval_size,
    }
    cfg = TrainConfig(**{k: v for k, v in overrides.items() if v is not None})
    log_file = args.log.open("a") if args.log else None

    def log(record: dict[str, Any]) -> None:
        if log_file is not None:
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()

    try:
        record = train(cfg, args.out, log=log)
    except GradeclipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if log_file is not None:
            log_file.close()
    print(json.dumps({"weights": str(args.out), **{k: record[k] for k in ("train_seconds", "images_per_s", "retrieval")}}, indent=2))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from ..synth.captions import ATTRIBUTES
    from ..synth.model import load_weights, shipped_weights, build_tokenizer
    from ..synth.train import retrieval

    try:
        model, record = load_weights(args.weights or shipped_weights())
    except GradeclipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = record["config"]
    tokenizer = build_tokenizer(config)
    out = {}
    for name, attrs in (("full", ATTRIBUTES), ("colour_shape", ("colour", "shape"))):
        out[name] = retrieval(model, tokenizer, config, args.count, args.split, args.seed, attrs)
    print(json.dumps(out, indent=2))
    return 0


def run_draw(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from ..synth import caption_of, make_scenes

    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "scenes.jsonl").open("w") as index:
        for scene in make_scenes(args.count, args.split, args.seed, args.size):
            stem = f"{args.split}-{scene.index:05d}"
            scene.pil().save(args.out / f"{stem}.png")
            for k, mask in enumerate(scene.masks):
                Image.fromarray((mask * np.uint8(255)).astype(np.uint8), "L").save(args.out / f"{stem}-mask{k}.png")
            row = {
                "image": f"{stem}.png",
                "caption": caption_of(scene).text,
                "objects": [
                    {"caption": caption_of(scene, (k,), ("colour", "shape")).text, "mask": f"{stem}-mask{k}.png", **vars(o)}
                    for k, o in enumerate(scene.objects)
                ],
            }
            index.write(json.dumps(row) + "\n")
    print(f"wrote {args.count} scenes to {args.out}")
    return 0


def run_pairs(args: argparse.Namespace) -> int:
    from ..synth.export import write_pairs

    table = write_pairs(args.out, args.count, args.split, args.seed, captions=args.captions)
    print(f"wrote {args.count} scenes and {table}")
    return 0
