"""Dataset runs: input source → DataLoader workers → Explainer → store; resumable, torchrun-aware.

Work is cut into *chunks*, the unit a store commits: for a folder or table, chunk ``c`` holds
samples ``[c·S, (c+1)·S)`` (``S`` = ``shard_size``) and is named ``c0000042``; for tar shards,
chunk ``b`` of shard ``j`` holds that shard's samples ``[b·S, (b+1)·S)`` and is named
``s000007-00003``. Chunk names do not depend on the number of processes, so a run can resume with
another world size. Under ``torchrun`` rank ``r`` of ``W`` takes chunks (folder/table) or shards
(tar) ``r, r+W, r+2W, …``; DataLoader worker ``w`` of ``K`` takes every K-th batch (folder/table:
all workers fill one chunk at a time, in order) or shard (tar).

What each image is explained against (SPEC §2 maps, any registered method):

- ``texts``: every image against one shared list; one model call per batch.
- ``pairs``: each image against its own caption.
- ``zeroshot``: each image against its top-k predicted classes (the unmodified model's scores
  against the class embeddings), plus its ground-truth class when the source gives a label.

In the last two modes images want different texts. The Explainer explains a batch against a
shared text list, so a batch is cut into consecutive groups whose union of wanted texts stays
within ``max_targets``; each group is one ``explain_image`` call and each image keeps its own
texts' maps. The extra work is the gradient for the union's other texts: one vector-Jacobian
product of the post-attention row per text (SPEC §2 step 2), small next to the tower forward
(see ``benches/bench_pipeline.py`` for the measured cost of the group size).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset
from tqdm.auto import tqdm

from .compat import PRESETS, check_compat, resolve
from .data import IndexedSource, ShardedSource, Source, open_source
from .data.batches import Batch, IndexedBatches, ShardBatches, indexed_chunk, worker_init
from .data.batches import identity as identity_collate
from .distributed import Ranks, barrier, broadcast, gather, init_ranks
from .errors import GradeclipError, InputError, ModelLoadError, StoreError, UnsupportedModelError
from .explainer import Explainer, check_option_names
from .files import write_bytes
from .hf_loading import is_hf_name
from .image_inputs import overlay_original
from .preprocessing import RESOLUTIONS, InputPreparation
from .loading import PRECISIONS, ModelIdentity, load, model_identity, random_weights_warning, skeleton, weights_source
from .store import INDEX, MANIFEST, OVERLAYS, PARTS, ChunkBuffer, StoreWriter, read_manifest
from .targets import Row, Targets
from .words import TruncationWarning, truncated_after, truncation_message
from .zeroshot import DEFAULT_TEMPLATES, classifier, templates

PENDING_WRITES = 4  # overlay batches and chunks waiting for the writer thread before the main loop waits
COLORMAPS = ("jet", "viridis", "turbo")
SHOWN_WARNINGS = 10  # row warnings printed on stderr per rank; all are in the store's warnings column


@dataclass
class ExplainJob:
    """Everything a dataset run needs. Settings above ``batch_size`` decide the store's content
    (a store made with others is refused); the rest only how fast it is made.

    Attributes:
        model: open_clip architecture name, ``local-dir:FOLDER`` (an ``open_clip_config.json`` and
            weights, as on the Hugging Face hub), or such a folder's path.
        data: the input: folder, table, or tar shards (:func:`gradeclip.data.open_source`).
        out: the store folder.
        pretrained: open_clip tag or checkpoint file; None = the folder's weights (``local-dir``)
            or random weights.
        texts: explain every image against these texts.
        classnames: zero-shot: explain the top-k predicted of these classes.
        templates: zero-shot prompt templates (``{}`` = the class name); None = open_clip's 80
            OpenAI ImageNet templates.
        top_k: zero-shot: how many predicted classes per image.
        method, options: the explanation method and its options (:meth:`Explainer.explain_image`).
        compat: ``"authors"``: Grad-ECLIP's maps and text maps in the authors' released form
            (SPEC §12: ``qk_space="out_proj"``; ``lambda_keys="context"``, ``relu="after_sum"``),
            options given explicitly winning (the images at ``resolution``, not in the
            authors' own two-resize native geometry).
        resolution: ``"model"`` (the model's own preprocess) or ``"native"``: each image at about
            its own size, sides rounded to patch multiples (SPEC §4,
            :class:`gradeclip.preprocessing.InputPreparation`); a batch's images are explained in
            groups of one input size, and each row records its input size
            (``input_height``, ``input_width``). ``max_short_side``: with ``"native"``, the cap on
            the shorter side.
        format, image_column, caption_column, label_column, key_column, images_root: how to read ``data``.
        overlays: also write each map over its image as a PNG (SPEC §9), with ``alpha`` and
            ``colormap`` (``jet``, ``viridis``, ``turbo``), on the original image at its own size
            (the crop's border dimmed; :func:`gradeclip.image_inputs.overlay_original`).
        text_maps: also explain each pair's text (SPEC §3): word importances in the index, from
            the text tower's last ``text_layers`` blocks (None: ``min(8, depth)``; with the
            ``heads`` option, if given).
        seed: random weights (no ``pretrained``) are drawn from this seed, so every process and
            every resume explains the same model (:func:`gradeclip.load`).
        shard_size: samples per chunk (the unit of commit and resume).
        precision: ``fp32``, ``fp16`` or ``bf16``.
        batch_size: images per model batch.
        workers: DataLoader worker processes decoding and preprocessing (0 = in the main process).
        prefetch: batches each worker prepares ahead.
        max_targets: the most texts one model call explains in ``pairs``/``zeroshot`` mode.
        device: ``auto`` (the rank's GPU if there is one, else the CPU), ``cpu``, ``cuda``, ``cuda:N``.
        overwrite: replace a store made with other settings.
        progress: show a progress bar (rank 0).
        dist_timeout_min: how long ranks wait for each other (minutes).
    """

    model: str
    data: str
    out: str
    pretrained: str | None = None
    texts: list[str] | None = None
    classnames: list[str] | None = None
    templates: list[str] | None = None
    top_k: int = 5
    method: str = "gradeclip"
    options: dict[str, Any] = field(default_factory=dict)
    compat: str | None = None
    resolution: str = "model"
    max_short_side: int | None = None
    format: str = "auto"
    image_column: str | None = None
    caption_column: str | None = None
    label_column: str | None = None
    key_column: str | None = None
    images_root: str | None = None
    overlays: bool = False
    alpha: float = 0.5
    colormap: str = "jet"
    text_maps: bool = False
    text_layers: int | None = None
    seed: int = 0
    shard_size: int = 1024
    precision: str = "fp32"
    batch_size: int = 64
    workers: int = field(default_factory=lambda: min(8, os.cpu_count() or 1))
    prefetch: int = 4
    max_targets: int = 32
    device: str = "auto"
    overwrite: bool = False
    progress: bool = True
    dist_timeout_min: float = 24 * 60

    @property
    def mode(self) -> str:
        """``texts``, ``zeroshot`` or ``pairs``."""
        return "texts" if self.texts is not None else "zeroshot" if self.classnames is not None else "pairs"

    def check(self) -> None:
        """Raise :class:`InputError` for a setting out of range."""
        if self.texts is not None and self.classnames is not None:
            raise InputError("give either texts or class names (zero-shot), not both")
        if self.texts is not None and (not self.texts or any(not t.strip() for t in self.texts)):
            raise InputError("texts must be a non-empty list of non-empty strings")
        for name in ("shard_size", "batch_size", "prefetch", "max_targets", "top_k", "text_layers"):
            value = getattr(self, name)
            if (value is not None or name != "text_layers") and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise InputError(f"seed must be an integer, got {self.seed!r}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise InputError(f"workers must be an integer ≥ 0, got {self.workers!r}")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        check_compat(self.compat)
        if self.resolution not in RESOLUTIONS:
            raise InputError(f"resolution (--resolution) must be one of {', '.join(RESOLUTIONS)}, got {self.resolution!r}")
        if self.max_short_side is not None:
            if self.resolution != "native":
                raise InputError("max_short_side (--max-short-side) caps native-resolution inputs: give it with resolution 'native' (--resolution native)")
            if isinstance(self.max_short_side, bool) or not isinstance(self.max_short_side, int) or self.max_short_side < 1:
                raise InputError(f"max_short_side (--max-short-side) must be a positive integer, got {self.max_short_side!r}")
        if self.compat is not None and self.method != "gradeclip":
            raise InputError(f"compat={self.compat!r} sets Grad-ECLIP's options; method {self.method!r} has none of them")
        if self.text_maps and self.mode == "zeroshot":
            raise InputError("text maps explain captions or given texts; zero-shot classes are averages of prompt templates")
        if not 0.0 <= self.alpha <= 1.0:
            raise InputError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.colormap not in COLORMAPS:
            raise InputError(f"colormap must be one of {', '.join(COLORMAPS)}, got {self.colormap!r}")


@dataclass
class RunSummary:
    """What a run did, counted over the whole job (every rank).

    ``counts`` is the store's (:meth:`gradeclip.store.StoreWriter.merge`: ``samples``, ``ok``
    pairs, ``failed_samples`` …) on rank 0, None on the others.
    """

    samples: int  # samples explained or recorded as failed in this run
    failed: int  # of those, samples with no explained pair (every row an error)
    seconds: float  # from the first batch to the last commit, on the slowest rank
    skipped_chunks: int  # chunks already complete when the run started
    counts: dict[str, int] | None
    already_complete: bool = False  # the store was complete: nothing was loaded or explained

    @property
    def images_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    @property
    def skipped(self) -> int | None:
        """Samples already in the store when the run started (rank 0), else None."""
        return None if self.counts is None else self.counts["samples"] - self.samples

    def describe(self, out: str) -> str:
        """The lines a command prints: the store's totals, then what this run did, skipped and failed."""
        assert self.counts is not None
        c = self.counts
        total = f"{out}: {c['samples']:,} samples ({c['samples'] - c['failed_samples']:,} explained, {c['failed_samples']:,} failed), {c['ok']:,} explained pairs"
        if self.already_complete:
            return f"{total}\nthe store was already complete: nothing to do (the model was not loaded)"
        run = (
            f"this run: {self.samples:,} samples done ({self.samples - self.failed:,} explained, {self.failed:,} failed) "
            f"in {self.seconds:.1f} s ({self.images_per_second:.1f} images/s); {self.skipped:,} skipped (already in the store)"
        )
        return f"{total}\n{run}"


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages that decide a store's content."""
    from importlib.metadata import PackageNotFoundError, version

    from ._version import __version__

    found = {"python": platform.python_version(), "gradeclip": __version__}
    for name in ("torch", "open_clip_torch", "numpy", "pillow", "pyarrow"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "missing"
    return found


def input_size(preprocess: Callable[[Image.Image], Tensor]) -> tuple[int, int]:
    """``(H, W)`` of the model's preprocessed input."""
    probe = preprocess(Image.new("RGB", (640, 480)))
    return int(probe.shape[-2]), int(probe.shape[-1])


def _text_bank(job: ExplainJob, explainer: Explainer, progress: bool) -> Tensor | None:
    if job.mode == "texts":
        assert job.texts is not None
        return explainer.encode_texts(job.texts)[0]
    if job.mode == "zeroshot":
        assert job.classnames is not None and job.templates is not None
        return classifier(explainer, job.classnames, job.templates, progress=progress)
    return None


#: config entries known only once the model is loaded (the rest decides, before loading, whether a store is finished)
LOADED_SETTINGS = ("input_size", "parameters_sha256")


def _config(job: ExplainJob, source: Source, size: tuple[int, int] | None, identity: ModelIdentity) -> dict[str, Any]:
    return {
        "model": job.model,
        "pretrained": job.pretrained,
        "weights": identity.weights,
        "weights_sha256": identity.file_sha256,
        "parameters_sha256": identity.fingerprint,
        "precision": job.precision,
        "method": job.method,
        "options": _image_options(job),
        "mode": job.mode,
        "texts": job.texts,
        "classnames": job.classnames,
        "templates": job.templates,
        "top_k": job.top_k if job.mode == "zeroshot" else None,
        "input": source.fingerprint(),
        "resolution": job.resolution,
        "max_short_side": job.max_short_side,
        "input_size": None if size is None else list(size),
        "shard_size": job.shard_size,
        "overlays": {"alpha": job.alpha, "colormap": job.colormap} if job.overlays else None,
        "text_maps": _text_options(job),
    }


def _image_options(job: ExplainJob) -> dict[str, Any]:
    """The method options the maps are made with: ``job.options`` over the compat preset's, if any."""
    return job.options if job.compat is None else resolve(job.compat, "image", job.options)


def _text_options(job: ExplainJob) -> dict[str, Any] | None:
    if not job.text_maps:
        return None
    form = {} if job.compat is None else {k: v for k, v in PRESETS[job.compat]["text"].items() if k not in job.options}
    return {"n_layers": job.text_layers, "heads": job.options.get("heads", "single"), **form}


def _finished(out: Path, config: dict[str, Any]) -> dict[str, int] | None:
    """The counts of a complete store at ``out`` made with ``config`` (compared without
    :data:`LOADED_SETTINGS`), else None."""
    manifest = read_manifest(out) if (out / MANIFEST).is_file() else None
    if manifest is None or not manifest.get("complete") or not isinstance(manifest.get("counts"), dict):
        return None
    if not (out / INDEX).is_file() or len(list((out / PARTS).glob("*.parquet"))) != manifest["counts"].get("chunks"):
        return None  # something was removed since: resume
    stored = {k: v for k, v in manifest.get("config", {}).items() if k not in LOADED_SETTINGS}
    wanted = {k: v for k, v in json.loads(json.dumps(config)).items() if k not in LOADED_SETTINGS}
    return manifest["counts"] if stored == wanted else None


@dataclass
class Overlays:
    """Writes overlay PNGs (SPEC §9): each map over its original image at the image's own size, the
    border the model's centre crop cut away dimmed (:func:`gradeclip.image_inputs.overlay_original`,
    the function behind :meth:`ImageExplanation.overlay`). ``inputs``: how each original was
    mapped to the model input."""

    root: Path
    alpha: float
    colormap: str
    inputs: InputPreparation

    def save(self, tasks: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
        """Write ``(path relative to the store, original image [H, W, 3] uint8, raw map [h, w])`` overlays."""
        from . import render

        for folder in {(self.root / path).parent for path, _, _ in tasks}:
            folder.mkdir(parents=True, exist_ok=True)
        for path, image, grid in tasks:
            mapping = self.inputs.mapping(*image.shape[:2])
            drawn = overlay_original(image, grid.astype(np.float32), mapping, self.alpha, self.colormap)
            write_bytes(self.root / path, render.encode_png(drawn[None])[0])


def _work(
    source: Source, job: ExplainJob, ranks: Ranks, done: dict[str, bool], preprocess: Callable[[Image.Image], Tensor]
) -> tuple[IterableDataset, int, int | None, int]:
    """This rank's pending work: ``(dataset, parallel units, samples to do or None when unknown,
    chunks of this rank already done)``."""
    size = job.shard_size
    if isinstance(source, IndexedSource):
        chunks = [(indexed_chunk(c), c * size, min(len(source), (c + 1) * size)) for c in range(ranks.rank, -(-len(source) // size), ranks.world)]
        pending = [chunk for chunk in chunks if chunk[0] not in done]
        plan = [
            (name, start - begin, start, min(end, start + job.batch_size), start + job.batch_size >= end)
            for name, begin, end in pending
            for start in range(begin, end, job.batch_size)
        ]
        todo = sum(end - begin for _, begin, end in pending)
        return IndexedBatches(source, plan, preprocess, job.overlays), len(plan), todo, len(chunks) - len(pending)
    assert isinstance(source, ShardedSource)
    mine = {f"s{j:06d}": j for j in range(ranks.rank, len(source.shards), ranks.world)}
    finished = {name.split("-")[0] for name, unit_done in done.items() if unit_done}
    pending = [j for prefix, j in mine.items() if prefix not in finished]
    done_here = {name for name in done if name.split("-")[0] in mine}
    partial = {name for name in done_here if name.split("-")[0] not in finished}
    dataset = ShardBatches(source, pending, partial, preprocess, job.batch_size, size, job.overlays)
    sizes = source.shard_sizes()
    todo = None if sizes is None else max(0, sum(sizes[j] for j in pending) - len(partial) * size)
    return dataset, len(pending), todo, len(done_here)


def explain_dataset(job: ExplainJob, *, loaded: tuple[Any, Any, Any] | None = None) -> RunSummary:
    """Explain a dataset into a store (see the module docstring and ``docs/datasets.md``).

    Under torchrun every rank calls this; rank 0 prepares the store, computes shared text
    embeddings, and merges the index when every rank is done.

    Args:
        job: the run's settings.
        loaded: an already loaded ``(model, preprocess, tokenizer)`` on the right device and
            precision (used instead of loading ``job.model``).

    Returns:
        a :class:`RunSummary` (the store's counts on rank 0).

    Raises:
        InputError, ModelLoadError, StoreError, UnsupportedModelError: before any work is done.
    """
    job.check()
    zero_shot_templates = None
    if job.mode == "zeroshot":
        zero_shot_templates = job.templates if job.templates is not None else templates(DEFAULT_TEMPLATES)
    job = replace(job, model=model_name(job.model), templates=zero_shot_templates)
    ranks = init_ranks(job.device, job.dist_timeout_min)
    try:
        return _run(job, ranks, loaded)
    finally:
        if ranks.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def model_name(spec: str) -> str:
    """``spec`` with an open_clip model folder's path written as open_clip's ``local-dir:FOLDER``
    (a Hugging Face ``save_pretrained`` folder as its absolute path)."""
    if not Path(spec).is_dir():
        return spec
    return str(Path(spec).resolve()) if is_hf_name(spec) else f"local-dir:{Path(spec).resolve()}"


def _run(job: ExplainJob, ranks: Ranks, loaded: tuple[Any, Any, Any] | None) -> RunSummary:
    main = ranks.rank == 0
    out = Path(job.out)
    source = open_source(
        job.data,
        format=job.format,
        exclude=out,
        image_column=job.image_column,
        caption_column=job.caption_column,
        label_column=job.label_column,
        key_column=job.key_column,
        images_root=job.images_root,
    )
    if job.mode == "pairs" and not source.has_captions:
        raise InputError(f"{source.describe()} has no captions: give texts to explain every image against, or class names (zero-shot)")
    if loaded is None:
        identity = weights_source(job.model, job.pretrained, job.seed)
        _preflight(job)
        counts = _finished(out, _config(job, source, None, identity))
        if counts is not None:
            return RunSummary(samples=0, failed=0, seconds=0.0, skipped_chunks=counts["chunks"], counts=counts, already_complete=True)
        if main:
            warning = random_weights_warning(identity)
            if warning:
                print(warning, file=sys.stderr)
        loaded = load(job.model, job.pretrained, device=ranks.device, precision=job.precision, seed=job.seed)
    model, preprocess, tokenizer = loaded
    identity = model_identity(model)
    explainer = Explainer(model, tokenizer)
    _check_resolution(explainer, job)
    size = None if job.resolution == "native" else input_size(preprocess)
    if job.resolution == "native":  # workers prepare the images as the Explainer's own inputs
        preprocess = InputPreparation.of(model, "native", job.max_short_side)
    config = _config(job, source, size, identity)
    _same_everywhere(ranks, source, config)
    writer = StoreWriter(out)
    extra = {"versions": package_versions(), "run": {"world_size": ranks.world, "batch_size": job.batch_size, "workers": job.workers, "device": ranks.device.type}}

    if main:
        try:
            _dry_run(explainer, job, size or explainer.image_tower.input_size, ranks.device)
            writer.prepare(config, overwrite=job.overwrite, extra=extra)
            if writer.load_texts() is None:  # kept from an interrupted run otherwise
                bank = _text_bank(job, explainer, job.progress)
                if bank is not None:
                    writer.save_texts(bank.cpu().numpy())
        except Exception as exc:  # tell the other ranks, so they stop instead of waiting
            broadcast(ranks, f"{type(exc).__name__}: {exc}")
            raise
    failure = broadcast(ranks, None)
    if failure is not None:
        raise StoreError(f"rank 0 could not start the run: {failure}")
    texts = writer.load_texts()
    bank = None if texts is None else torch.from_numpy(texts).to(ranks.device)
    names = job.texts if job.mode == "texts" else job.classnames
    targets = Targets(explainer, job.mode, names, bank, job.top_k, job.max_targets, job.method, _image_options(job), _text_options(job))
    notes = RowWarnings(tokenizer, _context_length(explainer), show=main)
    overlays = None
    if job.overlays:
        preparation = preprocess if isinstance(preprocess, InputPreparation) else InputPreparation.of(model)
        own = preparation.geometry.size
        if size is not None and tuple(own) != tuple(size):
            raise InputError(
                f"--overlays: the preprocessing makes {size[0]}×{size[1]} inputs but the model's own is {own[0]}×"
                f"{own[1]}; overlays on the originals need the model's own preprocessing"
            )
        overlays = Overlays(out, job.alpha, job.colormap, preparation)

    dataset, units, todo, skipped = _work(source, job, ranks, writer.completed(), preprocess)
    if main and skipped:
        print(f"resuming {out}: {skipped} chunk(s) already done on this rank", file=sys.stderr)
    workers = min(job.workers, units)
    loader = DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        prefetch_factor=job.prefetch if workers else None,
        pin_memory=ranks.device.type == "cuda",
        collate_fn=identity_collate,
        worker_init_fn=worker_init if workers else None,
    )
    desc = f"rank 0/{ranks.world}" if ranks.distributed else "explain"
    bar = tqdm(total=todo, desc=desc, unit="img", disable=not (job.progress and main), dynamic_ncols=True, smoothing=0.05)
    buffers: dict[str, ChunkBuffer] = {}
    pending: deque[Future[None]] = deque()
    count = failed = 0
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gradeclip-store") as pool, warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)  # recorded per row, with the sample's key (RowWarnings)
        for batch in loader:  # FIFO writes: overlays before their chunk
            buffer = buffers.setdefault(batch.chunk, ChunkBuffer(batch.chunk))
            drawings, batch_failed = _add(buffer, batch, targets, ranks.device, overlays, notes, job.mode)
            if overlays is not None and drawings:
                pending.append(pool.submit(overlays.save, drawings))
            count += len(batch.samples)
            failed += batch_failed
            bar.update(len(batch.samples))
            if batch.final:
                pending.append(pool.submit(writer.commit, buffers.pop(batch.chunk), batch.unit_done))
            while len(pending) > PENDING_WRITES:
                pending.popleft().result()
        while pending:
            pending.popleft().result()
    seconds = time.perf_counter() - started
    bar.close()
    notes.close()
    if buffers:
        raise RuntimeError(f"gradeclip bug: chunks {sorted(buffers)} were never finished")
    barrier(ranks)
    every = gather(ranks, (count, failed, seconds, skipped))
    counts = writer.merge(extra) if main else None
    return RunSummary(
        samples=sum(e[0] for e in every),
        failed=sum(e[1] for e in every),
        seconds=max(e[2] for e in every),
        skipped_chunks=sum(e[3] for e in every),
        counts=counts,
    )


def _same_everywhere(ranks: Ranks, source: Source, config: dict[str, Any]) -> None:
    """Raise on every rank (so none waits for the others) when the ranks read different inputs or
    loaded different models, naming what each has."""
    mine = (config["input"], config["parameters_sha256"])
    every = gather(ranks, mine)
    for rank, (data, parameters) in enumerate(every):
        if data != every[0][0]:
            raise InputError(f"rank {rank} sees a different input than rank 0 ({source.describe()}); every rank must read the same data")
        if parameters != every[0][1]:
            raise ModelLoadError(
                f"rank {rank} loaded a different model than rank 0: parameters sha256:{parameters} on rank {rank}, "
                f"sha256:{every[0][1]} on rank 0 ({config['model']}, {config['weights']}); every rank must load the same weights"
            )


def _context_length(explainer: Explainer) -> int | None:
    try:
        return explainer.text_tower.context_length
    except UnsupportedModelError:
        return None


def _preflight(job: ExplainJob) -> None:
    """Check the method, its options, the text layers and the architecture's support before any
    weights load, on the model's skeleton (:func:`gradeclip.loading.skeleton`: no values), where
    only the checks gradeclip makes on purpose can fail; what the meta device cannot compute waits
    for the real dry run after loading."""
    from .methods import get_method

    _, fn = get_method(job.method)
    check_option_names(job.method, fn, _image_options(job))
    model = skeleton(job.model, job.pretrained)
    if model is None:
        return
    try:
        explainer = Explainer(model)
        tower = explainer.image_tower
        _check_resolution(explainer, job)
        if job.text_maps:
            _check_text_layers(explainer, job)
        blank = torch.zeros(1, 3, *tower.input_size, device="meta")
        targets = torch.zeros(1, tower.embed_dim, device="meta")
        explainer._explain_targets(blank, targets, job.method, _image_options(job))
    except GradeclipError:
        raise
    except Exception:  # an operation with values, which the meta device does not have
        return


def _check_resolution(explainer: Explainer, job: ExplainJob) -> None:
    """Refuse ``resolution="native"`` for an image tower fixed to its input size, saying why."""
    tower = explainer.image_tower
    if job.resolution == "native" and not tower.any_size:
        why = getattr(tower, "fixed_size_reason", None)
        raise UnsupportedModelError(
            f"--resolution native: {tower.description} takes only its own input size {tower.input_size[0]}×{tower.input_size[1]}"
            f"{f' ({why})' if why else ''}; use --resolution model"
        )


def _check_text_layers(explainer: Explainer, job: ExplainJob) -> None:
    depth = len(explainer.text_tower.blocks)
    if job.text_layers is not None and not 1 <= job.text_layers <= depth:
        raise InputError(f"text maps: text_layers (--text-layers) must be in 1..{depth}, the text tower's blocks; got {job.text_layers}")


def _dry_run(explainer: Explainer, job: ExplainJob, size: tuple[int, int], device: torch.device) -> None:
    """Explain one blank image, so a bad method, option or model fails before the store is touched."""
    blank = torch.zeros(1, 3, *size, device=device)
    explainer.explain_image(blank, "a photo", method=job.method, **_image_options(job))
    text_options = _text_options(job)
    if text_options is not None:
        _check_text_layers(explainer, job)
        explainer.explain_text(blank, ["a photo"], **text_options)


class RowWarnings:
    """What a row's ``warnings`` column says (a caption truncated to the context length, an
    all-zero map), also printed on stderr with the sample's key (the first ``SHOWN_WARNINGS``)."""

    def __init__(self, tokenizer: Any, context_length: int | None, show: bool):
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.show = show
        self.shown = 0
        self._kept: dict[str, str | None] = {}

    def __call__(self, key: str, text: str | None, map: np.ndarray | None) -> list[str] | None:
        """The warnings of the row of sample ``key`` explaining ``text`` with ``map``, or None."""
        found = []
        if text is not None and self.context_length is not None:
            if text not in self._kept:
                self._kept[text] = truncated_after(self.tokenizer, text, self.context_length)
            kept = self._kept[text]
            if kept is not None:
                found.append(truncation_message("the text", self.context_length, kept))
        if map is not None and not map.any():
            found.append("all-zero map: nothing in the image raised the score (e.g. a blank or saturated image)")
        if self.show:
            for warning in found:
                if self.shown < SHOWN_WARNINGS:
                    print(f"warning: key {key!r}: {warning}", file=sys.stderr)
                self.shown += 1
        return found or None

    def close(self) -> None:
        """Say how many warnings went unprinted."""
        if self.show and self.shown > SHOWN_WARNINGS:
            print(f"warning: {self.shown - SHOWN_WARNINGS:,} more warnings on this rank; every one is in the store's 'warnings' column", file=sys.stderr)


def _add(
    buffer: ChunkBuffer, batch: Batch, targets: Targets, device: torch.device, overlays: Overlays | None, notes: RowWarnings, mode: str
) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], int]:
    """Explain a batch's decoded images and append every sample's rows to ``buffer``.

    Returns the overlays to write with ``overlays`` (``(path in the store, original image, raw map)``)
    and how many of the batch's samples failed (no explained row).
    """
    draw = overlays is not None
    explained: dict[int, list[Row]] = {}
    input_sizes: dict[int, tuple[int, int]] = {}
    pixels = batch.originals or {}
    for decoded, images in batch.groups:  # one group per input size
        rows = targets.rows(images.to(device, non_blocking=True), [batch.samples[i] for i in decoded])
        explained.update(zip(decoded, rows))
        input_sizes.update((i, (int(images.shape[-2]), int(images.shape[-1]))) for i in decoded)
    drawings = []
    failed = 0
    for i, sample in enumerate(batch.samples):
        position = batch.first + i
        common = {"key": sample.key, "path": sample.path, "position": position}
        if i in batch.errors:
            failed += 1
            text = sample.caption if mode == "pairs" else None
            buffer.add(**common, status="error", error=batch.errors[i], label=sample.label, text=text)
            continue
        height, width = batch.sizes[i]
        failed += all(row.map is None for row in explained[i])
        for k, row in enumerate(explained[i]):
            input_height, input_width = input_sizes[i]
            values = {"image_height": height, "image_width": width, "input_height": input_height, "input_width": input_width, "label": sample.label, **row.values}
            if mode == "pairs" and values.get("text") is None:
                values["text"] = sample.caption
            values["warnings"] = notes(sample.key, values.get("text") if mode != "zeroshot" else None, row.map)
            if draw and row.map is not None:
                values["overlay"] = f"{OVERLAYS}/{buffer.name}/{position:06d}-{k}.png"
                drawings.append((values["overlay"], pixels[i], row.map))
            buffer.add(**common, map=row.map, **values)
    if batch.shard_error is not None:
        error = batch.shard_error
        name = Path(error.path).name
        buffer.add(key=name, path=error.path, position=batch.first + len(batch.samples), status="error", error=error.reason)
    return drawings, failed
