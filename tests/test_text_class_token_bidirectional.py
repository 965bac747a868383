"""Textual Grad-ECLIP for CoCa's class-token text tower and for bidirectional towers pooled at EOT
(MobileCLIP-S*, MobileCLIP2-S*), against the straightforward reference of ``reference_text``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_text_clip
from reference_text import reference_pooled_text_importance
from tiny_models import tiny_coca

import gradeclip
from gradeclip.towers.openclip_text import OpenClipText
from gradeclip.towers.registry import text_tower

CAPTIONS = ["a dog", "two cats on a red sofa next to the window", "a photo of " + "one " * 80]  # the last fills the context


def caption_ids(tokenizer, length: int) -> torch.Tensor:
    """Three captions of different lengths (the last fills the context), one with a pad id (0) inside
    the caption: where the model has a padding mask it hides that token, and so must gradeclip."""
    ids = tokenizer(CAPTIONS, context_length=length)
    ids[1, 4] = 0
    return ids


def check_against_reference(model, ids, heads, n_layers):
    """Every (image, text) pair against the reference; the scores against the model's own cosine."""
    images = torch.randn(2, 3, 32, 32)
    res = gradeclip.Explainer(model).explain_text(images, ids, heads=heads, n_layers=n_layers)
    with torch.no_grad():
        image_emb = F.normalize(model.encode_image(images), dim=-1)
        own = image_emb @ F.normalize(model.encode_text(ids), dim=-1).T
    torch.testing.assert_close(res.model_scores, own, atol=1e-5, rtol=1e-5)
    if heads == "model":
        torch.testing.assert_close(res.scores, own, atol=1e-5, rtol=1e-5)
    for b in range(images.shape[0]):
        for t in range(ids.shape[0]):
            importance, score, model_score = reference_pooled_text_importance(model, ids[t], image_emb[b], heads=heads, n_layers=n_layers)
            torch.testing.assert_close(res.importance[b, t], importance, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(res.scores[b, t], score, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(res.model_scores[b, t], model_score, atol=1e-5, rtol=1e-5)
    assert (res.importance.sum(-1) > 0.999).all()  # every row has some positive importance: the test can fail
    return res


@pytest.fixture(scope="module")
def coca():
    torch.manual_seed(5)
    return tiny_coca()


@pytest.fixture(scope="module")
def mobileclip_text():
    """A CustomTextCLIP with MobileCLIP-S*'s text tower shape: bidirectional, argmax (EOT) pooling, no pad mask."""
    torch.manual_seed(6)
    return tiny_text_clip(custom=True, no_causal_mask=True)


@pytest.mark.parametrize("heads,n_layers", [("single", 1), ("model", 3), ("single", 8)])
def test_coca_text_matches_reference(coca, tokenizer, heads, n_layers):
    assert isinstance(text_tower(coca), OpenClipText)
    res = check_against_reference(coca, caption_ids(tokenizer, 76), heads, n_layers)
    assert res.importance.shape == (2, 3, 76)


@pytest.mark.parametrize("heads,n_layers", [("single", 1), ("model", 2), ("single", 8)])
def test_bidirectional_eot_text_matches_reference(mobileclip_text, tokenizer, heads, n_layers):
    check_against_reference(mobileclip_text, caption_ids(tokenizer, 77), heads, n_layers)


@pytest.mark.parametrize(
    "build,heads,n_layers",
    [
        (lambda: tiny_coca(), "model", 8),  # the reference's per-head masks, all 8 blocks explained
        (lambda: _with(tiny_text_clip(custom=True, embed_cls=True), correct_cls_mask=True), "model", 2),
        (lambda: tiny_text_clip(custom=True, embed_cls=True, no_causal_mask=True), "single", 3),
        (lambda: _with(tiny_text_clip(custom=True, no_causal_mask=True), use_pad_mask=True), "model", 2),
        (lambda: tiny_text_clip(no_causal_mask=True), "single", 2),  # open_clip CLIP: text modules on the model
    ],
    ids=["coca-all-blocks", "cls-correct-mask", "cls-bidirectional", "bidirectional-pad-mask", "clip-bidirectional"],
)
def test_variants_match_reference(tokenizer, build, heads, n_layers):
    torch.manual_seed(7)
    model = build()
    length = text_tower(model).context_length
    check_against_reference(model, caption_ids(tokenizer, length), heads, n_layers)


def _with(model, **attributes):
    """Set ``TextTransformer`` switches that open_clip's configs do not expose (read at each forward)."""
    for name, value in attributes.items():
        setattr(model.text, name, value)
    return model


def test_keys_are_the_positions_the_query_attends_to(coca, mobileclip_text, tokenizer):
    """λ's min-max runs over the query's visible keys: open_clip's legacy CoCa mask shows the class
    token tokens 0..EOT+1 and not itself (unless the ids fill the context); the corrected mask shows
    0..EOT and itself; a bidirectional tower without a padding mask shows everything."""
    ids = caption_ids(tokenizer, 76)
    eot = ids.argmax(-1)
    positions = torch.arange(77)
    batch = text_tower(coca).embed(ids)
    assert batch.x.shape[1] == 77 and batch.attn_mask.shape == (3, 77, 77) and (batch.query == 76).all()
    legacy = (positions <= eot[:, None] + 1) & ((positions < 76) | (eot[:, None] == 75))
    legacy[1, 5] = False  # the pad id at position 4 hides position 5 (the legacy mask is shifted by one)
    assert torch.equal(batch.key_mask, legacy)
    coca.text.correct_cls_mask = True
    try:
        batch = text_tower(coca).embed(ids)
    finally:
        coca.text.correct_cls_mask = False
    correct = (positions <= eot[:, None]) | (positions == 76)
    correct[1, 4] = False
    assert torch.equal(batch.key_mask, correct)
    batch = text_tower(mobileclip_text).embed(caption_ids(tokenizer, 77))
    assert batch.attn_mask is None and batch.key_mask is None and batch.keys.tolist() == list(range(77))


def test_coca_words_from_strings(coca):
    """CoCa's tokenizer is CLIP's (context 76): strings give words, and the class token is never one."""
    import open_clip

    explainer = gradeclip.Explainer(coca, open_clip.get_tokenizer("coca_ViT-B-32"))
    res = explainer.explain_text(torch.randn(1, 3, 32, 32), ["A tabby cat, looking at the camera."], n_layers=4)
    assert res.importance.shape == (1, 1, 76)
    words = res.words(0, 0)
    assert [w for w, _ in words][:3] == ["A", "tabby", "cat"]
    assert abs(sum(v for _, v in words) - 1) < 1e-5
