"""Shared fixtures: small random-weight models (no downloads) and a per-test seed."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def seed() -> int:
    """Every test starts from the same seed; tests that need several draws advance it themselves."""
    torch.manual_seed(0)
    return 0


def tiny_clip(**vision_overrides):
    """A small open_clip CLIP (random weights) with a ViT image tower: patch 8, 32 px, 3 blocks."""
    import open_clip

    vision = dict(image_size=32, patch_size=8, width=64, layers=3, head_width=16, mlp_ratio=2.0)
    vision.update(vision_overrides)
    text = dict(context_length=77, vocab_size=49408, width=64, heads=4, layers=3)
    model = open_clip.CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text)
    with torch.no_grad():  # open_clip leaves some of these at zero or one; spread them so tests can fail
        for name, p in model.named_parameters():
            if "bias" in name or "ls_" in name or "ln" in name:
                p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="session")
def tiny_model():
    torch.manual_seed(1234)
    return tiny_clip()


@pytest.fixture(scope="session")
def tokenizer():
    import open_clip

    return open_clip.get_tokenizer("ViT-B-32")


@pytest.fixture(scope="session")
def vit_b32():
    import open_clip

    torch.manual_seed(1)
    return open_clip.create_model("ViT-B-32", pretrained=None).eval()


@pytest.fixture(scope="session")
def vit_b16():
    import open_clip

    torch.manual_seed(2)
    return open_clip.create_model("ViT-B-16", pretrained=None).eval()


def tiny_text_clip(custom: bool = False, **text_overrides):
    """A small open_clip model (random weights) whose text tower has 8 blocks, for text explanations.

    ``custom=False``: ``CLIP`` (text modules on the model); ``custom=True``: ``CustomTextCLIP``
    (a ``TextTransformer`` at ``.text``). Image tower as in :func:`tiny_clip`.
    """
    import open_clip

    vision = dict(image_size=32, patch_size=8, width=64, layers=3, head_width=16, mlp_ratio=2.0)
    text = dict(context_length=77, vocab_size=49408, width=64, heads=4, layers=8, mlp_ratio=2.0)
    text.update(text_overrides)
    cls = open_clip.CustomTextCLIP if custom else open_clip.CLIP
    model = cls(embed_dim=32, vision_cfg=vision, text_cfg=text)
    with torch.no_grad():  # spread biases, norms and layer scales so tests can fail
        for name, p in model.named_parameters():
            if "bias" in name or "ls_" in name or "ln" in name:
                p.add_(0.05 * torch.randn_like(p))
            if "token_embedding" in name or "positional_embedding" in name:
                p.mul_(50.0)  # at open_clip's init every token looks alike deep in the tower: make them differ
    return model.eval()
