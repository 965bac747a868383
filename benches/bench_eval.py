"""Evaluation speed: the Rust checkpoint batch against the authors' path, and where a dataset run's
time goes. Same machine, same run.

    PYTHONPATH=python python benches/bench_eval.py [--repeats 3] [--threads N] [--images 64] [--torch-threads N]

1. image + heat map -> the model-ready batch of all 11 checkpoints (deletion and insertion,
   100 steps, every 10, CLIP's 224 preprocessing), per image, for scikit-image's photos at their own
   sizes. Baseline ("authors' path"): ``np.argsort`` of the map, the 100 steps in numpy (random fill
   from numpy's generator), then ``open_clip``'s transform (Pillow resize, centre crop, ToTensor,
   Normalize) on each checkpoint image. Ours: ``gradeclip.eval.perturbation_steps(...,
   output_size=224)`` on the whole batch (Rust, ``GRADECLIP_NUM_THREADS`` threads; the baseline's
   torch ops run on one thread, their fastest setting for tensors this small). Maps are a
   7x7 grid (a ViT-B/32 explanation's shape) upsampled bilinearly to the image; the last row uses
   per-pixel noise, the worst case for the incremental resize. Insertion outputs of both paths are
   compared (same pixels, same preprocessing: they must agree to an 8-bit level).
2. ``gradeclip.eval.deletion_insertion`` on N photos (crops and flips of scikit-image's, 5 classes)
   with ViT-B-32 (random weights) on the CPU: seconds per stage and the share of wall time spent in
   model forwards (explanations, checkpoint scoring and the class prompts).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
STEPS, EVAL_EVERY, SIZE = 100, 10, 224


def median_s(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm up (thread pool, allocator, lazy imports)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def photos() -> dict[str, np.ndarray]:
    from skimage import data

    return {
        "astronaut": data.astronaut(),
        "chelsea": data.chelsea(),
        "coffee": data.coffee(),
        "rocket": data.rocket(),
        "motorcycle": data.stereo_motorcycle()[0],
    }


def grid_map(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A 7x7 grid of random heat upsampled bilinearly (align_corners=False) to ``shape``."""
    import torch
    import torch.nn.functional as F

    grid = torch.from_numpy(np.random.default_rng(seed).random((1, 1, 7, 7)).astype(np.float32))
    return F.interpolate(grid, size=shape, mode="bilinear", align_corners=False)[0, 0].numpy()


