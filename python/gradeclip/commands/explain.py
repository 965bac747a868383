"""``gradeclip explain``: explain a whole dataset into a resumable store (docs/datasets.md).

Runs the same under ``torchrun --nproc_per_node N -m gradeclip explain ...`` (or the ``gradeclip``
script): every rank takes its own part of the input.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from ..errors import GradeclipError, InputError

EPILOG = """examples:
  gradeclip explain --model ViT-B-16 --pretrained open_clip_model.safetensors --data pets/ --texts "a cat" "a dog" --out pets.gx
  gradeclip explain --model ViT-B-16 --pretrained ckpt.pt --data captions.csv --out coco.gx          (each image vs its caption)
  gradeclip explain --model ViT-B-16 --pretrained ckpt.pt --data 'shards/{00000..00099}.tar' --classnames --top-k 3 --out zs.gx
  torchrun --nproc_per_node 8 -m gradeclip explain ...                                                (one rank per GPU)
"""


def job_defaults() -> dict[str, Any]:
    """Each :class:`gradeclip.pipeline.ExplainJob` field with a plain default, and that default:
    the one place the command's defaults come from."""
    from ..pipeline import ExplainJob

    return {f.name: f.default for f in dataclasses.fields(ExplainJob) if f.default is not dataclasses.MISSING}


