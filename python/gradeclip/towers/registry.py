"""Pick the tower adapter for a model, or say plainly why there is none.

Families (one adapter module each): open_clip ``VisionTransformer`` (class token,
:mod:`.openclip_vit`; attentional pooler, :mod:`.openclip_coca`), ``ModifiedResNet``
(:mod:`.openclip_resnet`), timm-hosted ViT/EVA towers and bare timm classifiers (:mod:`.timm_vit`),
open_clip text transformers (:mod:`.openclip_text`), Hugging Face ``CLIPModel`` (:mod:`.hf_clip`)
and ``BlipForImageTextRetrieval`` (:mod:`.hf_blip`). Heavy libraries are imported only when the
model comes from them.
"""

from __future__ import annotations

from torch import nn

from ..errors import UnsupportedModelError
from .base import ImageTower, TextTower

HF_MODELS = ("CLIPModel", "BlipForImageTextRetrieval")


def _library(model: nn.Module) -> str:
    """``"transformers"``, ``"timm"``, ``"open_clip"`` or ``""``: where the model's class comes from."""
    return type(model).__module__.split(".")[0]


def _refuse_hf(model: nn.Module) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"transformers {type(model).__name__}: no gradeclip adapter for it (supported: {', '.join(HF_MODELS)}; "
        "for BLIP, the image–text contrastive head of BlipForImageTextRetrieval)"
    )


def image_tower(model: nn.Module) -> ImageTower:
    """The adapter for ``model``'s image tower. Raises :class:`UnsupportedModelError` naming the
    model and the reason when Grad-ECLIP cannot explain it."""
    name = type(model).__name__
    library = _library(model)
    if library == "transformers":
        if name == "CLIPModel":
            from .hf_clip import HFClipVision

            return HFClipVision(model)
        if name == "BlipForImageTextRetrieval":
            from .hf_blip import BlipVision

            return BlipVision(model)
        raise _refuse_hf(model)
    if library == "timm":  # a bare timm image classifier: explain a class logit
        from .timm_vit import TimmViT

        return TimmViT(model, None, "logit", f"timm classifier {name}")
    visual = getattr(model, "visual", None)
    if visual is None:
        raise UnsupportedModelError(
            f"{name} has no image tower at .visual; gradeclip explains open_clip CLIP models, transformers "
            f"{' / '.join(HF_MODELS)} and timm ViT/EVA classifiers"
        )
    kind = type(visual).__name__
    if kind == "VisionTransformer":
        if getattr(visual, "attn_pool", None) is not None:
            from .openclip_coca import OpenClipCoCaViT

            return OpenClipCoCaViT(visual)
        from .openclip_vit import OpenClipViT

        return OpenClipViT(visual)
    if kind == "ModifiedResNet":
        from .openclip_resnet import OpenClipResNet

        return OpenClipResNet(visual)
    if kind == "TimmModel":
        from .timm_vit import TimmViT

        extra = [n for n in ("pool",) if hasattr(visual.head, n)]
        if extra:
            raise UnsupportedModelError(
                f"{name}: open_clip timm tower with a {type(visual.head.pool).__name__} head on a "
                f"{type(visual.trunk).__name__} trunk: no gradeclip adapter for that pooling head"
            )
        return TimmViT(visual.trunk, visual.head, "cosine", name, dict(getattr(visual, "preprocess_cfg", None) or {}))
    raise UnsupportedModelError(
        f"{name} with a {kind} image tower: no gradeclip adapter for this tower (supported: open_clip "
        "VisionTransformer with class-token or attentional pooling, ModifiedResNet, timm ViT/EVA towers)"
    )


def text_tower(model: nn.Module) -> TextTower:
    """The adapter for ``model``'s text tower: the text modules of an open_clip ``CLIP``, the
    ``TextTransformer`` at ``model.text`` (``CustomTextCLIP``, ``CoCa``), or the text tower of a
    transformers ``CLIPModel`` / ``BlipForImageTextRetrieval``. Raises :class:`UnsupportedModelError`
    naming the model and the reason when Grad-ECLIP cannot explain it (open_clip's Hugging Face text
    encoders, pooling at the first token or of every token, attention that changes the q·k arithmetic)."""
    name = type(model).__name__
    library = _library(model)
    if library == "transformers":
        if name == "CLIPModel":
            from .hf_clip import HFClipText

            return HFClipText(model)
        if name == "BlipForImageTextRetrieval":
            from .hf_blip import BlipText

            return BlipText(model)
        raise _refuse_hf(model)
    if library == "timm":
        raise UnsupportedModelError(f"timm {name} is an image classifier: it has no text tower to explain")
    from .openclip_text import OpenClipText

    text = getattr(model, "text", None)
    if text is not None:
        kind = type(text).__name__
        if kind == "TextTransformer":
            return OpenClipText.from_text_transformer(text, name)
        if kind == "HFTextEncoder":
            pooler = type(getattr(text, "pooler", None)).__name__
            why = (
                "pools by averaging its tokens, so no attention sits at the pooling point"
                if pooler in ("MeanPooler", "MaxPooler")
                else "is not supported (supported: open_clip's TextTransformer)"
            )
            raise UnsupportedModelError(
                f"{name} with a {kind} text tower ({type(getattr(text, 'transformer', None)).__name__}, {pooler}): "
                f"a Hugging Face text encoder that {why}"
            )
        raise UnsupportedModelError(
            f"{name} with a {kind} text tower: no gradeclip adapter for it (Hugging Face text "
            "towers are not supported; supported: open_clip's TextTransformer)"
        )
    if all(hasattr(model, a) for a in ("token_embedding", "positional_embedding", "transformer", "ln_final", "attn_mask")):
        return OpenClipText.from_clip(model)
    raise UnsupportedModelError(f"{name} has no text tower gradeclip knows (open_clip CLIP text modules or .text)")
