"""``gradeclip eval``: the paper's evaluations on your data.

    gradeclip eval faithfulness --model ViT-B-16 --pretrained openai --images imagenet/val
    gradeclip eval faithfulness --model ViT-B-16 --pretrained openai --captions coco_val.csv
    gradeclip eval text-faithfulness --model ViT-B-16 --pretrained openai --captions coco_val.csv
    gradeclip eval localization --model ViT-B-16 --pretrained openai --images imagenet-s/validation \\
        --masks imagenet-s/validation-segmentation
    gradeclip eval regions --model gradeclip-synth --synth 500 --retrieval 1000
    gradeclip eval table results/*.json
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..compat import COMPATS
from ..errors import GradeclipError, InputError


def _option(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--option takes KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        required=True,
        help="what gradeclip.load takes: an open_clip architecture (ViT-B-16), gradeclip-synth, a model folder or a Hugging Face id",
    )
    p.add_argument("--pretrained", default=None, help="open_clip tag or checkpoint file (default: random weights)")
    p.add_argument("--model-seed", type=int, default=0, help="seed of random weights (no --pretrained; default: 0)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--chunk-size", type=int, default=16, help="images prepared at once")
    p.add_argument("--limit", type=int, default=None, help="only the first N images (rows)")
    p.add_argument("--out", default="gradeclip-eval", help="output folder for JSON + CSV (resumes an interrupted run)")
    p.add_argument("--no-progress", action="store_true")


def _explain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", action="append", help="explanation method (repeat for several; default gradeclip)")
    p.add_argument(
        "--option",
        action="append",
        type=_option,
        default=[],
        metavar="KEY=VALUE",
        help="option for every --method, value parsed as JSON when it can be (repeat)",
    )
    p.add_argument("--class-index", help="class index file for class sub-folders (see docs/evaluation.md)")
    p.add_argument(
        "--class-names",
        help="text file, one class name per line in label order (default: open_clip's ImageNet names for 1000 classes, else the folders')",
    )
    p.add_argument(
        "--templates", default="openai", help="'openai' (80 prompts), 'simple' or a text file with one '{}' template per line"
    )
    p.add_argument("--resolution", default=None, choices=["model", "native"], help="default: model (native with --compat authors)")
    p.add_argument("--max-short-side", type=int, default=None, help="cap for --resolution native (640 with --compat authors)")
    p.add_argument(
        "--compat", choices=list(COMPATS),
        help="authors: the authors' released evaluation (SPEC §12, docs/reproduce.md): q, k after out_proj, their native geometry; "
        "faithfulness also their argsort pixel order; text-faithfulness their textual form. Flags given explicitly win",
    )
    p.add_argument("--explain-batch-size", type=int, default=8)


def _table_arguments(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--captions", required=required, help="image-caption table .csv/.tsv/.parquet (retrieval)")
    p.add_argument("--image-root", help="folder the table's image paths are relative to (default: the table's folder)")
    p.add_argument("--image-column")
    p.add_argument("--caption-column")


def add_parser(subparsers: Any) -> None:
    """Register ``gradeclip eval`` and its sub-commands."""
    parser = subparsers.add_parser(
        "eval",
        help="faithfulness (deletion/insertion) and localisation evaluation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="eval_command", required=True, metavar="TASK")
    faith = sub.add_parser("faithfulness", help="deletion / insertion curves and AUCs (paper Tables I-II)")
    _run_arguments(faith)
    _explain_arguments(faith)
    faith.add_argument("--images", help="ImageNet-style folder: one sub-folder per class (zero-shot classification)")
    _table_arguments(faith, required=False)
    faith.add_argument(
        "--target",
        action="append",
        choices=["gt", "ground_truth", "pred", "predicted"],
        help="explained class: ground truth and/or predicted (repeat; default gt)",
    )
    faith.add_argument("--modes", nargs="+", default=["deletion", "insertion"], choices=["deletion", "insertion"])
    faith.add_argument("--steps", type=int, default=100)
    faith.add_argument("--eval-every", type=int, default=10)
    faith.add_argument("--seed", type=int, default=0)
    faith.add_argument(
        "--pixel-order", choices=["stable", "argsort"], default=None,
        help="stable: heat descending, ties in raster order (default); argsort: the authors' np.argsort(-heat) (default with --compat authors)",
    )
    faith.add_argument("--batch-size", type=int, default=64, help="images per scoring forward")
    faith.set_defaults(run=run)
    text = sub.add_parser("text-faithfulness", help="word deletion / insertion of captions (paper Table III)")
    _run_arguments(text)
    _table_arguments(text, required=True)
    text.add_argument("--n-text-layers", type=int, help="text blocks explained (default: min(8, the text tower's depth))")
    text.add_argument("--heads", default="single", choices=["single", "model"])
    text.add_argument("--compat", choices=list(COMPATS), help="authors: their released textual form (λ over all 77 positions, one ReLU after the layer sum; SPEC §12)")
    text.add_argument("--modes", nargs="+", default=["deletion", "insertion"], choices=["deletion", "insertion"])
    text.add_argument("--steps", type=int, default=5, help="words changed, one per step")
    text.add_argument("--batch-size", type=int, default=64, help="images per gallery forward")
    text.set_defaults(run=run)
    local = sub.add_parser("localization", help="Point Game, energy-PG, pixel accuracy, mask IoU, AP (paper Table IV)")
    _run_arguments(local)
    _explain_arguments(local)
    local.add_argument("--images", required=True, help="image folder (class sub-folders give each image's class)")
    local.add_argument("--masks", required=True, help="mask folder with the same relative paths, .png")
    local.add_argument("--mask-format", default="auto", choices=["auto", "binary", "imagenet-s"])
    local.add_argument("--text", help="explain every image for this text instead of its class")
    local.set_defaults(run=run)
    from . import eval_regions

    eval_regions.add_parser(sub)  # its own run function
    table = sub.add_parser("table", help="print the summary table of saved results")
    table.add_argument("results", nargs="+", help="result .json files")
    table.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run one ``gradeclip eval`` task; prints the summary table. Returns the exit status."""
    try:
        return _run(args)
    except GradeclipError as exc:
        print(f"gradeclip eval: {exc}", file=sys.stderr)
        return 2


