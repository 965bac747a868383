"""Fine-tuning gradeclip-synth with and without the Grad-ECLIP local loss (paper §6, Tables VII / IX).

From the shipped gradeclip-synth, the same training pairs, steps and seed for
(a) ordinary fine-tuning (global loss), (b) + local loss with Grad-ECLIP maps, (c) with Grad-CAM
maps, (d) with MaskCLIP maps. Each model is evaluated on held-out (test) scenes: zero-shot
classification of every object's box and mask from the dense features (classes: the 64
colour–shape pairs) and text↔image retrieval R@1 of complete captions. Step cost: seconds per
optimizer step, each run measured in this process on the same batch size; (b) ÷ (a) is printed.

    PYTHONPATH=python python benches/finetune.py --steps 30 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from gradeclip.data import open_source
from gradeclip.eval import regions
from gradeclip.explainer import Explainer
from gradeclip.finetune import FinetuneConfig, finetune
from gradeclip.loading import load
from gradeclip.synth.export import write_pairs
from gradeclip.zeroshot import classifier

#: paper Table VII (ViT-B/16, COCO val2017): box top-1/top-5, thing-mask top-1/top-5; Table IX R@1 (t2i, Flickr30k)
PAPER = {
    "pretrained": (41.4, 63.6, 30.6, 53.8, 73.6),
    "a": (42.9, 64.8, 32.9, 56.4, 72.7),
    "b": (57.3, 78.3, 49.3, 72.2, 72.8),
    "c": (54.2, 74.7, 46.5, 69.8, None),
    "d": (54.3, 75.5, 47.4, 70.9, None),
}
RUNS = {"a": ("ordinary fine-tuning (global loss)", False, "gradeclip"), "b": ("+ local loss, Grad-ECLIP maps", True, "gradeclip"), "c": ("+ local loss, Grad-CAM maps", True, "gradcam"), "d": ("+ local loss, MaskCLIP maps", True, "maskclip")}


def evaluate(weights: str | None, scenes: int, pairs: int) -> dict:
    model, preprocess, tokenizer = load("gradeclip-synth", weights)
    names = regions.synth_classnames()
    weights_c = classifier(Explainer(model, tokenizer), names, ["{}"])
    acc = regions.region_accuracy(model, regions.synth_regions(scenes, preprocess), weights_c)
    recall = regions.synth_retrieval(model, tokenizer, preprocess, pairs)
    return {"regions": acc, "retrieval": recall}


def step_cost(table: Path, batch_size: int, repeats: int) -> dict:
    """Seconds of one training micro-step (forward, losses, backward) of (a) and (b) on the same
    batch, alternated ``repeats`` times in this process (medians), so machine load hits both alike."""
    import statistics

    from gradeclip.distributed import Ranks
    from gradeclip.finetune.pairs import PairStream
    from gradeclip.finetune.trainer import Finetuner, load_model

    ranks = Ranks(0, 1, torch.device("cpu"))
    model, preprocess, tokenizer, _ = load_model("gradeclip-synth", None, ranks.device)
    pairs, _ = next(iter(PairStream(open_source(table), preprocess, micro_batch=batch_size, rank=0, world=1, seed=0, start_micro=0)))
    runners = {key: Finetuner(model, tokenizer, FinetuneConfig(batch_size=batch_size, local=RUNS[key][1], maps=RUNS[key][2], phrases="synth"), ranks) for key in "ab"}
    times: dict[str, list[float]] = {"a": [], "b": []}
    for _ in range(repeats):
        for key, runner in runners.items():
            t0 = time.perf_counter()
            runner.losses(pairs).total.backward()
            times[key].append(time.perf_counter() - t0)
            model.zero_grad(set_to_none=True)
    a, b = statistics.median(times["a"]), statistics.median(times["b"])
    return {"a_s": a, "b_s": b, "ratio": b / a, "repeats": repeats}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=None, help="default: the trainer's gradeclip-synth default")
    p.add_argument("--local-weight", type=float, default=1.0, help="λ_l (SPEC §10 default 1)")
    p.add_argument("--local-temperature", type=float, default=0.07, help="τ_l (SPEC §10 default 0.07)")
    p.add_argument("--train-pairs", type=int, default=2048, help="training scenes written once and shared by every run")
    p.add_argument("--scenes", type=int, default=300, help="held-out scenes for region classification")
    p.add_argument("--pairs", type=int, default=500, help="held-out pairs for retrieval")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default="abcd")
    p.add_argument("--cost-repeats", type=int, default=7, help="alternated (a)/(b) steps timed for the step cost")
    p.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="gradeclip-finetune-bench-"))
    table = write_pairs(work / "pairs", args.train_pairs, seed=args.seed)
    results = {"setup": vars(args) | {"out": None}, "pretrained": evaluate(None, args.scenes, args.pairs)}
    for key in args.runs:
        label, local, maps = RUNS[key]
        cfg = FinetuneConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, local=local, local_weight=args.local_weight, local_temperature=args.local_temperature, maps=maps, phrases="synth", seed=args.seed, log_every=max(1, args.steps // 5), checkpoint_every=args.steps)
        t0 = time.perf_counter()
        record = finetune("gradeclip-synth", open_source(table), work / key, cfg, device="cpu", progress=False)
        wall = time.perf_counter() - t0
        results[key] = evaluate(str(work / key / "model.safetensors"), args.scenes, args.pairs)
        results[key] |= {"step_s": record["elapsed_s"] / args.steps, "wall_s": wall, "curve": record["curve"]}
        print(f"{key}: {label}: {results[key]['step_s']:.2f} s/step, box top-1 {results[key]['regions']['boxes']['top1']:.3f}", flush=True)
    print()
    print("| model | box top-1 | box top-5 | mask top-1 | mask top-5 | t2i R@1 | i2t R@1 | s/step | paper box top-1 / mask top-1 / t2i R@1 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key in ["pretrained", *args.runs]:
        r = results[key]
        box, mask, rec = r["regions"]["boxes"], r["regions"]["things"], r["retrieval"]
        paper = PAPER[key]
        name = "gradeclip-synth (shipped)" if key == "pretrained" else f"({key}) {RUNS[key][0]}"
        step = f"{r['step_s']:.2f}" if "step_s" in r else "–"
        ref = f"{paper[0]} / {paper[2]} / {paper[4] if paper[4] is not None else '–'}"
        print(f"| {name} | {100 * box['top1']:.1f} | {100 * box['top5']:.1f} | {100 * mask['top1']:.1f} | {100 * mask['top5']:.1f} | {100 * rec['t2i']['r1']:.1f} | {100 * rec['i2t']['r1']:.1f} | {step} | {ref} |")
    results["cost"] = step_cost(table, args.batch_size, args.cost_repeats)
    cost = results["cost"]
    print(f"\nstep cost (b) ÷ (a): {cost['ratio']:.2f} ({cost['b_s']:.2f} s / {cost['a_s']:.2f} s per step of {args.batch_size} pairs, medians of {cost['repeats']} alternated steps, {args.threads} thread(s))")
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
