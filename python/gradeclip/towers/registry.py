"""Pick the tower adapter for a model, or say plainly why there is none.

Families (one adapter module each): open_clip ``VisionTransformer`` (class token,
:mod:`.openclip_vit`; attentional pooler, :mod:`.openclip_coca`), ``ModifiedResNet``
(:mod:`.openclip_resnet`), timm-hosted ViT/EVA towers and bare timm classifiers (:mod:`.timm_vit`),
open_clip text transformers (:mod:`.openclip_text`), Hugging Face ``CLIPModel`` (:mod:`.hf_clip`)
``BlipForImageTextRetrieval`` (:mod:`.hf_blip`) and ``SiglipModel`` (:mod:`.hf_siglip`).

The choice is read from tables, the way timm and open_clip register their models: by the library
the model's class comes from (:data:`IMAGE_BY_LIBRARY`, :data:`TEXT_BY_LIBRARY`), then by the
class of a transformers model (:data:`HF_ADAPTERS`) or of an open_clip tower
(:data:`OPEN_CLIP_IMAGE`, :data:`OPEN_CLIP_TEXT`). Supporting a new family is one adapter module
and one table entry. Adapter modules (and the heavy libraries behind them) are imported only when
a model needs them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import UnsupportedModelError
from .base import ImageTower, TextTower


@dataclass(frozen=True)
class Adapter:
    """An adapter class named by its module in :mod:`gradeclip.towers` (imported on first use)."""

    module: str
    name: str

    def load(self) -> Any:
        """The adapter class."""
        return getattr(importlib.import_module(f".{self.module}", __package__), self.name)


@dataclass(frozen=True)
class Towers:
    """The image and text adapters of one model class; each adapter takes the whole model."""

    image: Adapter
    text: Adapter


#: transformers model class name → its adapters
HF_ADAPTERS: dict[str, Towers] = {
    "CLIPModel": Towers(Adapter("hf_clip", "HFClipVision"), Adapter("hf_clip", "HFClipText")),
    "BlipForImageTextRetrieval": Towers(Adapter("hf_blip", "BlipVision"), Adapter("hf_blip", "BlipText")),
    "SiglipModel": Towers(Adapter("hf_siglip", "SiglipVision"), Adapter("hf_siglip", "SiglipText")),
}
HF_MODELS = tuple(HF_ADAPTERS)


def _library(model: nn.Module) -> str:
    """``"transformers"``, ``"timm"``, ``"open_clip"`` or ``""``: where the model's class comes from."""
    return type(model).__module__.split(".")[0]


def _hf_adapter(model: nn.Module, tower: str) -> Any:
    """The ``tower`` (``"image"`` or ``"text"``) adapter of a transformers model."""
    adapters = HF_ADAPTERS.get(type(model).__name__)
    if adapters is None:
        raise UnsupportedModelError(
            f"transformers {type(model).__name__}: no gradeclip adapter for it (supported: {', '.join(HF_MODELS)}; "
            "for BLIP, the image–text contrastive head of BlipForImageTextRetrieval)"
        )
    adapter: Adapter = getattr(adapters, tower)
    return adapter.load()(model)


# Image towers.


def _timm_classifier(model: nn.Module) -> ImageTower:
    """A bare timm image classifier: explain a class logit."""
    return Adapter("timm_vit", "TimmViT").load()(model, None, "logit", f"timm classifier {type(model).__name__}")


def _open_clip_vit(model: nn.Module, visual: nn.Module) -> ImageTower:
    if getattr(visual, "attn_pool", None) is not None:
        return Adapter("openclip_coca", "OpenClipCoCaViT").load()(visual)
    return Adapter("openclip_vit", "OpenClipViT").load()(visual)


def _open_clip_resnet(model: nn.Module, visual: nn.Module) -> ImageTower:
    return Adapter("openclip_resnet", "OpenClipResNet").load()(visual)


def _open_clip_timm(model: nn.Module, visual: nn.Module) -> ImageTower:
    name = type(model).__name__
    extra = [n for n in ("pool",) if hasattr(visual.head, n)]
    if extra:
        raise UnsupportedModelError(
            f"{name}: open_clip timm tower with a {type(visual.head.pool).__name__} head on a "
            f"{type(visual.trunk).__name__} trunk: no gradeclip adapter for that pooling head"
        )
    return Adapter("timm_vit", "TimmViT").load()(visual.trunk, visual.head, "cosine", name, dict(getattr(visual, "preprocess_cfg", None) or {}))


#: open_clip image tower class name (``model.visual``) → builder ``(model, visual) -> ImageTower``
OPEN_CLIP_IMAGE: dict[str, Callable[[nn.Module, nn.Module], ImageTower]] = {
    "VisionTransformer": _open_clip_vit,
    "ModifiedResNet": _open_clip_resnet,
    "TimmModel": _open_clip_timm,
}


