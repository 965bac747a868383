"""Pick the tower adapter for a model, or say plainly why there is none."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from ..errors import UnsupportedModelError
from .base import TokenTower

if TYPE_CHECKING:
    from .openclip_text import OpenClipText


def image_tower(model: nn.Module) -> TokenTower:
    """The adapter for ``model``'s image tower. Raises :class:`UnsupportedModelError` naming the
    model and the reason when Grad-ECLIP cannot explain it."""
    from open_clip.transformer import VisionTransformer

    from .openclip_vit import OpenClipViT

    visual = getattr(model, "visual", None)
    if visual is None:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no image tower at .visual; gradeclip explains open_clip CLIP models"
        )
    if isinstance(visual, VisionTransformer):
        return OpenClipViT(visual)
    raise UnsupportedModelError(
        f"{type(model).__name__} with a {type(visual).__name__} image tower: no gradeclip adapter for "
        "this tower yet (supported: open_clip VisionTransformer with class-token pooling)"
    )


def text_tower(model: nn.Module) -> OpenClipText:
    """The adapter for ``model``'s text tower: the text modules of an open_clip ``CLIP``, or the
    ``TextTransformer`` at ``model.text`` (``CustomTextCLIP``). Raises :class:`UnsupportedModelError`
    naming the model and the reason when Grad-ECLIP cannot explain it (Hugging Face text towers,
    class-token or non-causal towers, pooling other than at the end-of-text token)."""
    from open_clip.transformer import TextTransformer

    from .openclip_text import OpenClipText

    name = type(model).__name__
    text = getattr(model, "text", None)
    if text is not None:
        if isinstance(text, TextTransformer):
            return OpenClipText.from_text_transformer(text, name)
        raise UnsupportedModelError(
            f"{name} with a {type(text).__name__} text tower: no gradeclip adapter for it (Hugging Face text "
            "towers are not supported; supported: open_clip's causal TextTransformer)"
        )
    if all(hasattr(model, a) for a in ("token_embedding", "positional_embedding", "transformer", "ln_final", "attn_mask")):
        return OpenClipText.from_clip(model)
    raise UnsupportedModelError(f"{name} has no text tower gradeclip knows (open_clip CLIP text modules or .text)")
