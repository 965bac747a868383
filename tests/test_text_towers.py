"""Which text towers gradeclip explains, and the reasons it gives for the others."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_text_clip
from torch import nn

import gradeclip
from gradeclip.towers.openclip_text import OpenClipText
from gradeclip.towers.registry import text_tower


def test_clip_and_custom_text_clip(tokenizer):
    clip = text_tower(tiny_text_clip())
    custom = text_tower(tiny_text_clip(custom=True, proj_bias=True))
    for tower in (clip, custom):
        assert isinstance(tower, OpenClipText)
        assert len(tower.blocks) == 8 and tower.context_length == 77 and tower.embed_dim == 32


@pytest.mark.parametrize(
    "overrides,context",
    [(dict(no_causal_mask=True), 77), (dict(embed_cls=True), 77), (dict(embed_cls=True, context_length=76), 76)],
    ids=["bidirectional-eot", "class-token", "class-token-76"],
)
def test_bidirectional_and_class_token_towers_are_explained(overrides, context):
    """The context length is the ids' (CoCa's positional table has one more row, for its class token)."""
    tower = text_tower(tiny_text_clip(custom=True, **overrides))
    assert isinstance(tower, OpenClipText) and tower.context_length == context


def test_encode_is_the_models_text_embedding(tokenizer):
    """The adapter runs only up to the longest EOT; the causal mask makes that the model's embedding."""
    model = tiny_text_clip(custom=True, proj_bias=True, pool_type="eos", eos_id=tokenizer.eot_token_id)
    ids = tokenizer(["a dog", "two cats on a red sofa next to the window"])
    with torch.no_grad():
        torch.testing.assert_close(text_tower(model).encode(ids), model.encode_text(ids), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "overrides,reason",
    [
        (dict(pool_type="last"), "pools the last context position"),
        (dict(pool_type="first"), "never sees the caption"),
        (dict(pool_type="none"), "returns every token"),
        (dict(no_causal_mask=True, pool_type="first"), "pools the first"),
        (dict(qk_norm=True, block_type="custom"), "QK normalisation"),
    ],
    ids=["pool-last", "pool-first", "pool-none", "bidirectional-pool-first", "qk-norm"],
)
def test_refused_towers_say_why(overrides, reason):
    """Issue 3 refused bidirectional towers pooled at EOT and CoCa's class-token towers; since
    issue 8b they are explained (tests/test_text_class_token_bidirectional.py)."""
    model = tiny_text_clip(custom=True, **overrides)
    with pytest.raises(gradeclip.UnsupportedModelError, match=reason):
        text_tower(model)


def test_foreign_text_tower_is_refused():
    model = nn.Module()
    model.text = nn.Linear(4, 4)  # stands in for a Hugging Face text encoder
    with pytest.raises(gradeclip.UnsupportedModelError, match="Linear text tower"):
        text_tower(model)
    with pytest.raises(gradeclip.UnsupportedModelError, match="no text tower"):
        text_tower(nn.Linear(2, 2))


def test_eos_pool_needs_the_eos_token(tokenizer):
    tower = text_tower(tiny_text_clip(custom=True, pool_type="eos", eos_id=tokenizer.eot_token_id))
    ids = tokenizer(["a dog"])
    ids[0, 3] = 0  # drop the end-of-text token
    with pytest.raises(gradeclip.InputError, match="no end-of-text token"):
        tower.embed(ids)


@pytest.mark.parametrize(
    "ids,match",
    [(torch.zeros(2, 78, dtype=torch.long), "1 ≤ L ≤ 77"), (torch.full((1, 5), 49408), "vocabulary"), (torch.zeros(1, 5), "integer")],
    ids=["too-long", "out-of-vocab", "float"],
)
def test_bad_token_ids(ids, match):
    with pytest.raises(gradeclip.InputError, match=match):
        text_tower(tiny_text_clip()).embed(ids)
