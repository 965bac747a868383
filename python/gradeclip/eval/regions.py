"""Region-level zero-shot classification from dense features (SPEC §10, paper Table VII) and
image–text retrieval (paper Table IX): what fine-tuning with Grad-ECLIP maps should improve, and
what it should keep.

- A box's embedding is the RoI-align of the dense features (7×7 bins, two samples per bin side,
  ``aligned=True``, box in pixels of the preprocessed image) averaged to 1×1; a mask's is the
  mask-weighted mean of the dense features, the mask resized to the patch grid by area
  averaging. Each region is classified by cosine with the class text embeddings; top-1 / top-5
  accuracy is the mean over boxes, over thing masks, over stuff masks.
- Images are resized as a whole (no crop, so no box is cut) to the model's input size, then the
  model's own preprocessing applies; boxes and masks are scaled with them.
- Sources: COCO-format annotation files read with ``pycocotools`` (instances: boxes and
  polygon/RLE thing masks; a second instances-format file of stuff segments, e.g. COCO-Stuff's
  ``stuff_val2017.json``, gives the stuff masks; crowd regions are skipped), or the synthetic
  world's held-out scenes with the exact box and mask of every object (classes: colour–shape pairs).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.nn import functional as F

from ..errors import InputError

ROI_OUTPUT = 7
ROI_SAMPLES = 2
KINDS = ("boxes", "things", "stuff")


@dataclass
class RegionImage:
    """One annotated image, already at the model's input size.

    Attributes:
        image: ``[3, S, S]`` preprocessed.
        boxes: ``[n, 4]`` float ``(x1, y1, x2, y2)`` in pixels of ``image``; ``box_labels`` their classes.
        things, stuff: ``[m, S, S]`` bool masks with their classes ``thing_labels``, ``stuff_labels``.
    """

    image: Tensor
    boxes: Tensor
    box_labels: list[int]
    things: Tensor
    thing_labels: list[int]
    stuff: Tensor = field(default_factory=lambda: torch.zeros(0, 0, 0, dtype=torch.bool))
    stuff_labels: list[int] = field(default_factory=list)


def box_embeddings(dense: Tensor, boxes: Sequence[Tensor], patch: int) -> Tensor:
    """RoI-align embeddings: ``dense`` ``[B, h, w, E]``, ``boxes[b]`` ``[n_b, 4]`` pixel boxes of image b,
    ``patch`` pixels per grid cell → ``[Σ n_b, E]`` (7×7 bins averaged)."""
    from torchvision.ops import roi_align

    grid = dense.permute(0, 3, 1, 2).float()
    pooled = roi_align(grid, [b.float() for b in boxes], ROI_OUTPUT, spatial_scale=1.0 / patch, sampling_ratio=ROI_SAMPLES, aligned=True)
    return pooled.mean(dim=(2, 3))


def mask_embeddings(dense: Tensor, masks: Tensor) -> Tensor:
    """Mask-pooled embeddings: ``dense`` ``[h, w, E]`` of one image, ``masks`` ``[m, H, W]`` bool at its
    pixel size (H, W multiples of h, w) → ``[m, E]``, the area-weighted mean of the features."""
    h, w = dense.shape[:2]
    weights = F.interpolate(masks[:, None].float(), size=(h, w), mode="area")[:, 0]  # [m, h, w]
    total = weights.sum(dim=(1, 2)).clamp_min(torch.finfo(torch.float32).tiny)
    return torch.einsum("mhw,hwe->me", weights, dense.float()) / total[:, None]


def _topk_hits(embeddings: Tensor, labels: Sequence[int], classifier: Tensor) -> tuple[list[bool], list[bool]]:
    if not len(labels):
        return [], []
    scores = F.normalize(embeddings, dim=-1) @ classifier.T
    top = scores.topk(min(5, classifier.shape[0]), dim=1).indices
    target = torch.tensor(list(labels)).unsqueeze(1)
    return (top[:, 0:1] == target).any(1).tolist(), (top == target).any(1).tolist()


def region_accuracy(
    model: torch.nn.Module, images: Iterable[RegionImage], classifier: Tensor, *, batch_size: int = 32, progress: bool = False
) -> dict[str, dict[str, float]]:
    """Zero-shot top-1 / top-5 accuracy of every box, thing mask and stuff mask of ``images``
    against ``classifier`` ``[C, E]`` (unit-norm class embeddings).

    Returns:
        ``{"boxes" | "things" | "stuff": {"top1", "top5", "count"}}`` (accuracies in [0, 1]; a kind
        with no region reports count 0 and NaN accuracies).
    """
    from tqdm.auto import tqdm

    from ..finetune.dense import dense_features
    from ..towers.registry import image_tower

    tower = image_tower(model)
    patch = tower.patch_size[0]
    hits: dict[str, tuple[list[bool], list[bool]]] = {k: ([], []) for k in KINDS}
    classifier = classifier.float().cpu()

    def flush(chunk: list[RegionImage]) -> None:
        dense = dense_features(tower, torch.stack([r.image for r in chunk])).float().cpu()
        groups = {
            "boxes": (box_embeddings(dense, [r.boxes for r in chunk], patch), [c for r in chunk for c in r.box_labels]),
            "things": (_masks(dense, [r.things for r in chunk]), [c for r in chunk for c in r.thing_labels]),
            "stuff": (_masks(dense, [r.stuff for r in chunk]), [c for r in chunk for c in r.stuff_labels]),
        }
        for kind, (emb, labels) in groups.items():
            top1, top5 = _topk_hits(emb, labels, classifier)
            hits[kind][0].extend(top1)
            hits[kind][1].extend(top5)

    was_training = model.training
    model.eval()
    try:
        chunk: list[RegionImage] = []
        for item in tqdm(images, desc="regions", unit="image", disable=not progress):
            chunk.append(item)
            if len(chunk) == batch_size:
                flush(chunk)
                chunk = []
        if chunk:
            flush(chunk)
    finally:
        model.train(was_training)
    return {k: {"top1": _mean(t1), "top5": _mean(t5), "count": len(t1)} for k, (t1, t5) in hits.items()}


def _masks(dense: Tensor, masks: list[Tensor]) -> Tensor:
    rows = [mask_embeddings(d, m) for d, m in zip(dense, masks) if m.shape[0]]
    return torch.cat(rows) if rows else torch.zeros(0, dense.shape[-1])


def _mean(values: list[bool]) -> float:
    return float(np.mean(values)) if values else float("nan")


# ---------------------------------------------------------------------------- sources


def synth_classnames() -> list[str]:
    """The synthetic world's 64 region classes: ``"colour shape"`` for every pair."""
    from ..synth.world import ALL_PAIRS

    return [f"{c} {s}" for c, s in ALL_PAIRS]


