"""Rendering speed: gradeclip.render (Rust) against the usual Python pipelines, same machine, same run.

    PYTHONPATH=python python benches/bench_render.py [--repeats 7] [--threads N]

Prints three tables (median wall time over the repeats, ratio = baseline / gradeclip):

1. upsampling 256 maps 14x14 -> 224x224, vs ``F.interpolate(align_corners=False)`` with
   ``torch.set_num_threads`` set to gradeclip's thread count (``GRADECLIP_NUM_THREADS``);
2. overlay + PNG encoding of 64 photos 224x224, vs upsampling with ``F.interpolate``, min-max in
   numpy, matplotlib's ``jet`` colormap, a numpy blend and Pillow's PNG encoder;
3. the PNG compression presets on those 64 overlays (time and size), with Pillow's encoder
   (zlib level 6, its default) on the same overlays for reference.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm up (thread pool, allocator, lazy tables)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def photos(n: int, size: int) -> np.ndarray:
    """``n`` real photos (scikit-image's bundled ones, cycled) resized to ``size`` x ``size``."""
    from PIL import Image
    from skimage import data

    sources = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    resized = [np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC)) for im in sources]
    return np.stack([resized[i % len(resized)] for i in range(n)])


def row(name: str, ours: float, base: float, note: str = "") -> None:
    print(f"| {name:<38} | {ours:9.2f} | {base:9.2f} | {base / ours:6.2f}x | {note}")


def header(title: str, base_name: str) -> None:
    print(f"\n{title}\n| {'case':<38} | {'ours ms':>9} | {base_name:>9} | {'ratio':>7} |")
    print(f"|{'-' * 40}|{'-' * 11}|{'-' * 11}|{'-' * 9}|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="sets GRADECLIP_NUM_THREADS")
    args = parser.parse_args()
    if args.threads is not None:
        os.environ["GRADECLIP_NUM_THREADS"] = str(args.threads)

    import matplotlib
    import torch
    import torch.nn.functional as F
    from PIL import Image

    import gradeclip
    from gradeclip import render

    threads = int(gradeclip.build_info()["threads"])
    torch.set_num_threads(threads)
    print(f"threads: gradeclip {threads}, torch {torch.get_num_threads()}; cpus {os.cpu_count()}; "
          f"median of {args.repeats}")
    rng = np.random.default_rng(0)

    # 1. Upsampling.
    header("1. upsample 256 maps 14x14 -> 224x224 (float32)", "torch ms")
    grid = rng.standard_normal((256, 14, 14), dtype=np.float32)
    grid_t = torch.from_numpy(grid)[:, None]
    for mode in ("bilinear", "bicubic"):
        ours = median_ms(lambda: render.upsample(grid, (224, 224), mode), args.repeats)
        base = median_ms(
            lambda: F.interpolate(grid_t, size=(224, 224), mode=mode, align_corners=False).numpy(), args.repeats
        )
        row(f"upsample {mode}", ours, base, "vs F.interpolate")
    ours = median_ms(lambda: render.normalize(render.upsample(grid, (224, 224))), args.repeats)

    def torch_up_norm() -> np.ndarray:
        up = F.interpolate(grid_t, size=(224, 224), mode="bilinear", align_corners=False)[:, 0]
        lo = up.amin(dim=(1, 2), keepdim=True)
        hi = up.amax(dim=(1, 2), keepdim=True)
        return ((up - lo) / (hi - lo)).numpy()

    row("upsample bilinear + normalize", ours, median_ms(torch_up_norm, args.repeats), "vs torch ops")

    # 2. Overlay + PNG.
    images = photos(64, 224)
    maps = rng.standard_normal((64, 14, 14), dtype=np.float32)
    jet = matplotlib.colormaps["jet"]

    def baseline_pngs() -> list[bytes]:
        up = F.interpolate(torch.from_numpy(maps)[:, None], size=(224, 224), mode="bilinear", align_corners=False)
        out = []
        for image, m in zip(images, up[:, 0].numpy()):
            m = (m - m.min()) / (m.max() - m.min())
            colour = jet(m, bytes=True)[..., :3]
            blended = (0.5 * image + 0.5 * colour + 0.5).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(blended).save(buf, format="PNG")
            out.append(buf.getvalue())
        return out

    header("2. overlay + PNG encode, 64 photos 224x224", "PIL+mpl")
    base = median_ms(baseline_pngs, args.repeats)
    ours = median_ms(lambda: render.encode_png(render.overlay(images, maps)), args.repeats)
    row("overlay + encode_png (in memory)", ours, base, "vs torch+numpy+matplotlib+Pillow")
    with tempfile.TemporaryDirectory() as tmp:
        paths = [os.path.join(tmp, f"{i}.png") for i in range(len(images))]

        def baseline_files() -> None:
            for path, data in zip(paths, baseline_pngs()):
                with open(path, "wb") as f:
                    f.write(data)

        base = median_ms(baseline_files, args.repeats)
        ours = median_ms(lambda: render.save_overlays(paths, images, maps), args.repeats)
        row("save_overlays (files)", ours, base, "baseline writes the files too")

    # 3. PNG presets.
    overlays = render.overlay(images, maps)

    def pillow_pngs() -> list[bytes]:
        out = []
        for image in overlays:
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, format="PNG", compress_level=6)
            out.append(buf.getvalue())
        return out

    print("\n3. PNG encoding of the 64 overlays (224x224 RGB): gradeclip's presets and Pillow")
    print(f"| {'preset':<22} | {'ms / 64':>8} | {'mean KB':>8} |")
    print(f"|{'-' * 24}|{'-' * 10}|{'-' * 10}|")
    for preset in ("fastest", "fast", "balanced", "high"):
        ms = median_ms(lambda: render.encode_png(overlays, compression=preset), args.repeats)
        kb = np.mean([len(b) for b in render.encode_png(overlays, compression=preset)]) / 1024
        print(f"| {preset:<22} | {ms:8.2f} | {kb:8.1f} |")
    ms = median_ms(pillow_pngs, args.repeats)
    kb = np.mean([len(b) for b in pillow_pngs()]) / 1024
    print(f"| {'Pillow (zlib level 6)':<22} | {ms:8.2f} | {kb:8.1f} |")


if __name__ == "__main__":
    main()
