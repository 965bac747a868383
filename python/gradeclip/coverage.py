"""Which open_clip architectures gradeclip explains: build each with random weights, explain it, check it.

:func:`run_coverage` (the command ``gradeclip coverage``, also ``python -m gradeclip.coverage``;
flags in :mod:`gradeclip.commands.coverage`) walks ``open_clip.list_models()``. For
each architecture it builds the model with random weights, small (see :func:`shrink`), asks for the
image and the text tower adapters and, where one exists, explains a batch and checks it:

- visual ✓: ``explain_image`` runs with ``heads="single"`` and ``heads="model"``; the maps are finite,
  non-negative, on the tower's grid and not all zero; the adapter's embedding (its own run of the
  explained attention with the model's heads) equals the model's own ``encode_image`` (relative
  error ≤ 1e-3), and so does the ``heads="model"`` score the model's cosine;
- textual ✓: the same for ``explain_text`` on token ids against ``encode_text``.

Anything else is ✗ with the reason: the adapter's :class:`~gradeclip.UnsupportedModelError`, or
why the model could not be built here. Nothing is skipped silently; an unexpected exception is
reported as ``crash`` (and makes the exit status 1).

Size: every tower is built at its full width but with 2 blocks (open_clip transformers: ``layers``
= 2; ModifiedResNet: one bottleneck per stage; timm ViT/EVA trunks: ``depth=2``); timm CNN trunks
(ConvNeXt, FastViT, Swin, ViTamin's stem) at their full size. Every block of a tower is of the same
type, so depth does not change whether it can be explained. open_clip images are 4 × 4 patches
(ResNets: 64 px); timm trunks run at their own input size.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .errors import UnsupportedModelError
from .explainer import Explainer
from .towers.registry import image_tower, text_tower

BLOCKS = 2  # blocks per tower in the coverage build
TOLERANCE = 1e-3  # relative error allowed between the adapter's and the model's embeddings


@dataclass
class Row:
    """One architecture's result: ``visual`` / ``textual`` are ``"✓"`` or ``"✗"``, ``reason`` says why
    for each ✗, ``build`` how it was built, ``seconds`` the wall time of build + checks."""

    name: str
    visual: str
    textual: str
    reason: str
    build: str
    seconds: float
    crashed: bool = False


def shrink(cfg: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A copy of an open_clip model config with 2 blocks per tower and a 4 × 4-patch image
    (64 px for ResNets), and a note saying what changed."""
    cfg = copy.deepcopy(cfg)
    vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    notes = []
    if not vision.get("timm_model_name"):
        layers = vision.get("layers", 12)
        if isinstance(layers, (list, tuple)):
            vision["layers"] = [1] * len(layers)
            vision["image_size"] = 64
            notes.append(f"vision 1 bottleneck/stage (of {'-'.join(map(str, layers))}), 64 px")
        else:
            vision["layers"] = min(layers, BLOCKS)
            patch = vision.get("patch_size", 16)
            vision["image_size"] = 4 * patch
            notes.append(f"vision {vision['layers']}/{layers} blocks, {4 * patch} px")
    if "hf_model_name" not in text:
        layers = text.get("layers", 12)
        text["layers"] = min(layers, BLOCKS)
        notes.append(f"text {text['layers']}/{layers} blocks")
    return cfg, "; ".join(notes)


@contextlib.contextmanager
def small_timm() -> Iterator[list[str]]:
    """While active, timm ViT/EVA trunks are created with ``depth=2``; yields the notes made."""
    import timm

    real = timm.create_model
    notes: list[str] = []

    def create(name: str, *args: Any, **kwargs: Any) -> nn.Module:
        if name.startswith(("vit_", "eva")):
            try:
                model = real(name, *args, depth=BLOCKS, **kwargs)
                notes.append(f"timm {name} at depth {BLOCKS}")
                return model
            except TypeError:
                pass
        notes.append(f"timm {name} full size")
        return real(name, *args, **kwargs)

    timm.create_model = create
    try:
        yield notes
    finally:
        timm.create_model = real