def synth_regions(count: int, preprocess: Callable[[Any], Tensor], split: str = "test", seed: int = 0) -> Iterator[RegionImage]:
    """Held-out scenes ``0..count-1`` of ``split`` with every object's exact box and mask (thing
    masks; the world has no stuff classes). Boxes are the masks' bounding boxes (pixel edges)."""
    from ..synth import make_scene
    from ..synth.world import ALL_PAIRS

    index = {pair: i for i, pair in enumerate(ALL_PAIRS)}
    for i in range(count):
        scene = make_scene(i, split, seed)
        boxes = []
        for mask in scene.masks:
            ys, xs = np.nonzero(mask)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        labels = [index[(o.colour, o.shape)] for o in scene.objects]
        yield RegionImage(
            image=preprocess(scene.pil()),
            boxes=torch.tensor(boxes, dtype=torch.float32),
            box_labels=labels,
            things=torch.from_numpy(scene.masks.copy()),
            thing_labels=labels,
        )


def _resized(image: Image.Image, size: int, preprocess: Callable[[Any], Tensor]) -> Tensor:
    return preprocess(image.resize((size, size), Image.Resampling.BICUBIC))


def _scaled_masks(masks: list[np.ndarray], size: int) -> Tensor:
    if not masks:
        return torch.zeros(0, size, size, dtype=torch.bool)
    return torch.stack([torch.from_numpy(np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((size, size), Image.Resampling.NEAREST)) > 127) for m in masks])


