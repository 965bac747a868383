"""Grad-ECLIP visual maps equal the SPEC §2 reference (one pair at a time, full autograd)."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_clip
from reference import reference_visual_map

import gradeclip

COMBOS = list(itertools.product(["single", "model"], ["loosened", "softmax", "none"], ["attention", "out_proj"], [1, 2]))


def unit(t: torch.Tensor) -> torch.Tensor:
    return F.normalize(t, dim=-1)


def assert_matches_reference(model, images, text_emb, **options):
    res = gradeclip.Explainer(model).explain_image(images, text_emb, **options)
    assert res.maps.dtype == torch.float32
    assert res.maps.shape[:2] == (images.shape[0], text_emb.shape[0])
    for b in range(images.shape[0]):
        for t in range(text_emb.shape[0]):
            ref_map, ref_score, ref_model_score = reference_visual_map(model, images[b : b + 1], text_emb[t], **options)
            scale = ref_map.abs().max().clamp_min(1e-12)
            torch.testing.assert_close(res.maps[b, t], ref_map, atol=2e-5 * scale.item(), rtol=1e-4)
            torch.testing.assert_close(res.scores[b, t], ref_score, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(res.model_scores[b, t], ref_model_score, atol=1e-5, rtol=1e-5)
    return res


@pytest.mark.parametrize("heads,spatial,qk_space,n_layers", COMBOS, ids=["-".join(map(str, c)) for c in COMBOS])
def test_tiny_every_option(tiny_model, heads, spatial, qk_space, n_layers):
    images = torch.randn(3, 3, 32, 32)
    texts = unit(torch.randn(4, 32))
    res = assert_matches_reference(tiny_model, images, texts, heads=heads, spatial=spatial, qk_space=qk_space, n_layers=n_layers)
    assert res.maps.shape == (3, 4, 4, 4)
    assert (res.maps >= 0).all() and res.maps.abs().sum() > 0


def test_tiny_all_layers_with_layer_scale():
    torch.manual_seed(3)
    model = tiny_clip(ls_init_value=0.5)
    images = torch.randn(2, 3, 32, 32)
    assert_matches_reference(model, images, unit(torch.randn(2, 32)), heads="single", n_layers=3)


def test_custom_block_type():
    torch.manual_seed(4)
    model = tiny_clip(block_type="custom")
    assert type(model.visual.transformer.resblocks[0]).__name__ == "CustomResidualAttentionBlock"
    assert_matches_reference(model, torch.randn(2, 3, 32, 32), unit(torch.randn(3, 32)), heads="model", n_layers=2)


def test_non_square_native_grid(tiny_model):
    images = torch.randn(2, 3, 24, 48)  # grid 3×6, model grid 4×4: positional embedding interpolated
    res = assert_matches_reference(tiny_model, images, unit(torch.randn(2, 32)), heads="single", n_layers=2)
    assert res.maps.shape == (2, 2, 3, 6)
    assert res.grid == (3, 6)


def test_many_texts_use_the_jacobian_path(tiny_model):
    """T = 40 > E = 32 switches to the per-image Jacobian; it must give the same numbers."""
    images = torch.randn(2, 3, 32, 32)
    texts = unit(torch.randn(40, 32))
    ex = gradeclip.Explainer(tiny_model)
    many = ex.explain_image(images, texts, heads="model", n_layers=2)
    for t in (0, 17, 39):
        ref_map, ref_score, _ = reference_visual_map(tiny_model, images[1:2], texts[t], heads="model", n_layers=2)
        torch.testing.assert_close(many.maps[1, t], ref_map, atol=2e-5 * ref_map.abs().max().item(), rtol=1e-4)
        torch.testing.assert_close(many.scores[1, t], ref_score, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["vit_b32", "vit_b16"])
@pytest.mark.parametrize("heads,spatial,qk_space,n_layers", [("single", "loosened", "attention", 1), ("model", "softmax", "out_proj", 2)])
def test_real_architectures(request, fixture, heads, spatial, qk_space, n_layers):
    model = request.getfixturevalue(fixture)
    images = torch.randn(2, 3, 224, 224)
    texts = unit(torch.randn(2, 512))
    res = assert_matches_reference(model, images, texts, heads=heads, spatial=spatial, qk_space=qk_space, n_layers=n_layers)
    grid = 7 if fixture == "vit_b32" else 14
    assert res.maps.shape == (2, 2, grid, grid)


def test_model_heads_score_is_the_model_score(vit_b32, tokenizer):
    images = torch.randn(3, 3, 224, 224)
    texts = ["a photo of a dog", "a red car", "two cats on a sofa"]
    res = gradeclip.Explainer(vit_b32, tokenizer).explain_image(images, texts, heads="model")
    with torch.no_grad():
        expected = vit_b32.encode_image(images, normalize=True) @ vit_b32.encode_text(tokenizer(texts), normalize=True).T
    torch.testing.assert_close(res.model_scores, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(res.scores, expected, atol=1e-5, rtol=1e-5)  # not res.model_scores: the same tensor here
    assert res.texts == texts


def test_per_head_maps_sum_to_the_map(tiny_model):
    res = gradeclip.Explainer(tiny_model).explain_image(torch.randn(2, 3, 32, 32), unit(torch.randn(3, 32)), heads="model", per_head=True)
    head_maps = res.extras["head_maps"]
    assert head_maps.shape == (2, 3, 4, 4, 4)
    torch.testing.assert_close(torch.relu(head_maps.sum(2)), res.maps)