def authors_path(image: np.ndarray, heat: np.ndarray, mode: str, preprocess, rng: np.random.Generator):
    """The straightforward pipeline: numpy steps, then open_clip's transform on each checkpoint."""
    import torch
    from PIL import Image

    h, w, _ = image.shape
    n = max(1, h * w // (2 * STEPS))
    order = np.argsort(-heat.ravel(), kind="stable")
    source = image.reshape(-1, 3)
    current = source.copy() if mode == "deletion" else np.zeros_like(source)
    frames = [preprocess(Image.fromarray(current.reshape(h, w, 3)))]
    for step in range(STEPS):
        pixels = order[step * n : (step + 1) * n]
        current[pixels] = rng.integers(0, 256, (len(pixels), 3), dtype=np.uint8) if mode == "deletion" else source[pixels]
        if (step + 1) % EVAL_EVERY == 0:
            frames.append(preprocess(Image.fromarray(current.reshape(h, w, 3))))
    return torch.stack(frames)


def part_checkpoints(repeats: int) -> None:
    import gradeclip
    import gradeclip.eval as ev
    import open_clip
    import torch

    preprocess = open_clip.image_transform(SIZE, is_train=False, mean=MEAN, std=STD)
    # The baseline's torch ops (ToTensor, Normalize) are small: one thread is their fastest setting,
    # and on a busy machine more OpenMP threads only make them wait for each other.
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cases = [(name, image, grid_map(image.shape[:2], i)) for i, (name, image) in enumerate(photos().items())]
    noise = [
        (f"{name} (noise map)", image, np.random.default_rng(9).random(image.shape[:2]).astype(np.float32))
        for name, image, _ in cases[:1]
    ]
    threads = gradeclip.build_info()["threads"]
    print(
        f"\n1. image + map -> model-ready checkpoint batch [11, 3, {SIZE}, {SIZE}], per image (median of {repeats}); gradeclip threads: {threads}"
    )
    print(f"| {'image':<26} | {'size':>9} | {'mode':<9} | {'ours ms':>8} | {'authors ms':>10} | {'ratio':>7} |")
    print(f"|{'-' * 28}|{'-' * 11}|{'-' * 11}|{'-' * 10}|{'-' * 12}|{'-' * 9}|")
    totals = {"ours": 0.0, "base": 0.0}
    for mode in ev.MODES:
        for name, image, heat in cases + noise:
            rng = np.random.default_rng(0)
            ours = median_s(partial(ev.perturbation_steps, image, heat, mode, output_size=SIZE, mean=MEAN, std=STD), repeats)
            base = median_s(partial(authors_path, image, heat, mode, preprocess, rng), repeats)
            if mode == "insertion":
                diff = np.abs(
                    ev.perturbation_steps(image, heat, mode, output_size=SIZE, mean=MEAN, std=STD)[0]
                    - authors_path(image, heat, mode, preprocess, rng).numpy()
                ).max()
                assert diff <= 1 / 255 / min(STD) + 1e-6, f"{name}: outputs differ by {diff}"
            if "noise" not in name:
                totals["ours"] += ours
                totals["base"] += base
            print(
                f"| {name:<26} | {image.shape[0]:>4}x{image.shape[1]:<4} | {mode:<9} | {1e3 * ours:8.2f} | {1e3 * base:10.2f} | {base / ours:6.1f}x |"
            )
    images = [image for _, image, _ in cases]
    maps = [heat for _, _, heat in cases]
    batch = {
        mode: median_s(partial(ev.perturbation_steps, images, maps, mode, output_size=SIZE, mean=MEAN, std=STD), repeats)
        for mode in ev.MODES
    }
    per_image = sum(batch.values()) / len(images)
    base_per_image = totals["base"] / len(images)
    print(
        f"| {'all 5 photos in one call':<26} | {'':>9} | {'both':<9} | {1e3 * per_image:8.2f} | {1e3 * base_per_image:10.2f} | {base_per_image / per_image:6.1f}x |"
    )
    print(
        f"(per image, deletion + insertion: ours {1e3 * per_image:.2f} ms batched / {1e3 * totals['ours'] / len(images):.2f} ms one by one; authors {1e3 * base_per_image:.2f} ms)"
    )
    torch.set_num_threads(torch_threads)


def part_harness(n_images: int) -> None:
    import gradeclip.eval as ev
    import open_clip
    import torch
    from PIL import Image

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        sources = list(photos().items())
        for i in range(n_images):
            name, image = sources[i % len(sources)]
            h, w, _ = image.shape
            ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
            top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            crop = image[top : top + ch, left : left + cw]
            if i % 2:
                crop = crop[:, ::-1]
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(crop)).save(root / name / f"{i:03d}.jpg", quality=92)
        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
        tokenizer = open_clip.get_tokenizer("ViT-B-32")
        dataset = ev.ImageFolder(root)
        start = time.perf_counter()
        result = ev.deletion_insertion(
            model, dataset, tokenizer=tokenizer, templates=["a photo of a {}."], batch_size=64, chunk_size=16, progress=False
        )
        wall = time.perf_counter() - start
    t = result.timings
    model_s = t.get("setup", 0) + t.get("explain", 0) + t.get("score", 0)
    print(f"\n2. deletion_insertion: {n_images} images, ViT-B-32 (random weights), CPU, torch threads: {torch.get_num_threads()}")
    print(f"| {'stage':<44} | {'seconds':>8} | {'share':>6} |")
    print(f"|{'-' * 46}|{'-' * 10}|{'-' * 8}|")
    labels = {
        "setup": "class prompts (text forwards)",
        "load": "decode image files",
        "preprocess": "resize + crop to the model's geometry (Rust)",
        "explain": "explanations (Grad-ECLIP forward + VJP)",
        "perturb": "checkpoint batches (Rust)",
        "score": "scoring forwards (22 per image)",
        "other": "everything else",
    }
    for stage, label in labels.items():
        if stage in t:
            print(f"| {label:<44} | {t[stage]:8.2f} | {100 * t[stage] / t['total']:5.1f}% |")
    print(f"| {'total':<44} | {t['total']:8.2f} | {'':>6} |")
    print(
        f"model forwards (prompts + explanations + scoring): {100 * model_s / t['total']:.1f}% of {wall:.1f} s wall time; "
        f"outside the model: {t['total'] - model_s:.2f} s ({1e3 * (t['total'] - model_s) / n_images:.1f} ms per image)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="sets GRADECLIP_NUM_THREADS")
    parser.add_argument("--images", type=int, default=64, help="images in part 2 (0 skips it)")
    parser.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads for part 2")
    args = parser.parse_args()
    if args.threads is not None:
        os.environ["GRADECLIP_NUM_THREADS"] = str(args.threads)
    if args.torch_threads is not None:
        import torch

        torch.set_num_threads(args.torch_threads)
    part_checkpoints(args.repeats)
    if args.images:
        part_harness(args.images)


if __name__ == "__main__":
    main()