def coco_regions(
    instances: str | os.PathLike[str],
    images_root: str | os.PathLike[str],
    preprocess: Callable[[Any], Tensor],
    size: int,
    *,
    stuff: str | os.PathLike[str] | None = None,
    limit: int | None = None,
) -> tuple[list[str], Iterator[RegionImage]]:
    """The classes and annotated images of a COCO-format ``instances`` file (boxes + thing masks) and
    optionally a ``stuff`` file in the same format; images read from ``images_root`` and resized to
    ``size`` × ``size``. Classes: the thing categories, then the stuff categories not among them.

    Raises:
        InputError: an unreadable annotation file or a missing image.
    """
    from pycocotools.coco import COCO

    from ..data import UnreadableImage, decode_image

    def read(path: str | os.PathLike[str]) -> Any:
        if not Path(path).is_file():
            raise InputError(f"annotation file {path} does not exist")
        try:
            with open(os.devnull, "w") as quiet:  # pycocotools prints progress to stdout
                import contextlib

                with contextlib.redirect_stdout(quiet):
                    return COCO(str(path))
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"cannot read COCO annotations {path}: {exc}") from exc

    things = read(instances)
    stuffs = read(stuff) if stuff is not None else None
    categories = [things.cats[c]["name"] for c in sorted(things.cats)]
    if stuffs is not None:
        categories += [stuffs.cats[c]["name"] for c in sorted(stuffs.cats) if stuffs.cats[c]["name"] not in categories]
    class_of = {name: i for i, name in enumerate(categories)}
    ids = sorted(things.imgs)[:limit]
    root = Path(images_root)

    def items() -> Iterator[RegionImage]:
        for image_id in ids:
            info = things.imgs[image_id]
            path = root / info["file_name"]
            try:
                image = decode_image(path.read_bytes())
            except (OSError, UnreadableImage) as exc:
                raise InputError(f"image {path} (COCO id {image_id}) cannot be read: {exc}") from exc
            sx, sy = size / image.width, size / image.height
            anns = [a for a in things.loadAnns(things.getAnnIds(imgIds=image_id)) if not a.get("iscrowd", 0)]
            boxes = [[a["bbox"][0] * sx, a["bbox"][1] * sy, (a["bbox"][0] + a["bbox"][2]) * sx, (a["bbox"][1] + a["bbox"][3]) * sy] for a in anns]
            labels = [class_of[things.cats[a["category_id"]]["name"]] for a in anns]
            masked = [a for a in anns if a.get("segmentation")]
            stuff_anns = []
            if stuffs is not None and image_id in stuffs.imgs:
                stuff_anns = [a for a in stuffs.loadAnns(stuffs.getAnnIds(imgIds=image_id)) if not a.get("iscrowd", 0)]
            yield RegionImage(
                image=_resized(image, size, preprocess),
                boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                box_labels=labels,
                things=_scaled_masks([things.annToMask(a) for a in masked], size),
                thing_labels=[class_of[things.cats[a["category_id"]]["name"]] for a in masked],
                stuff=_scaled_masks([stuffs.annToMask(a) for a in stuff_anns], size) if stuffs is not None else torch.zeros(0, size, size, dtype=torch.bool),
                stuff_labels=[class_of[stuffs.cats[a["category_id"]]["name"]] for a in stuff_anns] if stuffs is not None else [],
            )

    return categories, items()


# ---------------------------------------------------------------------------- retrieval


def recall_at(image_emb: Tensor, text_emb: Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, dict[str, float]]:
    """Text→image and image→text recall at ``ks`` of N paired unit-norm embeddings ``[N, E]``
    (pair i is image i with text i; a query counts when its own pair ranks in the top k).

    Returns ``{"t2i": {"r1", "r5", "r10"}, "i2t": {...}}``.
    """
    sims = text_emb.float() @ image_emb.float().T  # [texts, images]
    own = torch.arange(sims.shape[0])
    out = {}
    for name, s in (("t2i", sims), ("i2t", sims.T)):
        rank = (s > s[own, own][:, None]).sum(dim=1)  # how many beat the own pair
        out[name] = {f"r{k}": float((rank < k).float().mean()) for k in ks}
    return out


def retrieval(model: torch.nn.Module, tokenizer: Callable[[list[str]], Tensor], images: Tensor, captions: Sequence[str], batch_size: int = 128) -> dict[str, dict[str, float]]:
    """:func:`recall_at` of the model's embeddings of paired ``images`` ``[N, 3, S, S]`` (preprocessed) and ``captions``."""
    if images.shape[0] != len(captions) or not len(captions):
        raise InputError(f"retrieval needs as many captions as images (at least one), got {images.shape[0]} images and {len(captions)} captions")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            img = torch.cat([F.normalize(model.encode_image(images[i : i + batch_size].to(device)).float(), dim=-1) for i in range(0, len(captions), batch_size)])
            txt = torch.cat([F.normalize(model.encode_text(tokenizer(list(captions[i : i + batch_size])).to(device)).float(), dim=-1) for i in range(0, len(captions), batch_size)])
    finally:
        model.train(was_training)
    return recall_at(img.cpu(), txt.cpu())


