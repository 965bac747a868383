"""timm class-token ViTs at other input sizes (resolution="native", SPEC §4): the grid's position
embedding resized bicubically; other timm trunks refused with the reason."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_models import tiny_eva02, tiny_siglip, tiny_timm_classifier

import gradeclip
from gradeclip.towers.registry import image_tower

VARIANTS = {"plain": {}, "registers": {"reg_tokens": 2}, "no-embed-class": {"no_embed_class": True}}


def resized_reference(model, size):
    """The same weights in a timm model built for ``size``, its grid position embedding resized
    with ``F.interpolate`` (bicubic, align_corners=False, float32), as SPEC §4 says."""
    import timm

    kwargs = dict(model.pretrained_cfg.get("_overrides", {}))
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, **{**kwargs, "img_size": size})
    state = dict(model.state_dict())
    prefix = 0 if model.no_embed_class else model.num_prefix_tokens
    pos = state["pos_embed"][0]
    h, w = model.patch_embed.grid_size
    grid = pos[prefix:].reshape(1, h, w, -1).permute(0, 3, 1, 2).float()
    new = F.interpolate(grid, size=ref.patch_embed.grid_size, mode="bicubic", align_corners=False)
    state["pos_embed"] = torch.cat([pos[:prefix], new.permute(0, 2, 3, 1).reshape(-1, pos.shape[-1])])[None]
    ref.load_state_dict(state)
    return ref.eval()


def tiny(**overrides):
    model = tiny_timm_classifier(**overrides)
    model.pretrained_cfg = {**model.pretrained_cfg, "_overrides": dict(depth=3, embed_dim=64, num_heads=4, patch_size=8, num_classes=10, **overrides)}
    return model


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_other_sizes_match_timm_built_for_them(variant):
    model = tiny(**VARIANTS[variant])
    tower = image_tower(model)
    assert tower.any_size
    same = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # at the model's own size the reimplemented embedding is timm's
        torch.testing.assert_close(tower._positioned(same)[0], model._pos_embed(model.patch_embed(same)), atol=1e-6, rtol=0)
    images = torch.randn(2, 3, 48, 64)
    reference = resized_reference(model, (48, 64))
    with torch.no_grad():
        want = reference(images)
    res = gradeclip.Explainer(model).explain_classes(images, [1, 7], heads="model")
    assert res.maps.shape == (2, 2, 6, 8)
    torch.testing.assert_close(res.model_scores, want[:, [1, 7]], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(res.scores, want[:, [1, 7]], atol=1e-4, rtol=1e-4)


def test_fixed_size_trunks_say_why():
    eva = tiny_eva02()
    with pytest.raises(gradeclip.InputError, match=r"own input size 32×32 only \(its rotary position embedding"):
        gradeclip.Explainer(eva).explain_image(torch.randn(1, 3, 48, 32), torch.randn(1, 48))
    siglip = tiny_siglip()
    with pytest.raises(gradeclip.InputError, match=r"only \(its attention-pool head runs as timm's forward_features"):
        gradeclip.Explainer(siglip).explain_image(torch.randn(1, 3, 48, 32), torch.randn(1, 64))
