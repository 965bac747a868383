"""open_clip ModifiedResNet and CoCa attentional-pooler towers against the SPEC references."""

from __future__ import annotations

import gradeclip
import pytest
import torch
import torch.nn.functional as F
from gradeclip.towers.openclip_coca import OpenClipCoCaViT
from gradeclip.towers.openclip_resnet import OpenClipResNet
from gradeclip.towers.registry import image_tower
from reference_towers import pooler_reference
from tiny_models import tiny_coca_vit, tiny_resnet_clip


def assert_close_map(got, want):
    torch.testing.assert_close(got, want, atol=2e-5 * want.abs().max().clamp_min(1e-12).item(), rtol=1e-4)


def resnet_reference(model, image, target, heads="single", spatial="loosened"):
    v = model.visual
    x = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(image)))))
    tokens = x.flatten(2)[0].T  # [N, C]
    pool = v.attnpool
    pos = pool.positional_embedding
    if pos.shape[0] != tokens.shape[0] + 1:  # another input size: resize the spatial part (SPEC §4)
        side = round((pos.shape[0] - 1) ** 0.5)
        grid = F.interpolate(pos[1:].T.reshape(1, -1, side, side), size=x.shape[-2:], mode="bicubic", align_corners=False)
        pos = torch.cat([pos[:1], grid.reshape(pos.shape[1], -1).T])
    seq = torch.cat([tokens.mean(0, keepdim=True), tokens]) + pos
    q = seq[:1] @ pool.q_proj.weight.T + pool.q_proj.bias
    k = seq @ pool.k_proj.weight.T + pool.k_proj.bias
    val = seq @ pool.v_proj.weight.T + pool.v_proj.bias
    n_heads = 1 if heads == "single" else pool.num_heads
    keys = torch.arange(1, seq.shape[0])
    return pooler_reference(q, k, val, n_heads, lambda o: pool.c_proj(o[0]), keys, target, spatial=spatial)


def coca_reference(model, image, target, heads="single", spatial="loosened"):
    v = model.visual
    x = v.conv1(image).flatten(2).transpose(1, 2)
    x = torch.cat([v.class_embedding.expand(1, 1, -1), x], dim=1) + v.positional_embedding
    x = v.transformer(v.ln_pre(x))[0]
    pool = v.attn_pool
    a = pool.attn
    b_q, b_k, b_v = a.in_proj_bias.chunk(3)
    explained = slice(0, 1) if v.pool_type == "tok" else slice(1, pool.query.shape[0])
    q = pool.ln_q(pool.query[explained]) @ a.q_proj_weight.T + b_q
    h = pool.ln_k(x)
    k, val = h @ a.k_proj_weight.T + b_k, h @ a.v_proj_weight.T + b_v
    n_heads = 1 if heads == "single" else a.num_heads

    def readout(o):
        return v.ln_post(a.out_proj(o)).mean(0) @ v.proj

    return pooler_reference(q, k, val, n_heads, readout, torch.arange(1, x.shape[0]), target, spatial=spatial)


def check_against(reference, model, images, texts, **options):
    res = gradeclip.Explainer(model).explain_image(images, texts, **options)
    for b in range(images.shape[0]):
        for t in range(texts.shape[0]):
            ref_map, ref_score = reference(model, images[b : b + 1], texts[t], **options)
            assert_close_map(res.maps[b, t].flatten(), ref_map)
            torch.testing.assert_close(res.scores[b, t], ref_score, atol=1e-5, rtol=1e-5)
    return res


def check_model_score(model, images, texts):
    """``heads="model"`` explains the model's own score: the adapter's embedding is the model's."""
    with torch.no_grad():
        own = F.normalize(model.encode_image(images), dim=-1) @ texts.T
    res = gradeclip.Explainer(model).explain_image(images, texts, heads="model")
    torch.testing.assert_close(res.scores, own, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(res.model_scores, own, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(21)
    return tiny_resnet_clip()


@pytest.mark.parametrize("heads,spatial", [("single", "loosened"), ("model", "loosened"), ("model", "softmax")])
def test_resnet_matches_reference(resnet, heads, spatial):
    assert isinstance(image_tower(resnet), OpenClipResNet)
    images, texts = torch.randn(2, 3, 96, 96), F.normalize(torch.randn(3, 32), dim=-1)
    res = check_against(resnet_reference, resnet, images, texts, heads=heads, spatial=spatial)
    assert res.maps.shape == (2, 3, 3, 3) and res.maps.sum() > 0


def test_resnet_model_score_and_native_size(resnet):
    texts = F.normalize(torch.randn(2, 32), dim=-1)
    check_model_score(resnet, torch.randn(2, 3, 96, 96), texts)
    res = check_against(resnet_reference, resnet, torch.randn(1, 3, 64, 128), texts)  # grid 2×4, model grid 3×3
    assert res.maps.shape == (1, 2, 2, 4)
    with pytest.raises(gradeclip.InputError, match="multiple of the patch size 32"):
        gradeclip.Explainer(resnet).explain_image(torch.randn(1, 3, 90, 96), texts)
    with pytest.raises(gradeclip.InputError, match="1..1"):
        gradeclip.Explainer(resnet).explain_image(torch.randn(1, 3, 96, 96), texts, n_layers=2)


@pytest.mark.parametrize("pool_type", ["tok", "avg"])
def test_coca_pooler_matches_reference(pool_type):
    torch.manual_seed(22)
    model = tiny_coca_vit(pool_type=pool_type)
    assert isinstance(image_tower(model), OpenClipCoCaViT)
    images, texts = torch.randn(2, 3, 32, 32), F.normalize(torch.randn(3, 32), dim=-1)
    for heads in ("single", "model"):
        res = check_against(coca_reference, model, images, texts, heads=heads)
        assert res.maps.shape == (2, 3, 4, 4) and res.maps.sum() > 0
    check_model_score(model, images, texts)


def test_coca_cascade_pooling_is_refused():
    from conftest import tiny_clip

    model = tiny_clip(attentional_pool="cascade", attn_pooler_queries=4, attn_pooler_heads=4)
    with pytest.raises(gradeclip.UnsupportedModelError, match="cascade"):
        image_tower(model)


@pytest.mark.parametrize("method", ["rollout", "maskclip"])
def test_block_methods_refuse_an_attention_pooler(resnet, method):
    """Baselines that re-run self-attention blocks say plainly that a pooler tower has none."""
    with pytest.raises(gradeclip.UnsupportedModelError, match="attention pooler"):
        gradeclip.Explainer(resnet).explain_image(torch.randn(1, 3, 96, 96), F.normalize(torch.randn(1, 32), dim=-1), method=method)
