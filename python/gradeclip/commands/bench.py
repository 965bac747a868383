"""``gradeclip bench``: dataset-pipeline throughput against the in-memory Explainer and the plain
image encoder, measured in the same run on the same images, with the machine described."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import GradeclipError

if TYPE_CHECKING:  # torch is imported where it is used, so that `gradeclip --help` stays fast
    import torch


def add_parser(subparsers: Any) -> None:
    """Register ``bench`` and its options."""
    p = subparsers.add_parser(
        "bench",
        help="measure pipeline images/s vs in-memory explain_image and encode_image",
        description="Writes N real photos (resized crops of scikit-image's) as JPEG files, then measures in one run: "
        "encode_image images/s and explain_image pairs/s on the preprocessed images in memory, and the full "
        "`gradeclip explain` pipeline (decode, preprocess, explain, store) on the files.",
    )
    p.add_argument("--model", default="ViT-B-32", help="open_clip architecture or model folder (default: ViT-B-32)")
    p.add_argument("--pretrained", help="pretrained tag or checkpoint (default: random weights — speed does not depend on them)")
    p.add_argument("--images", type=int, default=256, help="number of images (default: 256)")
    p.add_argument("--batch-size", type=int, default=64, help="images per model batch (default: 64)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="pipeline DataLoader workers (default: min(8, CPUs))")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32")
    p.add_argument("--method", default="gradeclip", help="explanation method (default: gradeclip)")
    p.set_defaults(run=run)


def describe_machine(device: torch.device) -> str:
    """One line: CPU model and cores, torch threads, the GPU when used, and versions."""
    import open_clip
    import torch

    from .._version import __version__

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    parts = [f"CPU {cpu}", f"{os.cpu_count()} logical cores", f"torch threads {torch.get_num_threads()}"]
    if device.type == "cuda":
        parts.append(f"GPU {torch.cuda.get_device_name(device)}")
    parts.append(f"python {platform.python_version()}, torch {torch.__version__}, open_clip {open_clip.__version__}, gradeclip {__version__}")
    return "; ".join(parts)


def write_photos(folder: Path, count: int, *, short_side: tuple[int, int] = (224, 480), seed: int = 0) -> list[Path]:
    """``count`` JPEG files in ``folder``: random crops of scikit-image's photos, resized so their
    shorter side is uniform in ``short_side`` (pixels, inclusive)."""
    import numpy as np
    import skimage.data as sd
    from PIL import Image

    photos = [Image.fromarray(a).convert("RGB") for a in (sd.astronaut(), sd.chelsea(), sd.coffee(), sd.rocket(), sd.stereo_motorcycle()[0])]
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        photo = photos[i % len(photos)]
        w, h = int(rng.integers(photo.width // 2, photo.width + 1)), int(rng.integers(photo.height // 2, photo.height + 1))
        x, y = int(rng.integers(0, photo.width - w + 1)), int(rng.integers(0, photo.height - h + 1))
        crop = photo.crop((x, y, x + w, y + h))
        scale = int(rng.integers(short_side[0], short_side[1] + 1)) / min(crop.size)
        crop = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))), Image.Resampling.BILINEAR)
        path = folder / f"{i:06d}.jpg"
        crop.save(path, quality=90)
        paths.append(path)
    return paths


def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    model: str,
    *,
    pretrained: str | None = None,
    images: int = 256,
    batch_size: int = 64,
    workers: int = 2,
    device: str = "auto",
    precision: str = "fp32",
    method: str = "gradeclip",
) -> dict[str, Any]:
    """Run the three measurements; returns their rates (``encode``, ``explain``, ``pipeline``,
    ``pipeline_wall`` per second), the machine description and the settings."""
    import torch

    from ..data.images import decode_image, read_file
    from ..distributed import resolve_device
    from ..explainer import Explainer
    from ..loading import load
    from ..pipeline import ExplainJob, explain_dataset, model_name

    dev = resolve_device(device, 0)
    clip, preprocess, tokenizer = loaded = load(model_name(model), pretrained, device=dev, precision=precision)
    explainer = Explainer(clip, tokenizer)
    text, _ = explainer.encode_texts(["a photo"])
    with tempfile.TemporaryDirectory(prefix="gradeclip-bench-") as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        paths = write_photos(folder, images)
        tensors = []
        for path in paths:
            tensors.append(preprocess(decode_image(read_file(path))))
        batches = [torch.stack(tensors[i : i + batch_size]).to(dev) for i in range(0, len(tensors), batch_size)]
        dtype = next(clip.parameters()).dtype

        with torch.no_grad():
            clip.encode_image(batches[0][:2].to(dtype))  # warm-up
            _sync(dev)
            start = time.perf_counter()
            for batch in batches:
                clip.encode_image(batch.to(dtype))
            _sync(dev)
        encode = images / (time.perf_counter() - start)

        explainer.explain_image(batches[0][:2], text, method=method)  # warm-up
        _sync(dev)
        start = time.perf_counter()
        for batch in batches:
            explainer.explain_image(batch, text, method=method)
        _sync(dev)
        explain = images / (time.perf_counter() - start)

        job = ExplainJob(
            model=model, data=str(folder), out=str(Path(tmp) / "store"), pretrained=pretrained, texts=["a photo"],
            method=method, batch_size=batch_size, workers=workers, device=str(dev), precision=precision, progress=False,
        )
        start = time.perf_counter()
        summary = explain_dataset(job, loaded=loaded)
        wall = images / (time.perf_counter() - start)
    return {
        "machine": describe_machine(dev),
        "settings": f"{model}, {images} images, batch {batch_size}, {workers} workers, {dev}, {precision}, method {method}, 1 text",
        "encode": encode,
        "explain": explain,
        "pipeline": summary.images_per_second,
        "pipeline_wall": wall,
    }


def table(result: dict[str, Any]) -> str:
    """The measurements as a Markdown table with ratios to in-memory ``explain_image``."""
    rows = [
        ("encode_image (in memory, no explanation)", result["encode"]),
        ("explain_image (in memory)", result["explain"]),
        ("gradeclip explain pipeline (files → store)", result["pipeline"]),
        ("  same, including setup (store, text, checks)", result["pipeline_wall"]),
    ]
    lines = [f"# {result['machine']}", f"# {result['settings']}", "", "| measurement | images/s | ÷ explain_image |", "|---|---|---|"]
    lines += [f"| {name} | {rate:.2f} | {rate / result['explain']:.2f} |" for name, rate in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``gradeclip bench`` and print its table; 2 on a refused model or option."""
    try:
        result = measure(
            args.model, pretrained=args.pretrained, images=args.images, batch_size=args.batch_size, workers=args.workers,
            device=args.device, precision=args.precision, method=args.method,
        )
    except GradeclipError as exc:
        print(f"gradeclip bench: error: {exc}", file=sys.stderr)
        return 2
    print(table(result))
    return 0