def synth_retrieval(model: torch.nn.Module, tokenizer: Callable[[list[str]], Tensor], preprocess: Callable[[Any], Tensor], count: int, split: str = "test", seed: int = 0) -> dict[str, dict[str, float]]:
    """:func:`retrieval` over ``count`` held-out scenes and their complete captions."""
    from ..synth import caption_of, make_scenes

    scenes = make_scenes(count, split, seed)
    return retrieval(model, tokenizer, torch.stack([preprocess(s.pil()) for s in scenes]), [caption_of(s).text for s in scenes])


# ---------------------------------------------------------------------------- the whole evaluation


def evaluate(
    model: torch.nn.Module,
    preprocess: Callable[[Any], Tensor],
    tokenizer: Callable[[list[str]], Tensor],
    *,
    synth: int | None = None,
    annotations: str | os.PathLike[str] | None = None,
    images: str | os.PathLike[str] | None = None,
    stuff: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    templates: Sequence[str] | None = None,
    retrieval_synth: int | None = None,
    retrieval_data: str | os.PathLike[str] | None = None,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
) -> dict[str, Any]:
    """Region classification of ``synth`` held-out scenes or of a COCO-format ``annotations`` file
    (with its ``images`` folder and optional ``stuff`` file), and optionally retrieval over
    ``retrieval_synth`` held-out pairs or the pairs of ``retrieval_data`` (a folder with captions or
    a table, read through :mod:`gradeclip.data`). ``templates``: prompt templates (default: the bare
    class name for the synthetic world, open_clip's 80 OpenAI prompts otherwise).

    Returns ``{"classes", "templates", "regions": region_accuracy(...), "retrieval": recall_at(...)}``
    (``retrieval`` only when asked for).
    """
    from ..explainer import Explainer
    from ..towers.registry import image_tower
    from ..zeroshot import classifier, templates as template_set

    if (synth is None) == (annotations is None):
        raise InputError("give exactly one of --synth (held-out synthetic scenes) and --annotations (a COCO-format file)")
    if synth is not None:
        names, items = synth_classnames(), synth_regions(synth, preprocess, seed=seed)
    else:
        if images is None:
            raise InputError("--annotations needs --images, the folder of the annotated images")
        assert annotations is not None
        names, items = coco_regions(annotations, images, preprocess, image_tower(model).input_size[0], stuff=stuff, limit=limit)
    prompts = list(templates) if templates is not None else template_set("none" if synth is not None else "openai")
    weights = classifier(Explainer(model, tokenizer), names, prompts)
    results: dict[str, Any] = {"classes": len(names), "templates": len(prompts)}
    results["regions"] = region_accuracy(model, items, weights, batch_size=batch_size, progress=progress)
    if retrieval_synth:
        results["retrieval"] = synth_retrieval(model, tokenizer, preprocess, retrieval_synth, seed=seed)
    elif retrieval_data is not None:
        results["retrieval"] = source_retrieval(model, tokenizer, preprocess, retrieval_data)
    return results


def source_retrieval(model: torch.nn.Module, tokenizer: Callable[[list[str]], Tensor], preprocess: Callable[[Any], Tensor], spec: str | os.PathLike[str]) -> dict[str, dict[str, float]]:
    """:func:`retrieval` over the decodable captioned images of a folder or table ``spec``."""
    from ..data import IndexedSource, open_source
    from ..finetune.pairs import decode_pair

    source = open_source(spec)
    if not isinstance(source, IndexedSource):
        raise InputError("--retrieval-data must be a folder with captions or a table (random access)")
    pairs = [p for p in (decode_pair(s, preprocess, False) for s in source.samples(0, len(source))) if not isinstance(p, str)]
    if not pairs:
        raise InputError(f"--retrieval-data {spec}: no decodable image with a caption")
    return retrieval(model, tokenizer, torch.stack([p.image for p in pairs]), [p.caption for p in pairs])
