"""Dataset-scale evaluation of explanation methods: deletion/insertion curves (SPEC §7, paper
Tables I–II), word deletion/insertion of captions (Table III) and localisation against object
masks (SPEC §8, Table IV).

The data path per chunk of images: load (threads) → the model's geometry in Rust (resize +
centre crop, exactly Pillow's) → explain (any method the :class:`~gradeclip.Explainer` knows) →
upsample each map to the perturbed image → every checkpoint of every image as a model-ready batch
in Rust → model forwards in large batches → scorer hits. Each stage is timed. Maps are brought
to the perturbed image's size by :func:`gradeclip.render.upsample` (SPEC §5: bilinear,
half-pixel centres).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.nn import functional as F

from ..compat import check_compat, eval_form
from ..errors import InputError
from ..explainer import Explainer, default_text_layers, evaluation_mode
from ..preprocessing import OPENAI_MEAN, OPENAI_STD, authors_cap, native_preprocess
from ..render import upsample
from ..data import Sample, load_image, load_mask
from .datasets import CaptionTable, ImageFolder, MaskFolder
from .metrics import LOCALIZATION_METRICS, localization_metrics
from .pixel_order import ordered_heat
from .perturbation import (
    MODES,
    checkpoint_fractions,
    model_ready,
    perturbation_steps,
    resize_center_crop,
    text_steps,
)
from .report import (
    FaithfulnessResult,
    Journal,
    LocalizationResult,
    default_name,
    settings_key,
)

TARGETS = {"ground_truth": "ground_truth", "gt": "ground_truth", "predicted": "predicted", "pred": "predicted"}
RESOLUTIONS = ("model", "native")
UPSAMPLING = "bilinear, align_corners=False (gradeclip.render.upsample)"
TEXT_BATCH = 256
LOAD_THREADS = 4


@dataclass(frozen=True)
class Geometry:
    """The model's evaluation preprocessing: square side, per-channel mean and std."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def of(cls, model: nn.Module) -> Geometry:
        """Read open_clip's preprocessing config of ``model``; only the bicubic shortest-side resize
        + centre crop (every OpenAI / open_clip ViT) is reproduced, anything else is an error."""
        from open_clip import get_model_preprocess_cfg

        cfg = get_model_preprocess_cfg(model)
        size = cfg.get("size", getattr(getattr(model, "visual", None), "image_size", None))
        if isinstance(size, (tuple, list)):
            if len(set(size)) != 1:
                raise InputError(f"the model's input is not square ({tuple(size)}); evaluation supports square inputs")
            size = size[0]
        if not isinstance(size, int):
            raise InputError("cannot tell the model's input size from its preprocessing config")
        interpolation = cfg.get("interpolation", "bicubic")
        resize_mode = cfg.get("resize_mode", "shortest")
        if interpolation != "bicubic" or resize_mode != "shortest":
            raise InputError(
                f"the model preprocesses with interpolation={interpolation!r}, resize_mode={resize_mode!r}; "
                "evaluation reproduces only the bicubic shortest-side resize + centre crop"
            )
        mean = tuple(float(v) for v in cfg.get("mean", OPENAI_MEAN))
        std = tuple(float(v) for v in cfg.get("std", OPENAI_STD))
        return cls(size, mean, std)  # type: ignore[arg-type]


class Stopwatch:
    """Seconds spent per named stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0

    def summary(self) -> dict[str, float]:
        """Every stage, plus ``total`` (wall time since creation) and ``other`` (the rest)."""
        total = time.perf_counter() - self._start
        out = dict(self.seconds)
        out["other"] = max(0.0, total - sum(self.seconds.values()))
        out["total"] = total
        return out


def model_device(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where and in which dtype the model's weights live."""
    p = next(model.parameters())
    return p.device, p.dtype


def encode_images(model: nn.Module, pixels: Tensor, batch_size: int) -> Tensor:
    """Unit-norm float32 image embeddings ``[N, E]`` (CPU) of preprocessed ``pixels`` ``[N, 3, S, S]``."""
    device, dtype = model_device(model)
    out = []
    with torch.no_grad(), evaluation_mode(model):
        for i in range(0, pixels.shape[0], batch_size):
            emb = model.encode_image(pixels[i : i + batch_size].to(device=device, dtype=dtype))
            out.append(F.normalize(emb.float(), dim=-1).cpu())
    return torch.cat(out)


def encode_texts(model: nn.Module, tokenizer: Callable[[list[str]], Tensor], texts: Sequence[str]) -> Tensor:
    """Unit-norm float32 text embeddings ``[T, E]`` (CPU). Unlike ``Explainer.encode_texts`` it
    accepts the empty text, which word insertion starts from."""
    device, _ = model_device(model)
    out = []
    with torch.no_grad(), evaluation_mode(model):
        for i in range(0, len(texts), TEXT_BATCH):
            emb = model.encode_text(tokenizer(list(texts[i : i + TEXT_BATCH])).to(device))
            out.append(F.normalize(emb.float(), dim=-1).cpu())
    return torch.cat(out)


