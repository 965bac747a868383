"""Dataset pipeline benchmark (CPU by default). Three tables, each measured within this run:

1. ``gradeclip explain`` pipeline images/s (JPEG files → decode/preprocess in DataLoader workers →
   explain → store) against in-memory ``explain_image`` and ``encode_image`` on the same images
   (ViT-B-32, random weights, 256 images). Target: pipeline ≥ 0.8× in-memory explain_image.
2. What "each image against its own text" costs with the Explainer's shared-text API, for the
   ways of cutting a batch (whole-batch diagonal, groups of at most G texts, one image per call),
   against the floor of one shared text for the whole batch.
3. Memory over a long run: RSS of the main process and of the DataLoader workers at the start
   and end of a 5,000-image run of a small (tiny, random-weight) model.

    python benches/bench_pipeline.py [--model ViT-B-32] [--images 256] [--rss-images 5000] [--skip ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import torch

import gradeclip
from gradeclip.commands.bench import describe_machine, measure, table, write_photos
from gradeclip.pipeline import ExplainJob, explain_dataset

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 3, "head_width": 16, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 3},
}


def pipeline_table(args: argparse.Namespace) -> None:
    result = measure(args.model, images=args.images, batch_size=args.batch_size, workers=args.workers, device="cpu")
    print(table(result))
    ratio = result["pipeline"] / result["explain"]
    print(f"\npipeline ÷ in-memory explain_image = {ratio:.2f} (target ≥ 0.80: {'met' if ratio >= 0.8 else 'NOT met'})\n")


def interleaved(strategies: dict[str, object], rounds: int) -> dict[str, float]:
    """Best wall seconds of each strategy, timed in turns (one warm-up round), so a burst of load
    on a shared machine does not fall on one strategy only."""
    best = {name: float("inf") for name in strategies}
    for round_ in range(rounds + 1):
        for name, fn in strategies.items():
            start = time.perf_counter()
            fn()  # type: ignore[operator]
            if round_:
                best[name] = min(best[name], time.perf_counter() - start)
    return best


def pairs_table(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    model, _, _ = gradeclip.load(args.model)
    explainer = gradeclip.Explainer(model)
    batch = args.pairs_batch
    images = torch.randn(batch, 3, 224, 224)
    captions = torch.nn.functional.normalize(torch.randn(batch, model.visual.proj.shape[1]), dim=-1)  # one per image

    def groups(size: int):
        return lambda: [explainer.explain_image(images[i : i + size], captions[i : i + size]) for i in range(0, batch, size)]

    strategies = {"one shared text for the batch (floor, not pairs)": lambda: explainer.explain_image(images, captions[:1])}
    calls = {"one shared text for the batch (floor, not pairs)": 1}
    for g in [g for g in args.groups if g < batch] + [batch, 1]:
        name = f"diagonal of the whole batch ({batch} × {batch})" if g == batch else "one image per call" if g == 1 else f"diagonal of groups of {g} images × their {g} texts"
        strategies[name], calls[name] = groups(g), -(-batch // g)
    best = interleaved(strategies, args.repeats)
    floor = best["one shared text for the batch (floor, not pairs)"]
    print(f"# {args.model}, {batch} images, each against its own text; {describe_machine(torch.device('cpu'))}; best of {args.repeats} interleaved rounds")
    print("\n| strategy | explain_image calls | pairs/s | ÷ floor |\n|---|---|---|---|")
    for name, seconds in best.items():
        print(f"| {name} | {calls[name]} | {batch / seconds:.2f} | {floor / seconds:.2f} |")
    print()


def rss_table(args: argparse.Namespace) -> None:
    import psutil
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory(prefix="gradeclip-rss-") as tmp:
        root = Path(tmp)
        (root / "model").mkdir()
        (root / "images").mkdir()
        torch.manual_seed(0)
        import open_clip

        tiny = open_clip.CLIP(**TINY)
        (root / "model" / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY, "preprocess_cfg": {}}))
        save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, root / "model" / "open_clip_model.safetensors")
        write_photos(root / "images", args.rss_images, short_side=(48, 96))

        me = psutil.Process()
        samples: list[tuple[float, int, int]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                workers = 0
                for child in me.children(recursive=True):
                    try:
                        workers += child.memory_info().rss
                    except psutil.Error:
                        pass
                samples.append((time.perf_counter(), me.memory_info().rss, workers))
                stop.wait(0.2)

        job = ExplainJob(
            model=str(root / "model"), data=str(root / "images"), out=str(root / "store"), texts=["a photo", "a cat"],
            batch_size=64, workers=args.workers, shard_size=256, progress=False,
        )
        before = me.memory_info().rss
        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        start = time.perf_counter()
        summary = explain_dataset(job)
        seconds = time.perf_counter() - start
        stop.set()
        thread.join()
        after = me.memory_info().rss
    running = [s for s in samples if s[2] > 0] or samples
    mib = 1 / 2**20
    print(f"# tiny model, {args.rss_images} images (48–96 px JPEGs), batch 64, {args.workers} workers, 2 texts: {summary.samples / seconds:.1f} images/s overall")
    print("\n| | main process RSS (MiB) | workers' RSS (MiB) |\n|---|---|---|")
    print(f"| before the run | {before * mib:.0f} | – |")
    for name, (_, main, workers) in (("first sample with workers", running[0]), ("middle", running[len(running) // 2]), ("last sample with workers", running[-1])):
        print(f"| {name} | {main * mib:.0f} | {workers * mib:.0f} |")
    print(f"| after the run | {after * mib:.0f} | – |")
    print(f"| peak | {max(s[1] for s in samples) * mib:.0f} | {max(s[2] for s in samples) * mib:.0f} |\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pairs-batch", type=int, default=64)
    parser.add_argument("--groups", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds of the pairs table")
    parser.add_argument("--rss-images", type=int, default=5000)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--skip", nargs="*", default=[], choices=("pipeline", "pairs", "rss"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if "pipeline" not in args.skip:
        pipeline_table(args)
    if "pairs" not in args.skip:
        pairs_table(args)
    if "rss" not in args.skip:
        rss_table(args)


if __name__ == "__main__":
    main()
