"""Explanation quality where the truth is known: Grad-ECLIP and every registered baseline on
held-out synthetic scenes, with the shipped tiny CLIP (``gradeclip-synth``).

For each of the first ``--scenes`` held-out (``test`` split) scenes, every object whose colour–shape
pair is unique in its scene becomes one sample: the scene, the object's exact mask, and its class
"a <colour> <shape>" among the world's 64 colour–shape classes. The zero-shot classifier averages
the class over the world's five caption prefixes ("", "a photo of", "an image of", "there is",
"a picture with"). Each method explains the scene for the sample's class, then

- localisation (SPEC §8, paper Table IV): Point Game, energy-PG, pixel accuracy, mask IoU, AP of
  the map against the object's mask;
- deletion / insertion (SPEC §7, paper Table I): top-1 / top-5 of the zero-shot classifier for the
  sample's class while pixels are removed (seeded noise) or inserted in heat-map order; AUCs.

Both go through ``gradeclip.eval`` (``localization``, ``deletion_insertion``) on folders written
under ``--out``; results are saved there (and resume if interrupted). Two baselines cost far
more per explanation and run on fewer scenes (their rows say how many samples): RISE (``n_masks``
= 2,000 forwards per explanation) on the first ``--rise-scenes`` scenes, M2IB (an optimisation of
10 steps × 10 samples per text) on the first ``--m2ib-scenes``.

    python benches/quality.py --scenes 500 --seed 0
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import gradeclip
from gradeclip.eval import ImageFolder, MaskFolder, deletion_insertion, localization, summary_table
from gradeclip.synth import make_scene
from gradeclip.synth.captions import PREFIXES, Mention
from gradeclip.synth.world import ALL_PAIRS

#: Grad-ECLIP's ablations (SPEC §2) beside its defaults; ``n_layers`` also runs with every block
GRADECLIP_VARIANTS = [{}, {"spatial": "softmax"}, {"spatial": "none"}, {"heads": "model"}, {"n_layers": 2}]


def class_folder(colour: str, shape: str) -> str:
    return f"{colour}_{shape}"


def write_world(root: Path, scenes: int, seed: int) -> tuple[int, int]:
    """Write samples of test scenes ``0 .. scenes-1`` under ``root/images`` and ``root/masks``
    (class sub-folders, one PNG per object whose colour–shape pair is unique in its scene) and the
    class index ``root/classes.txt``. Returns ``(samples, objects left out as ambiguous)``."""
    done = root / "complete.json"
    if done.is_file() and json.loads(done.read_text()) == {"scenes": scenes, "seed": seed}:
        counts = json.loads((root / "counts.json").read_text())
        return counts["samples"], counts["ambiguous"]
    samples = ambiguous = 0
    for index in range(scenes):
        scene = make_scene(index, "test", seed)
        pairs = [(o.colour, o.shape) for o in scene.objects]
        for k, (obj, mask) in enumerate(zip(scene.objects, scene.masks)):
            if pairs.count((obj.colour, obj.shape)) > 1:
                ambiguous += 1
                continue
            folder = class_folder(obj.colour, obj.shape)
            stem = f"s{index:05d}-o{k}.png"
            for kind, array in (("images", scene.image), ("masks", mask.astype(np.uint8) * 255)):
                (root / kind / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / kind / folder / stem)
            samples += 1
    (root / "classes.txt").write_text("".join(f"{class_folder(c, s)} {c} {s}\n" for c, s in ALL_PAIRS))
    (root / "counts.json").write_text(json.dumps({"samples": samples, "ambiguous": ambiguous}))
    done.write_text(json.dumps({"scenes": scenes, "seed": seed}))
    return samples, ambiguous


def variants(only: list[str] | None, depth: int) -> list[tuple[str, dict]]:
    """Grad-ECLIP's variants, then every other registered method with its defaults."""
    layers = [{"n_layers": depth}] if depth > 2 else []
    out = [("gradeclip", v) for v in GRADECLIP_VARIANTS + layers]
    out += [(name, {}) for name in gradeclip.methods() if name != "gradeclip"]
    return [(m, o) for m, o in out if only is None or m in only]