def template_text(template: Callable[[str], str] | str) -> str:
    """A prompt template as text with ``{}`` where the class name goes (open_clip's templates are callables)."""
    return template if isinstance(template, str) else template("{}")


class ZeroShotClassifier:
    """Zero-shot classification by prompt ensembling (open_clip's recipe, built by
    :func:`gradeclip.zeroshot.classifier`): each class's weight is the normalised mean of its
    normalised prompt embeddings.

    Args:
        model, tokenizer: the model and its tokenizer.
        class_names: names in label order (default ``open_clip.IMAGENET_CLASSNAMES``).
        templates: callables or strings with ``{}`` for the name (default ``open_clip.OPENAI_IMAGENET_TEMPLATES``).
    """

    metrics = ("top1", "top5")

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Callable[[list[str]], Tensor],
        class_names: Sequence[str] | None = None,
        templates: Sequence[Callable[[str], str] | str] | None = None,
        progress: bool = False,
    ):
        import open_clip

        from ..zeroshot import classifier

        self.class_names = list(open_clip.IMAGENET_CLASSNAMES if class_names is None else class_names)
        self.templates = [template_text(t) for t in (open_clip.OPENAI_IMAGENET_TEMPLATES if templates is None else templates)]
        self.weights = classifier(Explainer(model, tokenizer), self.class_names, self.templates, progress=progress).float().cpu()

    def describe(self) -> dict[str, Any]:
        return {
            "scorer": "classification",
            "classes": len(self.class_names),
            "class_names_sha1": settings_key({"names": self.class_names}),
            "templates": self.templates,
        }

    def text_embeddings(self, targets: Sequence[int]) -> Tensor:
        """The classifier weights of ``targets`` ``[B, E]``: the texts each image is explained for."""
        return self.weights[torch.as_tensor(list(targets))]

    def predict(self, embeddings: Tensor) -> list[int]:
        """The top-1 class of each unit image embedding."""
        return (embeddings @ self.weights.T).argmax(dim=1).tolist()

    def hits(self, embeddings: Tensor, targets: Sequence[int]) -> np.ndarray:
        """float64 ``[N, 2]``: top-1 and top-5 correctness. A class beats the target only with a
        strictly higher logit (ties count as correct)."""
        logits = embeddings @ self.weights.T
        own = logits[torch.arange(len(targets)), torch.as_tensor(list(targets))]
        above = (logits > own[:, None]).sum(dim=1)
        return torch.stack([above < 1, above < 5], dim=1).double().numpy()


class _CaptionGallery:
    """Clean caption embeddings ``[C, E]``, image embeddings ``[I, E]`` and each caption's image
    index, which the retrieval scorers rank a perturbed input against."""

    metrics = ("ir@1", "ir@5", "tr@1", "tr@5")
    name = ""

    def __init__(self, captions: Tensor, images: Tensor, image_of: Sequence[int]):
        self.captions = captions
        self.images = images
        self.image_of = torch.as_tensor(list(image_of))

    def describe(self) -> dict[str, Any]:
        return {"scorer": self.name, "captions": int(self.captions.shape[0]), "images": int(self.images.shape[0])}

    @staticmethod
    def at_k(ir_above: Tensor, tr_above: Tensor) -> np.ndarray:
        """float64 ``[N, 4]``: IR@1, IR@5, TR@1, TR@5 from how many competitors rank above the right answer."""
        return torch.stack([ir_above < 1, ir_above < 5, tr_above < 1, tr_above < 5], dim=1).double().numpy()


class RetrievalScorer(_CaptionGallery):
    """Image–text retrieval against a caption table with the perturbed image in place of the clean one.

    For a row (image ``i``, caption ``c``) and a perturbed image embedding ``e'``:
    IR@k: fewer than ``k`` other (clean) images are closer to ``c`` than ``e'``;
    TR@k: fewer than ``k`` captions are closer to ``e'`` than the closest caption of image ``i``.
    """

    name = "retrieval"

    def text_embeddings(self, rows: Sequence[int]) -> Tensor:
        return self.captions[torch.as_tensor(list(rows))]

    def hits(self, embeddings: Tensor, rows: Sequence[int]) -> np.ndarray:
        """float64 ``[N, 4]``: IR@1, IR@5, TR@1, TR@5 of each perturbed image embedding."""
        rows_t = torch.as_tensor(list(rows))
        own_image = self.image_of[rows_t]
        queries = self.captions[rows_t]
        to_images = queries @ self.images.T
        to_images[torch.arange(len(rows_t)), own_image] = -torch.inf
        own = (queries * embeddings).sum(dim=1)
        ir_above = (to_images > own[:, None]).sum(dim=1)
        to_captions = embeddings @ self.captions.T
        mine = self.image_of[None, :] == own_image[:, None]
        best = torch.where(mine, to_captions, torch.full_like(to_captions, -torch.inf)).max(dim=1).values
        tr_above = (to_captions > best[:, None]).sum(dim=1)
        return self.at_k(ir_above, tr_above)