def _open_clip_image(model: nn.Module) -> ImageTower:
    name = type(model).__name__
    visual = getattr(model, "visual", None)
    if visual is None:
        raise UnsupportedModelError(
            f"{name} has no image tower at .visual; gradeclip explains open_clip CLIP models, transformers "
            f"{' / '.join(HF_MODELS)} and timm ViT/EVA classifiers"
        )
    kind = type(visual).__name__
    build = OPEN_CLIP_IMAGE.get(kind)
    if build is None:
        raise UnsupportedModelError(
            f"{name} with a {kind} image tower: no gradeclip adapter for this tower (supported: open_clip "
            "VisionTransformer with class-token or attentional pooling, ModifiedResNet, timm ViT/EVA towers)"
        )
    return build(model, visual)


#: library of the model's class → image tower builder; any other library: an open_clip model
IMAGE_BY_LIBRARY: dict[str, Callable[[nn.Module], ImageTower]] = {
    "transformers": lambda model: _hf_adapter(model, "image"),
    "timm": _timm_classifier,
}


def image_tower(model: nn.Module) -> ImageTower:
    """The adapter for ``model``'s image tower. Raises :class:`UnsupportedModelError` naming the
    model and the reason when Grad-ECLIP cannot explain it."""
    return IMAGE_BY_LIBRARY.get(_library(model), _open_clip_image)(model)


# Text towers.


def _timm_has_no_text(model: nn.Module) -> TextTower:
    raise UnsupportedModelError(f"timm {type(model).__name__} is an image classifier: it has no text tower to explain")


def _open_clip_text_transformer(model: nn.Module, text: nn.Module) -> TextTower:
    return Adapter("openclip_text", "OpenClipText").load().from_text_transformer(text, type(model).__name__)


def _open_clip_hf_text(model: nn.Module, text: nn.Module) -> TextTower:
    pooler = type(getattr(text, "pooler", None)).__name__
    why = (
        "pools by averaging its tokens, so no attention sits at the pooling point"
        if pooler in ("MeanPooler", "MaxPooler")
        else "is not supported (supported: open_clip's TextTransformer)"
    )
    raise UnsupportedModelError(
        f"{type(model).__name__} with a {type(text).__name__} text tower ({type(getattr(text, 'transformer', None)).__name__}, {pooler}): "
        f"a Hugging Face text encoder that {why}"
    )


#: open_clip text tower class name (``model.text``) → builder ``(model, text) -> TextTower``
OPEN_CLIP_TEXT: dict[str, Callable[[nn.Module, nn.Module], TextTower]] = {
    "TextTransformer": _open_clip_text_transformer,
    "HFTextEncoder": _open_clip_hf_text,
}

#: the attributes of an open_clip ``CLIP`` whose text modules sit on the model itself
CLIP_TEXT_MODULES = ("token_embedding", "positional_embedding", "transformer", "ln_final", "attn_mask")


def _open_clip_text(model: nn.Module) -> TextTower:
    name = type(model).__name__
    text = getattr(model, "text", None)
    if text is not None:
        kind = type(text).__name__
        build = OPEN_CLIP_TEXT.get(kind)
        if build is None:
            raise UnsupportedModelError(
                f"{name} with a {kind} text tower: no gradeclip adapter for it (Hugging Face text "
                "towers are not supported; supported: open_clip's TextTransformer)"
            )
        return build(model, text)
    if all(hasattr(model, a) for a in CLIP_TEXT_MODULES):
        return Adapter("openclip_text", "OpenClipText").load().from_clip(model)
    raise UnsupportedModelError(f"{name} has no text tower gradeclip knows (open_clip CLIP text modules or .text)")


#: library of the model's class → text tower builder; any other library: an open_clip model
TEXT_BY_LIBRARY: dict[str, Callable[[nn.Module], TextTower]] = {
    "transformers": lambda model: _hf_adapter(model, "text"),
    "timm": _timm_has_no_text,
}


def text_tower(model: nn.Module) -> TextTower:
    """The adapter for ``model``'s text tower: the text modules of an open_clip ``CLIP``, the
    ``TextTransformer`` at ``model.text`` (``CustomTextCLIP``, ``CoCa``), or the text tower of a
    transformers ``CLIPModel`` / ``BlipForImageTextRetrieval`` / ``SiglipModel``. Raises :class:`UnsupportedModelError`
    naming the model and the reason when Grad-ECLIP cannot explain it (open_clip's Hugging Face text
    encoders, pooling at the first token or of every token, attention that changes the q·k arithmetic)."""
    return TEXT_BY_LIBRARY.get(_library(model), _open_clip_text)(model)