def run_method(job: tuple[str, dict, Path, int, int, Path, Path | None, int, int]) -> tuple[dict, list]:
    """Localisation and deletion/insertion of one method on one data folder (loads the model
    itself, so jobs can run in separate processes). Returns its table row and the two results."""
    method, options, root, scenes, samples, out, weights, seed, threads = job
    torch.set_num_threads(threads)
    model, _, tokenizer = gradeclip.load("gradeclip-synth", pretrained=weights)
    class_names = [Mention(c, s).phrase() for c, s in ALL_PAIRS]  # "a red circle", "an orange star", …
    common = dict(tokenizer=tokenizer, class_names=class_names, templates=list(PREFIXES), model_name="gradeclip-synth", progress=False)
    t0 = time.perf_counter()
    loc = localization(
        model, MaskFolder(root / "images", root / "masks", root / "classes.txt"), method=method, options=options,
        out_dir=out / "results", **common,
    )
    faith = deletion_insertion(
        model, ImageFolder(root / "images", root / "classes.txt"), method=method, options=options, seed=seed,
        out_dir=out / "results", **common,
    )
    row = {
        "method": method + "".join(f" {k}={v}" for k, v in options.items()),
        "scenes": scenes,
        "samples": samples,
        **{m: float(loc.means[m]) for m in ("point_game", "energy_pg", "mask_iou", "average_precision")},
        "deletion_top1": float(faith.auc["deletion"]["top1"]),
        "insertion_top1": float(faith.auc["insertion"]["top1"]),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(row), flush=True)
    return row, [loc, faith]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=500, help="held-out scenes (test split)")
    parser.add_argument("--rise-scenes", type=int, default=20, help="scenes for RISE (2,000 forwards per explanation)")
    parser.add_argument("--m2ib-scenes", type=int, default=50, help="scenes for M2IB (an optimisation per explanation)")
    parser.add_argument("--seed", type=int, default=0, help="scene seed and deletion-noise seed")
    parser.add_argument("--weights", type=Path, default=None, help="gradeclip-synth weights (default: the shipped ones)")
    parser.add_argument("--methods", nargs="*", default=None, help="only these registered methods (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job (1 is fastest on a busy machine)")
    parser.add_argument("--jobs", type=int, default=1, help="methods run at once, each in its own process")
    parser.add_argument("--out", type=Path, default=Path("benches/out/quality"))
    args = parser.parse_args(argv)

    t_start = time.perf_counter()
    depth = len(gradeclip.load("gradeclip-synth", pretrained=args.weights)[0].visual.transformer.resblocks)
    scene_counts = {"main": args.scenes, "rise": min(args.rise_scenes, args.scenes), "m2ib": min(args.m2ib_scenes, args.scenes)}
    data = {}
    for name, count in scene_counts.items():
        root = args.out / f"data-{count}-seed{args.seed}"
        samples, ambiguous = write_world(root, count, args.seed)
        data[name] = (root, count, samples)
        print(f"{name}: {count} held-out scenes -> {samples} samples ({ambiguous} objects left out: colour-shape repeated in their scene)")

    jobs = [
        (method, options, *data[method if method in data else "main"], args.out, args.weights, args.seed, args.threads)
        for method, options in variants(args.methods, depth)
    ]
    if args.jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            # the costly baselines first, so the other jobs fill in around them
            order = sorted(range(len(jobs)), key=lambda i: jobs[i][0] not in ("rise", "m2ib"))
            done = dict(zip(order, pool.map(run_method, [jobs[i] for i in order], chunksize=1)))
        outcomes = [done[i] for i in range(len(jobs))]
    else:
        outcomes = [run_method(job) for job in jobs]
    rows = [row for row, _ in outcomes]
    results = [r for _, pair in outcomes for r in pair]

    print()
    print(summary_table(results))
    print()
    head = ["method", "scenes", "samples", "PG", "energy-PG", "mask IoU", "AP", "del AUC top-1 (↓)", "ins AUC top-1 (↑)", "s"]
    keys = ["method", "scenes", "samples", "point_game", "energy_pg", "mask_iou", "average_precision", "deletion_top1", "insertion_top1", "seconds"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(f"{row[k]:.3f}" if isinstance(row[k], float) and k != "seconds" else str(row[k]) for k in keys) + " |")
    command = "python benches/quality.py " + " ".join(sys.argv[1:] if argv is None else argv)
    wall = round(time.perf_counter() - t_start, 1)
    (args.out / "quality.json").write_text(json.dumps({"command": command, "seed": args.seed, "wall_seconds": wall, "rows": rows}, indent=2))
    print(f"\ncommand: {command}\nseed: {args.seed}; wall time {wall} s ({args.jobs} job(s) at once); results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