def _check_common(
    method: str, options: dict[str, Any] | None, resolution: str, chunk_size: int, explain_batch_size: int
) -> dict[str, Any]:
    from ..methods import get_method

    get_method(method)  # raises UnknownMethodError listing the valid names
    if resolution not in RESOLUTIONS:
        raise InputError(f"resolution must be one of {', '.join(RESOLUTIONS)}, got {resolution!r}")
    for name, value in (("chunk_size", chunk_size), ("explain_batch_size", explain_batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    return dict(options or {})


def _load_images(paths: Sequence[str | Path]) -> list[np.ndarray]:
    """Decode image files in a few threads (Pillow releases the GIL while decoding)."""
    with ThreadPoolExecutor(max_workers=min(LOAD_THREADS, len(paths))) as pool:
        return list(pool.map(load_image, paths))


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _resumable(
    samples: Sequence[Sample],
    evaluate: Callable[[Sequence[Sample]], list[dict[str, Any]]],
    *,
    settings: dict[str, Any],
    out_dir: str | os.PathLike[str] | None,
    name: str,
    chunk_size: int,
    desc: str,
    progress: bool,
) -> tuple[list[dict[str, Any]], Journal | None]:
    """Run ``evaluate`` over ``samples`` in chunks, one record per sample (``"index"`` keyed),
    journaling each chunk under ``out_dir`` and skipping samples a journal of the same settings
    already holds. Returns the records in dataset order and the journal (closed; delete it once
    the results are saved)."""
    from tqdm.auto import tqdm

    journal = Journal(Path(out_dir) / f"{name}.partial.jsonl", settings_key(settings)) if out_dir is not None else None
    records: dict[int, dict[str, Any]] = dict(journal.records) if journal else {}
    todo = [s for s in samples if s.index not in records]
    try:
        with tqdm(total=len(samples), initial=len(samples) - len(todo), desc=desc, disable=not progress) as bar:
            for chunk in _chunks(todo, chunk_size):
                for record in evaluate(chunk):
                    records[int(record["index"])] = record
                    if journal:
                        journal.add(record)
                bar.update(len(chunk))
    finally:
        if journal:
            journal.close(remove=False)
    return [records[s.index] for s in samples], journal


def _save(
    result: FaithfulnessResult | LocalizationResult, out_dir: str | os.PathLike[str] | None, name: str, journal: Journal | None
) -> None:
    """Save the finished result and drop the journal it no longer needs."""
    if out_dir is not None:
        result.save(out_dir, name)
    if journal is not None:
        journal.path.unlink(missing_ok=True)


def _faithfulness_result(
    settings: dict[str, Any],
    metrics: tuple[str, ...],
    fractions: list[float],
    records: list[dict[str, Any]],
    modes: Sequence[str],
    timings: dict[str, float],
) -> FaithfulnessResult:
    k, m = len(fractions), len(metrics)
    return FaithfulnessResult(
        settings=settings,
        metrics=metrics,
        fractions=fractions,
        hits={mode: np.array([r["hits"][mode] for r in records], dtype=np.float64).reshape(len(records), k, m) for mode in modes},
        indices=[r["index"] for r in records],
        keys=[r["key"] for r in records],
        targets=[r["target"] for r in records],
        timings=timings,
    )


class _Explaining:
    """Explains images in the model's geometry (batched) or at their native size (one by one)."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Callable[[list[str]], Tensor],
        method: str,
        options: dict[str, Any],
        geometry: Geometry,
        resolution: str,
        max_short_side: int | None,
        batch: int,
        native_geometry: str = "gradeclip",
    ):
        self.model = model
        # the tokenizer encodes methods' text options, e.g. CLIP Surgery's empty-prompt redundant
        # feature, which it needs whenever a batch holds one text
        self.explainer = Explainer(model, tokenizer)
        self.method = method
        self.options = options
        self.geometry = geometry
        self.resolution = resolution
        self.max_short_side = max_short_side
        self.batch = batch
        self.native_geometry = native_geometry

    def maps(self, images: list[np.ndarray], texts: Tensor, text_ids: Sequence[int]) -> list[np.ndarray]:
        """One float32 map per image at that image's size, explaining image ``b`` for ``texts[b]``.

        ``images`` are the images to perturb (already in the model's geometry when
        ``resolution="model"``); images that share a text id share one text in the explainer call.
        """
        g = self.geometry
        grids: list[np.ndarray] = []
        if self.resolution == "native":
            for image, text in zip(images, texts):
                x = native_preprocess(image, self.model, self.max_short_side, geometry=self.native_geometry)[None]
                res = self.explainer.explain_image(x, text[None], method=self.method, **self.options)
                grids.append(res.maps[0, 0].detach().float().cpu().numpy())
        else:
            for start in range(0, len(images), self.batch):
                part = images[start : start + self.batch]
                ids = list(text_ids[start : start + self.batch])
                unique = list(dict.fromkeys(ids))
                first = [ids.index(u) for u in unique]
                x = torch.from_numpy(model_ready(part, g.size, g.mean, g.std))
                res = self.explainer.explain_image(
                    x, texts[start : start + self.batch][first], method=self.method, **self.options
                )
                maps = res.maps.detach().float().cpu()
                grids.extend(maps[b, unique.index(text_id)].numpy() for b, text_id in enumerate(ids))
        return upsample(grids, [image.shape[:2] for image in images])


def _version() -> str:
    from .._version import __version__

    return __version__


def _describe_model(model: nn.Module, model_name: str | None) -> str:
    if model_name:
        return model_name
    from ..towers.registry import image_tower

    return f"{type(model).__name__}: {image_tower(model).description}"


def deletion_insertion(
    model: nn.Module,
    dataset: ImageFolder | CaptionTable,
    *,
    tokenizer: Callable[[list[str]], Tensor],
    method: str = "gradeclip",
    options: dict[str, Any] | None = None,
    target: str = "ground_truth",
    class_names: Sequence[str] | None = None,
    templates: Sequence[Callable[[str], str] | str] | None = None,
    modes: Sequence[str] = MODES,
    steps: int = 100,
    eval_every: int = 10,
    seed: int = 0,
    resolution: str | None = None,
    max_short_side: int | None = None,
    compat: str | None = None,
    pixel_order: str | None = None,
    batch_size: int = 64,
    chunk_size: int = 16,
    explain_batch_size: int = 8,
    limit: int | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    name: str | None = None,
    model_name: str | None = None,
    progress: bool = True,
) -> FaithfulnessResult:
    """Deletion and insertion curves of an explanation method over a dataset (SPEC §7).

    Each image is explained for its target text; its pixels are removed (deletion: replaced by
    seeded noise) or inserted (into a black image) in heat-map order; every ``eval_every`` steps
    the image is scored by the model. Curves are dataset means, AUCs trapezoid areas over x ∈ [0, 1].

    Args:
        model: an open_clip CLIP model (any model the Explainer supports).
        dataset: an :class:`ImageFolder` (zero-shot classification, top-1/top-5) or a
            :class:`CaptionTable` (retrieval, IR/TR @1/@5).
        tokenizer: the model's tokenizer (for class prompts or captions).
        method, options: an explanation method the Explainer accepts and its options.
        target: ``"ground_truth"`` (the labelled class / the row's caption) or ``"predicted"``
            (the model's top-1 class on the clean image; classification only).
        class_names, templates: zero-shot classifier; default ``open_clip.IMAGENET_CLASSNAMES`` for
            a 1000-class folder (else the folder's class names) and ``OPENAI_IMAGENET_TEMPLATES``.
        modes: any of ``"deletion"``, ``"insertion"``.
        steps, eval_every, seed: the schedule and the deletion fill's seed (image ``i``'s fill is
            stream ``i`` of the seed, whatever the chunking).
        resolution: ``"model"`` (explain and perturb the model's resize + centre crop, as the model
            sees it) or ``"native"`` (explain at the image's own size, perturb the original image,
            score its model-ready view).
        max_short_side: cap for ``resolution="native"``.
        compat: ``"authors"``: their ``imagenet_eval_deletion.py`` (SPEC §12, ``docs/reproduce.md``):
            ``qk_space="out_proj"``, native resolution in their geometry (the image capped at 640 px
            by ``int()`` truncation and explained at ``int(x/p + 0.5)·p``; maps, perturbation and
            scores on the capped image) and ``pixel_order="argsort"``; values given explicitly
            win. ``method="gradeclip"`` only.
        pixel_order: ``"stable"`` (default: SPEC §7) or ``"argsort"`` (:mod:`gradeclip.eval.pixel_order`).
        batch_size: images per scoring forward (checkpoints of several images are batched together).
        chunk_size: images prepared at once (memory: ``chunk_size · K · 3 · S² · 4`` bytes per mode).
        explain_batch_size: images per explainer call (``resolution="model"``).
        limit: evaluate only the first ``limit`` images.
        out_dir: when given, results are saved there as ``<name>.json`` + ``<name>.csv`` and finished
            images are journaled, so an interrupted run resumes where it stopped.
        name: file name stem (default: task, method, target and a settings hash).
        model_name: how to name the model in the settings (e.g. ``"ViT-B-16 openai"``).
        progress: show a progress bar.

    Returns:
        :class:`~gradeclip.eval.report.FaithfulnessResult`.
    """
    form = eval_form(compat, method, options, resolution, max_short_side, pixel_order)
    ordered_heat(np.zeros((1, 1), np.float32), form.pixel_order)  # an unknown order fails before any work
    resolution, max_short_side = form.resolution, form.max_short_side
    options = _check_common(method, form.options, resolution, chunk_size, explain_batch_size)
    if target not in TARGETS:
        raise InputError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    target = TARGETS[target]
    modes = list(modes)
    if not modes or any(m not in MODES for m in modes) or len(set(modes)) != len(modes):
        raise InputError(f"modes must be distinct values of {', '.join(MODES)}, got {modes!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    fractions = checkpoint_fractions(steps, eval_every).tolist()
    geometry = Geometry.of(model)
    samples = list(dataset)[: limit if limit is not None else None]
    if not samples:
        raise InputError("the dataset is empty")
    clock = Stopwatch()
    scorer: ZeroShotClassifier | RetrievalScorer
    with clock("setup"):
        if isinstance(dataset, CaptionTable):
            if target != "ground_truth":
                raise InputError("retrieval explains each image for its own caption: target must be 'ground_truth'")
            captions = encode_texts(model, tokenizer, [s.caption or "" for s in dataset])
            gallery = _gallery(model, dataset, geometry, batch_size, progress)
            scorer = RetrievalScorer(captions, gallery, dataset.image_of)
        elif isinstance(dataset, ImageFolder):
            if class_names is None and len(dataset.class_names) != 1000:
                class_names = dataset.class_names
            scorer = ZeroShotClassifier(model, tokenizer, class_names, templates, progress=progress)
            if max(s.label for s in samples) >= len(scorer.class_names):  # type: ignore[type-var]
                raise InputError(
                    f"labels go up to {max(s.label for s in samples)} but there are {len(scorer.class_names)} class names"
                )  # type: ignore[type-var]
        else:
            raise InputError(f"dataset must be an ImageFolder or a CaptionTable, got {type(dataset).__name__}")
    settings = {
        "task": "faithfulness",
        "model": _describe_model(model, model_name),
        "method": method,
        "options": options,
        "target": target,
        **scorer.describe(),
        "dataset": dataset.describe(),
        "images": len(samples),
        "modes": modes,
        "steps": steps,
        "eval_every": eval_every,
        "pixels_per_step": "max(1, H*W // (2*steps))",
        "seed": seed,
        "resolution": resolution,
        "max_short_side": max_short_side,
        "input_size": geometry.size,
        "mean": geometry.mean,
        "std": geometry.std,
        "map_upsampling": UPSAMPLING,
        "gradeclip": _version(),
        **form.settings(),
    }
    name = name or default_name(settings)
    explaining = _Explaining(model, tokenizer, method, options, geometry, resolution, max_short_side, explain_batch_size, form.geometry)

    def evaluate(chunk: Sequence[Sample]) -> list[dict[str, Any]]:
        return _faithfulness_chunk(
            chunk, model, scorer, explaining, geometry, target, modes, steps, eval_every, seed, batch_size, clock, form.pixel_order
        )

    records, journal = _resumable(
        samples,
        evaluate,
        settings=settings,
        out_dir=out_dir,
        name=name,
        chunk_size=chunk_size,
        desc=f"{method} deletion/insertion",
        progress=progress,
    )
    result = _faithfulness_result(settings, scorer.metrics, fractions, records, modes, clock.summary())
    _save(result, out_dir, name, journal)
    return result


def _gallery(model: nn.Module, table: CaptionTable, geometry: Geometry, batch_size: int, progress: bool) -> Tensor:
    """Clean embeddings ``[I, E]`` of the table's distinct images."""
    from tqdm.auto import tqdm

    out = []
    paths = [table.root / key for key in table.images]
    for part in tqdm(list(_chunks(paths, batch_size)), desc="gallery", disable=not progress, leave=False):
        images = _load_images(part)
        out.append(
            encode_images(model, torch.from_numpy(model_ready(images, geometry.size, geometry.mean, geometry.std)), batch_size)
        )
    return torch.cat(out)


def _faithfulness_chunk(
    chunk: Sequence[Sample],
    model: nn.Module,
    scorer: ZeroShotClassifier | RetrievalScorer,
    explaining: _Explaining,
    geometry: Geometry,
    target: str,
    modes: Sequence[str],
    steps: int,
    eval_every: int,
    seed: int,
    batch_size: int,
    clock: Stopwatch,
    pixel_order: str = "stable",
) -> list[dict[str, Any]]:
    """Evaluate one chunk of images; returns one record per image (index, key, target, hits)."""
    g = geometry
    with clock("load"):
        originals = _load_images([s.path for s in chunk])
    with clock("preprocess"):
        if explaining.resolution == "model":
            images = list(resize_center_crop(originals, g.size))
        elif explaining.native_geometry == "authors" and explaining.max_short_side is not None:
            cap = explaining.max_short_side  # their scripts cap first; maps, perturbation and scores use the capped image
            images = [np.asarray(authors_cap(Image.fromarray(o), cap)) for o in originals]
        else:
            images = originals
    if isinstance(scorer, RetrievalScorer):
        targets = [s.index for s in chunk]
    elif target == "ground_truth":
        targets = [int(s.label) for s in chunk]  # type: ignore[arg-type]
    else:
        with clock("preprocess"):
            clean = torch.from_numpy(model_ready(images, g.size, g.mean, g.std))
        with clock("score"):
            targets = scorer.predict(encode_images(model, clean, batch_size))
    with clock("explain"):
        maps = [ordered_heat(m, pixel_order) for m in explaining.maps(images, scorer.text_embeddings(targets), targets)]
    k = steps // eval_every + 1
    hits: dict[str, np.ndarray] = {}
    for mode in modes:
        with clock("perturb"):
            batch = perturbation_steps(
                images,
                maps,
                mode,
                steps,
                eval_every,
                seed,
                output_size=g.size,
                mean=g.mean,
                std=g.std,
                streams=[s.index for s in chunk],
            )
            pixels = torch.from_numpy(batch).view(len(chunk) * k, 3, g.size, g.size)
        with clock("score"):
            embeddings = encode_images(model, pixels, batch_size)
            hits[mode] = scorer.hits(embeddings, [t for t in targets for _ in range(k)]).reshape(len(chunk), k, -1)
    return [
        {"index": s.index, "key": s.key, "target": int(t), "hits": {mode: hits[mode][n].astype(int).tolist() for mode in modes}}
        for n, (s, t) in enumerate(zip(chunk, targets))
    ]


def _mask_in_geometry(mask: np.ndarray, size: int) -> np.ndarray:
    """A bool mask taken through the model's geometry: nearest-neighbour resize of the shorter side
    to ``size`` and the centre crop, with torchvision's own size and offset rules."""
    from PIL import Image
    from torchvision.transforms import CenterCrop, InterpolationMode, Resize

    img = Image.fromarray(mask.astype(np.uint8) * 255)
    img = CenterCrop(size)(Resize(size, interpolation=InterpolationMode.NEAREST)(img))
    return np.asarray(img) > 127


def localization(
    model: nn.Module,
    dataset: MaskFolder,
    *,
    tokenizer: Callable[[list[str]], Tensor],
    method: str = "gradeclip",
    options: dict[str, Any] | None = None,
    text: str | None = None,
    class_names: Sequence[str] | None = None,
    templates: Sequence[Callable[[str], str] | str] | None = None,
    resolution: str | None = None,
    max_short_side: int | None = None,
    compat: str | None = None,
    chunk_size: int = 16,
    explain_batch_size: int = 8,
    limit: int | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    name: str | None = None,
    model_name: str | None = None,
    progress: bool = True,
) -> LocalizationResult:
    """Point Game, energy-PG, pixel accuracy, mask IoU and AP of a method's maps against object
    masks (SPEC §8, paper Table IV).

    Each image is explained for its class (prompt-ensembled class embedding, as in zero-shot
    classification) or, with ``text``, for that text. With ``resolution="model"`` image and mask go
    through the model's geometry (the mask with nearest-neighbour resizing) and the map is
    upsampled to ``S × S``; with ``"native"`` the map is upsampled to the original mask size.
    Images whose mask has no object pixel left are skipped (listed in ``skipped``).

    Args: as for :func:`deletion_insertion`; ``class_names`` defaults to the folder's class names
    (or ``open_clip.IMAGENET_CLASSNAMES`` for 1000 classes). With ``compat="authors"`` the maps are
    theirs (``qk_space="out_proj"``, explained in their native geometry) and upsampled to the
    original mask.

    Returns:
        :class:`~gradeclip.eval.report.LocalizationResult`.
    """
    form = eval_form(compat, method, options, resolution, max_short_side)
    resolution, max_short_side = form.resolution, form.max_short_side
    options = _check_common(method, form.options, resolution, chunk_size, explain_batch_size)
    if not isinstance(dataset, MaskFolder):
        raise InputError(f"dataset must be a MaskFolder, got {type(dataset).__name__}")
    geometry = Geometry.of(model)
    samples = list(dataset)[: limit if limit is not None else None]
    if not samples:
        raise InputError("the dataset is empty")
    clock = Stopwatch()
    with clock("setup"):
        if text is not None:
            if not text.strip():
                raise InputError("text is empty")
            text_emb = encode_texts(model, tokenizer, [text])
            describe: dict[str, Any] = {"text": text}
            embed = lambda labels: text_emb.expand(len(labels), -1)
        else:
            if any(s.label is None for s in samples):
                raise InputError("images are not in class folders: give text= to explain them for")
            if class_names is None and len(dataset.class_names) != 1000:
                class_names = dataset.class_names
            classifier = ZeroShotClassifier(model, tokenizer, class_names, templates, progress=progress)
            describe = classifier.describe()
            describe.pop("scorer")
            embed = classifier.text_embeddings
    settings = {
        "task": "localization",
        "model": _describe_model(model, model_name),
        "method": method,
        "options": options,
        **describe,
        "dataset": dataset.describe(),
        "images": len(samples),
        "resolution": resolution,
        "max_short_side": max_short_side,
        "input_size": geometry.size,
        "map_upsampling": UPSAMPLING,
        "map_normalisation": "min-max per map (constant map -> zeros)",
        "foreground": "h > mean(h)",
        "gradeclip": _version(),
        **{k: v for k, v in form.settings().items() if k != "pixel_order"},
    }
    name = name or default_name(settings)
    explaining = _Explaining(model, tokenizer, method, options, geometry, resolution, max_short_side, explain_batch_size, form.geometry)

    def evaluate(chunk: Sequence[Sample]) -> list[dict[str, Any]]:
        return _localization_chunk(chunk, dataset.mask_format, explaining, embed, geometry, clock)

    records, journal = _resumable(
        samples,
        evaluate,
        settings=settings,
        out_dir=out_dir,
        name=name,
        chunk_size=chunk_size,
        desc=f"{method} localisation",
        progress=progress,
    )
    kept = [r for r in records if not r.get("skipped")]
    result = LocalizationResult(
        settings=settings,
        values={m: np.array([r[m] for r in kept], dtype=np.float64) for m in LOCALIZATION_METRICS},
        keys=[r["key"] for r in kept],
        skipped=[r["key"] for r in records if r.get("skipped")],
        timings=clock.summary(),
    )
    _save(result, out_dir, name, journal)
    return result


def _localization_chunk(
    chunk: Sequence[Sample],
    mask_format: str,
    explaining: _Explaining,
    embed: Callable[[list[int]], Tensor],
    geometry: Geometry,
    clock: Stopwatch,
) -> list[dict[str, Any]]:
    """SPEC §8 metrics of one chunk; a sample whose mask has no object pixel left is marked skipped."""
    with clock("load"):
        originals = _load_images([s.path for s in chunk])
        masks = [load_mask(s.mask, mask_format) for s in chunk]  # type: ignore[arg-type]
    for image, mask, s in zip(originals, masks, chunk):
        if image.shape[:2] != mask.shape:
            raise InputError(
                f"{s.key}: image is {image.shape[0]}×{image.shape[1]} but its mask is {mask.shape[0]}×{mask.shape[1]}"
            )
    with clock("preprocess"):
        if explaining.resolution == "model":
            images = list(resize_center_crop(originals, geometry.size))
            masks = [_mask_in_geometry(m, geometry.size) for m in masks]
        else:
            images = originals
    labels = [s.label if s.label is not None else 0 for s in chunk]
    with clock("explain"):
        maps = explaining.maps(images, embed(labels), labels)
    keep = [n for n, m in enumerate(masks) if m.any()]
    values = localization_metrics([maps[n] for n in keep], [masks[n] for n in keep]) if keep else {}
    records: list[dict[str, Any]] = []
    for n, s in enumerate(chunk):
        if n in keep:
            records.append({"index": s.index, "key": s.key, **{m: float(values[m][keep.index(n)]) for m in LOCALIZATION_METRICS}})
        else:
            records.append({"index": s.index, "key": s.key, "skipped": True})
    return records


class TextRetrievalScorer(_CaptionGallery):
    """Retrieval with a perturbed caption in place of the clean one (paper Table III).

    For a row (image ``i``, caption ``c``) and the perturbed caption's embedding ``t'``:
    IR@k: fewer than ``k`` other images are closer to ``t'`` than image ``i``;
    TR@k: for image ``i`` as the query, fewer than ``k`` captions of other images are closer than
    ``t'`` (the image's other, untouched captions neither help nor compete).
    """

    name = "text retrieval"

    def hits(self, texts: Tensor, rows: Sequence[int]) -> np.ndarray:
        """float64 ``[N, 4]``: IR@1, IR@5, TR@1, TR@5 of each perturbed caption embedding."""
        own_image = self.image_of[torch.as_tensor(list(rows))]
        n = torch.arange(len(own_image))
        to_images = texts @ self.images.T
        own = to_images[n, own_image].clone()
        to_images[n, own_image] = -torch.inf
        ir_above = (to_images > own[:, None]).sum(dim=1)
        queries = self.images[own_image]
        to_captions = queries @ self.captions.T
        to_captions[self.image_of[None, :] == own_image[:, None]] = -torch.inf
        own_t = (queries * texts).sum(dim=1)
        tr_above = (to_captions > own_t[:, None]).sum(dim=1)
        return self.at_k(ir_above, tr_above)


def text_deletion_insertion(
    model: nn.Module,
    dataset: CaptionTable,
    *,
    tokenizer: Callable[[list[str]], Tensor],
    n_text_layers: int | None = None,
    heads: str = "single",
    compat: str | None = None,
    modes: Sequence[str] = MODES,
    steps: int = 5,
    batch_size: int = 64,
    chunk_size: int = 16,
    limit: int | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    name: str | None = None,
    model_name: str | None = None,
    progress: bool = True,
) -> FaithfulnessResult:
    """Word deletion and insertion of captions by Grad-ECLIP's textual explanation (SPEC §3, §7;
    paper Table III): each caption is explained against its image (in the model's geometry),
    its words are removed from it (deletion) or inserted into an empty text (insertion) one per
    step, most important first, and every step's caption is scored by retrieval
    (:class:`TextRetrievalScorer`). ``fractions`` holds the number of words changed, ``0..steps``;
    AUCs take x uniform on [0, 1].

    Args:
        model, dataset, tokenizer: the model, a :class:`CaptionTable` and the model's tokenizer
            (open_clip's ``SimpleTokenizer``, which the textual explanation needs).
        n_text_layers, heads: options of :meth:`gradeclip.Explainer.explain_text` (None: ``min(8, depth)``).
        compat: ``"authors"``: the authors' released textual form (SPEC §3 (a), (b), §12).
        modes, steps: which curves, and how many words (default 5, as in the paper).
        Other arguments as for :func:`deletion_insertion`.
    """
    modes = list(modes)
    if not modes or any(m not in MODES for m in modes) or len(set(modes)) != len(modes):
        raise InputError(f"modes must be distinct values of {', '.join(MODES)}, got {modes!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be a positive integer, got {steps!r}")
    if not isinstance(dataset, CaptionTable):
        raise InputError(f"dataset must be a CaptionTable, got {type(dataset).__name__}")
    _check_common("gradeclip", None, "model", chunk_size, 1)
    check_compat(compat)
    geometry = Geometry.of(model)
    samples = list(dataset)[: limit if limit is not None else None]
    if not samples:
        raise InputError("the dataset is empty")
    clock = Stopwatch()
    with clock("setup"):
        captions = encode_texts(model, tokenizer, [s.caption or "" for s in dataset])
        scorer = TextRetrievalScorer(captions, _gallery(model, dataset, geometry, batch_size, progress), dataset.image_of)
    if n_text_layers is None:
        n_text_layers = default_text_layers(Explainer(model, tokenizer).text_tower)
    settings = {
        "task": "text_faithfulness",
        "model": _describe_model(model, model_name),
        "method": "gradeclip",
        "options": {"n_text_layers": n_text_layers, "heads": heads, **({} if compat is None else {"compat": compat})},
        "target": "ground_truth",
        **scorer.describe(),
        "dataset": dataset.describe(),
        "images": len(samples),
        "modes": modes,
        "steps": steps,
        "words_per_step": 1,
        "word_order": "importance descending, ties in caption order",
        "input_size": geometry.size,
        "gradeclip": _version(),
    }
    name = name or default_name(settings)
    explainer = Explainer(model, tokenizer)

    def evaluate(chunk: Sequence[Sample]) -> list[dict[str, Any]]:
        with clock("load"):
            keys = list(dict.fromkeys(dataset.images[dataset.image_of[s.index]] for s in chunk))
            pixels = model_ready(_load_images([dataset.root / k for k in keys]), geometry.size, geometry.mean, geometry.std)
        texts: dict[str, list[tuple[int, list[str]]]] = {mode: [] for mode in modes}
        with clock("explain"):
            for position, key in enumerate(keys):
                rows = [s for s in chunk if dataset.images[dataset.image_of[s.index]] == key]
                exp = explainer.explain_text(
                    torch.from_numpy(pixels[position : position + 1]),
                    [s.caption or "" for s in rows],
                    n_layers=n_text_layers,
                    heads=heads,
                    compat=compat,
                )
                for t, s in enumerate(rows):
                    importance = [w for _, w in exp.words(0, t)]
                    for mode in modes:
                        texts[mode].append((s.index, text_steps(s.caption or "", exp.spans(t), importance, mode, steps)))
        by_index: dict[int, dict[str, Any]] = {
            s.index: {"index": s.index, "key": s.key, "target": s.index, "hits": {}} for s in chunk
        }
        with clock("score"):
            for mode in modes:
                rows_and_steps = texts[mode]
                flat = [text for _, variants in rows_and_steps for text in variants]
                hits = scorer.hits(
                    encode_texts(model, tokenizer, flat), [i for i, variants in rows_and_steps for _ in variants]
                ).reshape(len(rows_and_steps), steps + 1, -1)
                for (index, _), h in zip(rows_and_steps, hits):
                    by_index[index]["hits"][mode] = h.astype(int).tolist()
        return [by_index[s.index] for s in chunk]

    records, journal = _resumable(
        samples,
        evaluate,
        settings=settings,
        out_dir=out_dir,
        name=name,
        chunk_size=chunk_size,
        desc="gradeclip text deletion/insertion",
        progress=progress,
    )
    result = _faithfulness_result(settings, scorer.metrics, [float(k) for k in range(steps + 1)], records, modes, clock.summary())
    _save(result, out_dir, name, journal)
    return result