def add_parser(subparsers: Any) -> None:
    """Register ``explain`` and its options; defaults and choices are the job's
    (:class:`gradeclip.pipeline.ExplainJob`) and those of the modules that check them."""
    from ..compat import PRESETS
    from ..data import FORMATS
    from ..data.table import CAPTION_COLUMNS, IMAGE_COLUMNS, KEY_COLUMNS, LABEL_COLUMNS
    from ..preprocessing import RESOLUTIONS
    from ..loading import PRECISIONS
    from ..methods.gradeclip import HEADS, QK_SPACES, SPATIAL
    from ..pipeline import COLORMAPS
    from ..zeroshot import DEFAULT_TEMPLATES, TEMPLATE_SETS

    job = job_defaults()

    def either(names: tuple[str, ...]) -> str:
        return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]

    p = subparsers.add_parser(
        "explain",
        help="explain a dataset (folder, table or tar shards) into a resumable store",
        description="Explain every image of a dataset into a store: DIR/index.parquet, DIR/maps/*.npy, DIR/manifest.json. "
        "Rerunning the same command resumes an interrupted run.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model = p.add_argument_group("model")
    model.add_argument("--model", required=True, help="open_clip architecture (ViT-B-16, ...), a folder with open_clip_config.json and weights (also as local-dir:FOLDER), or a Hugging Face CLIP/BLIP model: hub id (openai/clip-vit-base-patch32) or save_pretrained folder")
    model.add_argument("--pretrained", help="open_clip pretrained tag or a checkpoint file (default: the folder's weights, else random weights)")
    model.add_argument("--precision", choices=tuple(PRECISIONS), default=job["precision"], help="model precision (default: %(default)s)")
    model.add_argument("--seed", type=int, default=job["seed"], help="seed of random weights (no --pretrained): every run and process builds the same model (default: %(default)s)")
    model.add_argument("--device", default=job["device"], help="auto (the rank's GPU if any, else CPU), cpu, cuda, cuda:N (default: %(default)s)")

    data = p.add_argument_group("input")
    data.add_argument("--data", required=True, help="a folder of images, a .csv/.tsv/.parquet table, or tar shards ('shards/{00000..00099}.tar')")
    data.add_argument("--format", choices=FORMATS, default=job["format"], help="what --data is (default: %(default)s, guessed from it)")
    data.add_argument("--image-column", help=f"table column with image paths (default: the first of {', '.join(IMAGE_COLUMNS)})")
    data.add_argument("--caption-column", help=f"table column with captions (default: {either(CAPTION_COLUMNS)}, if present)")
    data.add_argument("--label-column", help=f"table column with ground-truth classes, for --classnames (default: {either(LABEL_COLUMNS)}, if present)")
    data.add_argument("--key-column", help=f"table column with unique sample keys (default: {either(KEY_COLUMNS)} if present, else the row number)")
    data.add_argument("--images-root", help="folder that relative image paths in a table start from (default: the table's folder)")

    what = p.add_argument_group("what to explain (default: each image against its own caption)")
    texts = what.add_mutually_exclusive_group()
    texts.add_argument("--texts", nargs="+", metavar="TEXT", help="explain every image against each of these texts")
    texts.add_argument("--texts-file", metavar="FILE", help="like --texts, one text per line")
    texts.add_argument(
        "--classnames", nargs="?", const="imagenet", metavar="FILE",
        help="zero-shot: explain each image's top-k predicted classes; FILE has one class name per line (default: ImageNet's 1,000)",
    )
    what.add_argument(
        "--templates", help=f"zero-shot prompt templates: {', '.join(TEMPLATE_SETS)}, or a file with '{{}}' lines (default: {DEFAULT_TEMPLATES})"
    )
    what.add_argument("--top-k", type=int, default=job["top_k"], help="zero-shot: predicted classes explained per image (default: %(default)s)")

    method = p.add_argument_group("method")
    method.add_argument("--method", default=job["method"], help="explanation method (see gradeclip.methods(); default: %(default)s)")
    method.add_argument("--heads", choices=HEADS, help="Grad-ECLIP: single-head re-run (paper) or the model's own heads")
    method.add_argument("--spatial", choices=SPATIAL, help="Grad-ECLIP spatial weights")
    method.add_argument("--qk-space", choices=QK_SPACES, help="Grad-ECLIP: where q and k are compared")
    method.add_argument("--n-layers", type=int, help="Grad-ECLIP: explain the last N blocks and sum their maps")
    method.add_argument(
        "--compat", choices=tuple(PRESETS),
        help="authors: the paper authors' released form (maps with qk_space=out_proj; --text-maps with λ over all 77 positions "
        "and one ReLU after the layer sum; SPEC §12); flags given explicitly win",
    )
    method.add_argument(
        "--resolution", choices=RESOLUTIONS, default=job["resolution"],
        help="model: the model's own preprocess; native: each image at about its own size, sides rounded to patch multiples "
        "(ViTs that interpolate their position embeddings; each row records its input size) (default: %(default)s)",
    )
    method.add_argument("--max-short-side", type=int, metavar="N", help="--resolution native: cap each image's shorter side at N pixels")
    method.add_argument("--option", action="append", default=[], metavar="NAME=VALUE", help="any other method option (VALUE read as JSON, else as text); repeatable")

    extra = p.add_argument_group("more outputs")
    extra.add_argument("--overlays", action="store_true", help="also write each map over its original image (at its own size; the border the model's crop cut away dimmed) as a PNG in DIR/overlays/")
    extra.add_argument("--alpha", type=float, default=job["alpha"], help="overlay: weight of the colour map (default: %(default)s)")
    extra.add_argument("--colormap", choices=COLORMAPS, default=job["colormap"], help="overlay colour map (default: %(default)s)")
    extra.add_argument("--text-maps", action="store_true", help="also explain each text: word importances in the index (columns words, word_importance)")
    extra.add_argument("--text-layers", type=int, default=job["text_layers"], help="text maps: the text tower's last blocks explained (default: min(8, its depth))")

    out = p.add_argument_group("output")
    out.add_argument("--out", required=True, metavar="DIR", help="the store folder (created; resumed if it holds the same run)")
    out.add_argument("--overwrite", action="store_true", help="replace a store made with another model, input or options")
    out.add_argument("--shard-size", type=int, default=job["shard_size"], help="samples per map shard: the unit of commit and resume (default: %(default)s)")

    speed = p.add_argument_group("speed")
    speed.add_argument("--batch-size", type=int, default=job["batch_size"], help="images per model batch (default: %(default)s)")
    speed.add_argument("--workers", type=int, help="DataLoader workers decoding images (default: min(8, CPUs))")
    speed.add_argument("--prefetch", type=int, default=job["prefetch"], help="batches each worker prepares ahead (default: %(default)s)")
    speed.add_argument("--max-targets", type=int, default=job["max_targets"], help="pairs/zero-shot: most texts per model call (default: %(default)s)")
    speed.add_argument(
        "--dist-timeout", dest="dist_timeout_min", type=float, default=job["dist_timeout_min"], metavar="MINUTES",
        help="torchrun: how long ranks wait for each other (default: %(default)g)",
    )
    speed.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def parse_options(args: argparse.Namespace) -> dict[str, Any]:
    """The method options from the Grad-ECLIP flags and ``--option NAME=VALUE`` entries."""
    options: dict[str, Any] = {}
    for flag in ("heads", "spatial", "qk_space", "n_layers"):
        if getattr(args, flag) is not None:
            options[flag] = getattr(args, flag)
    for entry in args.option:
        name, sep, text = entry.partition("=")
        if not sep or not name.strip():
            raise InputError(f"--option needs NAME=VALUE, got {entry!r}")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        options[name.strip()] = value
    return options


def job_from_args(args: argparse.Namespace) -> Any:
    """The :class:`gradeclip.pipeline.ExplainJob` the arguments describe."""
    from ..pipeline import ExplainJob
    from ..zeroshot import imagenet_classnames, read_lines, templates

    texts = read_lines(args.texts_file) if args.texts_file else args.texts
    classnames = None
    if args.classnames is not None:
        classnames = imagenet_classnames() if args.classnames == "imagenet" else read_lines(args.classnames)
    job = ExplainJob(
        model=args.model,
        data=args.data,
        out=args.out,
        pretrained=args.pretrained,
        texts=texts,
        classnames=classnames,
        templates=templates(args.templates) if classnames is not None and args.templates is not None else None,
        top_k=args.top_k,
        method=args.method,
        options=parse_options(args),
        compat=args.compat,
        resolution=args.resolution,
        max_short_side=args.max_short_side,
        format=args.format,
        image_column=args.image_column,
        caption_column=args.caption_column,
        label_column=args.label_column,
        key_column=args.key_column,
        images_root=args.images_root,
        overlays=args.overlays,
        alpha=args.alpha,
        colormap=args.colormap,
        text_maps=args.text_maps,
        text_layers=args.text_layers,
        seed=args.seed,
        shard_size=args.shard_size,
        precision=args.precision,
        batch_size=args.batch_size,
        prefetch=args.prefetch,
        max_targets=args.max_targets,
        device=args.device,
        overwrite=args.overwrite,
        progress=not args.quiet,
        dist_timeout_min=args.dist_timeout_min,
    )
    if args.workers is not None:
        job.workers = args.workers
    return job


def run(args: argparse.Namespace) -> int:
    """Run ``gradeclip explain``; 0 on success, 2 when the input, model or store is refused."""
    from ..pipeline import explain_dataset

    try:
        summary = explain_dataset(job_from_args(args))
    except GradeclipError as exc:
        print(f"gradeclip explain: error: {exc}", file=sys.stderr)
        return 2
    if summary.counts is not None:
        print(summary.describe(args.out))
        if summary.counts["errors"]:
            print(f"failures are listed in {args.out}/index.parquet (status == 'error', with the reason in 'error')")
    return 0