class VisionOnly(nn.Module):
    """Holds an image tower built alone, for models whose text tower cannot be built offline."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual


def build(name: str) -> tuple[nn.Module, str, str | None]:
    """``(model, build note, text problem)``: the architecture with random weights, shrunk. When
    its Hugging Face text encoder cannot be built offline, only its image tower is built and
    ``text problem`` says why there is no text tower."""
    import open_clip
    from open_clip.model import _build_vision_tower

    cfg, note = shrink(open_clip.get_model_config(name))
    text = cfg.get("text_cfg", {})
    with small_timm() as timm_notes:
        if "hf_model_name" in text:
            visual = _build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"], quick_gelu=cfg.get("quick_gelu", False))
            pooler = text.get("hf_pooler_type", "mean_pooler")  # open_clip's default
            problem = (
                f"Hugging Face text encoder {text['hf_model_name']} ({pooler}) needs its config from the hub, so it is not "
                "built here; gradeclip does not explain open_clip's Hugging Face text encoders"
                + (" (mean pooling: no attention at the pooling point)" if pooler == "mean_pooler" else "")
            )
            return VisionOnly(visual).eval(), "; ".join(n for n in [note, *timm_notes, "image tower only"] if n), problem
        model = open_clip.create_model(name, pretrained=None, **_overrides(cfg))
    return model.eval(), "; ".join(n for n in [note, *timm_notes] if n), None


def _overrides(cfg: dict[str, Any]) -> dict[str, Any]:
    """open_clip.create_model keyword overrides that apply the shrunk config."""
    return {"vision_cfg": cfg.get("vision_cfg", {}), "text_cfg": cfg.get("text_cfg", {})}


def _close(a: Tensor, b: Tensor) -> bool:
    return bool(torch.isfinite(a).all() and ((a - b).norm() <= TOLERANCE * b.norm().clamp_min(1e-12)))


def _check_maps(maps: Tensor, shape: tuple[int, ...], what: str) -> None:
    if tuple(maps.shape) != shape:
        raise AssertionError(f"{what} maps have shape {tuple(maps.shape)}, expected {shape}")
    if not torch.isfinite(maps).all() or (maps < 0).any() or maps.abs().sum() == 0:
        raise AssertionError(f"{what} maps are not finite, negative somewhere, or all zero")


def check_visual(model: nn.Module) -> None:
    """Explain two random images against three random text embeddings and check the result
    (module docstring). Raises UnsupportedModelError, or AssertionError on a wrong result."""
    tower = image_tower(model)
    h, w = tower.model_grid
    images = torch.randn(2, 3, *tower.input_size)
    explainer = Explainer(model)
    with torch.no_grad():
        own = model.visual(images)
        own = own[0] if isinstance(own, tuple) else own  # towers that also return their tokens
        mine = tower.encode(images)
    if not _close(mine.float(), own.float()):
        raise AssertionError("the adapter's image embedding differs from the model's own")
    texts = F.normalize(torch.randn(3, tower.embed_dim), dim=-1)
    for heads in ("single", "model"):
        res = explainer.explain_image(images, texts, heads=heads)
        _check_maps(res.maps, (2, 3, h, w), f"heads={heads!r}")
    want = F.normalize(own.float(), dim=-1) @ texts.T
    if not _close(res.scores, want):
        raise AssertionError("the heads='model' score differs from the model's own cosine")


def token_ids(tower: Any, count: int = 2) -> Tensor:
    """``count`` valid rows of token ids for an open_clip text tower: a start id, random content, its
    end-of-text id (where the model pools, or where a class-token tower's caption ends), the model's
    pad id after (towers pooled at their last position, SigLIP: full random rows)."""
    vocab = tower.token_embedding.num_embeddings
    length = tower.context_length
    ids = torch.randint(1, vocab - 2, (count, length))
    if getattr(tower, "pools_last", False):
        return ids
    eot_id = tower.eos_id if tower.pool_type == "eos" else vocab - 1
    for row, end in enumerate(torch.linspace(3, length - 2, count).long().tolist()):
        ids[row, 0] = vocab - 2
        ids[row, end] = eot_id
        ids[row, end + 1 :] = getattr(tower, "pad_id", 0)
    return ids


def check_textual(model: nn.Module) -> None:
    """Explain two random token rows against two random image embeddings and check the result."""
    tower = text_tower(model)
    ids = token_ids(tower)
    with torch.no_grad():
        own = model.encode_text(ids, normalize=False)  # CoCa normalises by default
        mine = tower.encode(ids)
    if not _close(mine.float(), own.float()):
        raise AssertionError("the adapter's text embedding differs from the model's own")
    explainer = Explainer(model)
    try:
        size = image_tower(model).input_size
    except UnsupportedModelError:  # the texts are still explained, against the model's own image embeddings
        size = tuple(model.visual.image_size) if isinstance(model.visual.image_size, (tuple, list)) else (model.visual.image_size,) * 2
    images = torch.randn(2, 3, *size)
    for heads in ("single", "model"):
        res = explainer.explain_text(images, ids, n_layers=min(BLOCKS, len(tower.blocks)), heads=heads)
        if not torch.isfinite(res.importance).all() or (res.importance < 0).any():
            raise AssertionError(f"heads={heads!r} token importance is not finite or negative")
    with torch.no_grad():
        image_emb = explainer.encode_images(images)
    if not _close(res.scores, image_emb @ F.normalize(own.float(), dim=-1).T):
        raise AssertionError("the heads='model' score differs from the model's own cosine")


def _attempt(check: Any, model: nn.Module) -> tuple[str, str, bool]:
    """``(mark, reason, crashed)`` of one check."""
    try:
        check(model)
        return "✓", "", False
    except UnsupportedModelError as exc:
        return "✗", str(exc), False
    except Exception as exc:  # report it in the table, never stop the walk
        return "✗", f"crash: {type(exc).__name__}: {exc}", True


def cover(name: str) -> Row:
    """Build, explain and check one architecture."""
    start = time.perf_counter()
    torch.manual_seed(0)
    try:
        model, note, text_problem = build(name)
    except Exception as exc:
        return Row(name, "✗", "✗", f"could not be built: {type(exc).__name__}: {exc}", "", time.perf_counter() - start, True)
    visual, why_v, crash_v = _attempt(check_visual, model)
    if text_problem is not None:
        textual, why_t, crash_t = "✗", text_problem, False
    else:
        textual, why_t, crash_t = _attempt(check_textual, model)
    del model
    gc.collect()
    reasons = ([f"visual: {why_v}"] if why_v else []) + ([f"textual: {why_t}"] if why_t else [])
    return Row(name, visual, textual, " · ".join(reasons), note, time.perf_counter() - start, crash_v or crash_t)


def markdown(rows: list[Row], command: str) -> str:
    """The coverage table as Markdown, with the command that produced it and a summary line."""
    both = sum(r.visual == "✓" and r.textual == "✓" for r in rows)
    vis = sum(r.visual == "✓" for r in rows)
    txt = sum(r.textual == "✓" for r in rows)
    crashed = sum(r.crashed for r in rows)
    import open_clip
    import timm

    lines = [
        "# Coverage: which open_clip architectures gradeclip explains",
        "",
        "Every architecture of `open_clip.list_models()`, built with random weights at full width but",
        "2 blocks per tower (open_clip transformers: `layers=2`; ModifiedResNet: one bottleneck per",
        "stage; timm ViT/EVA trunks: `depth=2`; timm CNN trunks and ViTamin at full size; see",
        "`built as`). ✓ means the explanation ran and was checked: maps finite, non-negative, on the",
        "tower's grid and not all zero, and the adapter's embedding and the `heads=\"model\"` score equal",
        "the model's own (relative error ≤ 1e-3). ✗ gives gradeclip's reason, or why the tower was not",
        "built here. Families and choices: [models.md](models.md).",
        "",
        f"Produced by `{command}` (torch {torch.__version__}, open_clip {open_clip.__version__}, "
        f"timm {timm.__version__}); the seconds are wall time on a shared 2-core machine.",
        "",
        f"{len(rows)} architectures: visual ✓ {vis}, textual ✓ {txt}, both {both}, crashes {crashed}.",
        "",
        "| architecture | visual | textual | reason when refused | built as | seconds |",
        "|---|:-:|:-:|---|---|--:|",
    ]
    for r in rows:
        reason = r.reason.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r.name} | {r.visual} | {r.textual} | {reason} | {r.build} | {r.seconds:.1f} |")
    return "\n".join(lines) + "\n"


def run_coverage(names: list[str], jsonl: Path | None = None, progress: bool = True) -> list[Row]:
    """Cover ``names`` in order. With ``jsonl``, each finished row is appended there and rows
    already in it are reused, so an interrupted run resumes where it stopped."""
    done: dict[str, Row] = {}
    if jsonl is not None and jsonl.exists():
        for line in jsonl.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = Row(**json.loads(line))
                done[row.name] = row
    from tqdm import tqdm

    rows = []
    for name in tqdm(names, desc="coverage", unit="model", disable=not progress, file=sys.stderr):
        if name not in done:
            done[name] = cover(name)
            if jsonl is not None:
                with jsonl.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(asdict(done[name]), ensure_ascii=False) + "\n")
        rows.append(done[name])
    return rows


if __name__ == "__main__":  # `python -m gradeclip.coverage ...` is `gradeclip coverage ...`
    from .cli import main

    raise SystemExit(main(["coverage", *sys.argv[1:]]))
