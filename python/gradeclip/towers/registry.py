"""Pick the tower adapter for a model, or say plainly why there is none."""

from __future__ import annotations

from torch import nn

from ..errors import UnsupportedModelError
from .base import TokenTower


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
