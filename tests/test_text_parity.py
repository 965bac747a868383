"""Grad-ECLIP token importance equals the SPEC §3 reference (one pair at a time, full autograd)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_text_clip
from reference import vit_tokens
from reference_text import reference_text_importance

import gradeclip

CAPTIONS = [
    "a dog",
    "Two tabby cats asleep on a red sofa, next to a window.",
    "photorealistic hippopotamus!",
]


@pytest.fixture(scope="module")
def text_model():
    torch.manual_seed(11)
    return tiny_text_clip()


def image_embeddings(model, images):
    with torch.no_grad():
        return F.normalize(model.encode_image(images), dim=-1)


def assert_matches_reference(model, tokenizer, images, captions, **options):
    res = gradeclip.Explainer(model, tokenizer).explain_text(images, captions, **options)
    count = len(captions)
    assert res.importance.dtype == torch.float32 and res.importance.shape == (images.shape[0], count, 77)
    assert res.scores.shape == res.model_scores.shape == (images.shape[0], count)
    ids = tokenizer(captions)
    targets = image_embeddings(model, images)
    for b in range(images.shape[0]):
        for t in range(count):
            ref, ref_score, ref_model_score = reference_text_importance(model, ids[t], targets[b], **options)
            torch.testing.assert_close(res.importance[b, t], ref, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(res.scores[b, t], ref_score, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(res.model_scores[b, t], ref_model_score, atol=1e-5, rtol=1e-5)
    return res


@pytest.mark.parametrize("heads", ["single", "model"])
@pytest.mark.parametrize("n_layers", [1, 4, 8])
def test_tiny_clip(text_model, tokenizer, n_layers, heads):
    images = torch.randn(2, 3, 32, 32)
    res = assert_matches_reference(text_model, tokenizer, images, CAPTIONS, n_layers=n_layers, heads=heads)
    eot = [int(row.argmax()) for row in tokenizer(CAPTIONS)]
    for t, end in enumerate(eot):
        row = res.importance[:, t]
        assert (row[:, 0] == 0).all() and (row[:, end:] == 0).all()
        sums = row.sum(-1)
        assert all(abs(s - 1) < 1e-5 or s == 0 for s in sums.tolist())  # sums to 1, or all zero
        assert len(res.tokens(t)) == end + 1
    assert (res.importance.sum(-1) > 0).any()


@pytest.mark.parametrize("heads", ["single", "model"])
def test_custom_text_tower_linear_projection_eos_pool(tokenizer, heads):
    """CustomTextCLIP: TextTransformer at .text, nn.Linear projection with bias, layer scale,
    custom blocks, and 'eos' pooling."""
    torch.manual_seed(12)
    model = tiny_text_clip(
        custom=True, proj_bias=True, ls_init_value=0.5, block_type="custom", pool_type="eos", eos_id=tokenizer.eot_token_id
    )
    assert isinstance(model.text.text_projection, torch.nn.Linear)
    assert_matches_reference(model, tokenizer, torch.randn(3, 3, 32, 32), CAPTIONS[:2], n_layers=4, heads=heads)


def test_more_images_than_embedding_width_uses_the_jacobian_path(text_model, tokenizer):
    """B = 34 images > E = 32 switches channel weights to the embedding's Jacobian."""
    images = torch.randn(34, 3, 32, 32)
    res = gradeclip.Explainer(text_model, tokenizer).explain_text(images, CAPTIONS, n_layers=4)
    targets = image_embeddings(text_model, images)
    ids = tokenizer(CAPTIONS)
    for b, t in [(0, 0), (17, 1), (33, 2)]:
        ref, ref_score, _ = reference_text_importance(text_model, ids[t], targets[b], n_layers=4)
        torch.testing.assert_close(res.importance[b, t], ref, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(res.scores[b, t], ref_score, atol=1e-5, rtol=1e-5)


def test_truncated_caption(text_model, tokenizer):
    long = " ".join(f"word{i}" for i in range(60))  # ~120 tokens
    with pytest.warns(UserWarning, match=r"texts\[1\] is longer than the context length"):
        res = assert_matches_reference(text_model, tokenizer, torch.randn(2, 3, 32, 32), ["a cat", long], n_layers=2)
    assert res.alignments[1].truncated and res.alignments[1].eot == 76
    torch.testing.assert_close(res.importance[:, 1].sum(-1), torch.ones(2))


@pytest.mark.slow
@pytest.mark.parametrize("heads", ["single", "model"])
def test_vit_b32_all_twelve_text_layers(vit_b32, tokenizer, heads):
    images = torch.randn(2, 3, 224, 224)
    assert_matches_reference(vit_b32, tokenizer, images, ["a photo of a dog", "a red car parked by the sea"], n_layers=12, heads=heads)


def test_model_heads_score_is_the_model_score(vit_b32, tokenizer):
    images = torch.randn(2, 3, 224, 224)
    texts = ["a photo of a dog", "a red car", "two cats on a sofa"]
    res = gradeclip.Explainer(vit_b32, tokenizer).explain_text(images, texts, heads="model")
    with torch.no_grad():
        expected = vit_b32.encode_image(images, normalize=True) @ vit_b32.encode_text(tokenizer(texts), normalize=True).T
    torch.testing.assert_close(res.model_scores, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(res.scores, expected, atol=1e-5, rtol=1e-5)  # not res.model_scores: the same tensor here


def test_single_head_score_differs_from_the_model_score(text_model, tokenizer):
    res = gradeclip.Explainer(text_model, tokenizer).explain_text(torch.randn(2, 3, 32, 32), CAPTIONS, n_layers=8)
    assert not torch.allclose(res.scores, res.model_scores, atol=1e-4)


def test_native_size_images(text_model, tokenizer):
    """The image side is the unmodified tower at any size it accepts (positional embedding interpolated)."""
    images = torch.randn(2, 3, 24, 48)
    res = gradeclip.Explainer(text_model, tokenizer).explain_text(images, CAPTIONS[:2], n_layers=2)
    visual = text_model.visual
    with torch.no_grad():
        x, _ = vit_tokens(visual, images[1:2])
        for blk in visual.transformer.resblocks:
            x = blk(x)
        target = F.normalize(visual.ln_post(x[0, 0]) @ visual.proj, dim=0)
    ref, _, _ = reference_text_importance(text_model, tokenizer(CAPTIONS[:2])[1], target, n_layers=2)
    torch.testing.assert_close(res.importance[1, 1], ref, atol=1e-5, rtol=1e-4)


def test_pair(text_model, tokenizer):
    ex = gradeclip.Explainer(text_model, tokenizer)
    image = torch.randn(3, 32, 32)
    pair = ex.explain_pair(image, "a dog, running!", n_text_layers=4, n_layers=2)
    visual = ex.explain_image(image[None], ["a dog, running!"], n_layers=2)
    textual = ex.explain_text(image[None], ["a dog, running!"], n_layers=4)
    torch.testing.assert_close(pair.map, visual.maps[0, 0])
    assert pair.map.shape == (4, 4)
    assert [w for w, _ in pair.words] == ["a", "dog", ",", "running", "!"]
    assert pair.words == textual.words(0, 0)
    assert pair.text == "a dog, running!"
    torch.testing.assert_close(pair.textual.model_scores, pair.visual.model_scores)


def test_texts_in_chunks(text_model, tokenizer, monkeypatch):
    """Texts beyond TEXT_BATCH go in further forwards; the result is the same as in one."""
    images = torch.randn(2, 3, 32, 32)
    ex = gradeclip.Explainer(text_model, tokenizer)
    whole = ex.explain_text(images, CAPTIONS, n_layers=4)
    monkeypatch.setattr(gradeclip.explainer, "TEXT_BATCH", 2)
    chunked = ex.explain_text(images, CAPTIONS, n_layers=4)
    torch.testing.assert_close(chunked.importance, whole.importance, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(chunked.scores, whole.scores)
    torch.testing.assert_close(chunked.model_scores, whole.model_scores)