def _check_text_layers(skeleton: Any, n_text_layers: int | None) -> None:
    """Refuse, before the weights load, an ``--n-text-layers`` the text tower of the model's
    skeleton (:func:`gradeclip.loading.skeleton`; None: not known before loading) does not have."""
    from ..explainer import Explainer

    if n_text_layers is None or skeleton is None:
        return
    depth = len(Explainer(skeleton).text_tower.blocks)
    if not 1 <= n_text_layers <= depth:
        raise InputError(f"--n-text-layers must be in 1..{depth} (the model's text blocks), got {n_text_layers}")


def _check_methods(methods: list[str], options: dict[str, Any]) -> None:
    """Refuse, before the weights load, an unknown ``--method`` or an ``--option`` one of them does not take."""
    from ..explainer import check_option_names
    from ..methods import get_method

    for method in methods:
        _, fn = get_method(method)
        check_option_names(method, fn, options)


def _run(args: argparse.Namespace) -> int:
    from .. import eval as evaluation
    from ..zeroshot import read_lines, templates

    if args.eval_command == "table":
        print(evaluation.summary_table([evaluation.load_result(p) for p in args.results]))
        return 0
    from ..loading import load, model_identity, random_weights_warning, skeleton, weights_source

    if args.eval_command == "faithfulness":
        evaluation.checkpoint_fractions(args.steps, args.eval_every)  # a bad schedule fails before the model loads
    if args.eval_command == "text-faithfulness":
        _check_text_layers(skeleton(args.model, args.pretrained), args.n_text_layers)
    else:
        _check_methods(args.method or ["gradeclip"], dict(args.option))
    warning = random_weights_warning(weights_source(args.model, args.pretrained, args.model_seed))
    if warning:
        print(f"gradeclip eval: {warning}", file=sys.stderr)
    model, _, tokenizer = load(args.model, args.pretrained, device=args.device, precision=args.precision, seed=args.model_seed)
    model_name = model_identity(model).describe()
    run_options: dict[str, Any] = {
        "chunk_size": args.chunk_size,
        "limit": args.limit,
        "out_dir": args.out,
        "model_name": model_name,
        "progress": not args.no_progress,
    }
    results: list[Any] = []
    if args.eval_command == "text-faithfulness":
        table = evaluation.CaptionTable(
            args.captions, image_root=args.image_root, image_column=args.image_column, caption_column=args.caption_column
        )
        results.append(
            evaluation.text_deletion_insertion(
                model,
                table,
                tokenizer=tokenizer,
                n_text_layers=args.n_text_layers,
                heads=args.heads,
                compat=args.compat,
                modes=args.modes,
                steps=args.steps,
                batch_size=args.batch_size,
                **run_options,
            )
        )
        print(evaluation.summary_table(results))
        print(f"\nresults (JSON + CSV) in {args.out}/", file=sys.stderr)
        return 0
    explain_options: dict[str, Any] = dict(
        tokenizer=tokenizer,
        options=dict(args.option),
        class_names=read_lines(args.class_names) if args.class_names else None,
        templates=templates(args.templates),
        resolution=args.resolution,
        max_short_side=args.max_short_side,
        compat=args.compat,
        explain_batch_size=args.explain_batch_size,
        **run_options,
    )
    methods = args.method or ["gradeclip"]
    if args.eval_command == "faithfulness":
        if bool(args.images) == bool(args.captions):
            raise InputError("give one of --images (classification) or --captions (retrieval)")
        if args.images:
            dataset: Any = evaluation.ImageFolder(args.images, class_index=args.class_index)
            targets = args.target or ["gt"]
        else:
            dataset = evaluation.CaptionTable(
                args.captions, image_root=args.image_root, image_column=args.image_column, caption_column=args.caption_column
            )
            targets = ["gt"]
            if args.target and set(args.target) - {"gt", "ground_truth"}:
                raise InputError("retrieval explains each image for its own caption: only --target gt applies")
        for method in methods:
            for target in targets:
                results.append(
                    evaluation.deletion_insertion(
                        model,
                        dataset,
                        method=method,
                        target=target,
                        modes=args.modes,
                        steps=args.steps,
                        eval_every=args.eval_every,
                        seed=args.seed,
                        pixel_order=args.pixel_order,
                        batch_size=args.batch_size,
                        **explain_options,
                    )
                )
    else:
        dataset = evaluation.MaskFolder(args.images, args.masks, class_index=args.class_index, mask_format=args.mask_format)
        for method in methods:
            results.append(evaluation.localization(model, dataset, method=method, text=args.text, **explain_options))
    print(evaluation.summary_table(results))
    print(f"\nresults (JSON + CSV) in {args.out}/", file=sys.stderr)
    return 0
