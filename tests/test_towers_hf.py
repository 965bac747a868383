"""transformers ``CLIPModel``, ``BlipForImageTextRetrieval`` (contrastive head) and ``SiglipModel`` against the SPEC references."""

from __future__ import annotations

import gradeclip
import pytest
import torch
import torch.nn.functional as F
from reference_towers import Step, blocks_reference, pooler_reference, text_importance
from tiny_models import hf_ids, tiny_blip, tiny_hf_clip, tiny_hf_siglip

CLIP_SOT, CLIP_EOT = 998, 999
BLIP_CLS, BLIP_SEP = 101, 102
SIGLIP_EOS = 999


def assert_close_map(got, want):
    torch.testing.assert_close(got, want, atol=2e-5 * want.abs().max().clamp_min(1e-12).item(), rtol=1e-4)


def pre_norm_qkv(layer, x):
    a, h = layer.self_attn, layer.layer_norm1(x)
    if hasattr(a, "qkv"):  # BLIP
        return a.qkv(h).chunk(3, dim=-1)
    return a.q_proj(h), a.k_proj(h), a.v_proj(h)


def pre_norm_rest(layer, x, o):
    a = layer.self_attn
    y = x + (a.projection(o) if hasattr(a, "projection") else a.out_proj(o))
    return y + layer.mlp(layer.layer_norm2(y))


def steps(layers, mask=None):
    def run(layer):
        return lambda x: layer(x[None], attention_mask=mask)[0]

    return [Step(layer, layer.self_attn.num_heads, run(layer)) for layer in layers]


def clip_vision_reference(model, image, target, heads="single", n_layers=1):
    vm = model.vision_model
    x = vm.pre_layrnorm(vm.embeddings(image, interpolate_pos_encoding=True))[0]
    head = lambda z: model.visual_projection(vm.post_layernorm(z))  # noqa: E731
    keys = torch.arange(1, x.shape[0])
    return blocks_reference(x, steps(vm.encoder.layers), pre_norm_qkv, pre_norm_rest, head, 0, keys, target, heads=heads, n_layers=n_layers)


def clip_text_reference(model, ids, target, heads="single", n_layers=1):
    tm = model.text_model
    x = tm.embeddings(input_ids=ids[None])[0]
    length = ids.shape[0]
    mask = torch.full((length, length), float("-inf")).triu(1)
    eot = int((ids == CLIP_EOT).nonzero()[0, 0])
    head = lambda z: model.text_projection(tm.final_layer_norm(z))  # noqa: E731
    positions = torch.arange(length)
    total, score = blocks_reference(
        x, steps(tm.encoder.layers, mask[None, None]), pre_norm_qkv, pre_norm_rest, head, eot, positions, target,
        heads=heads, n_layers=n_layers, mask=mask, valid=positions <= eot,
    )
    return text_importance(total, (positions > 0) & (positions < eot)), score


def blip_vision_reference(model, image, target, heads="single", n_layers=1):
    vm = model.vision_model
    x = vm.embeddings(image, interpolate_pos_encoding=True)[0]
    head = lambda z: model.vision_proj(vm.post_layernorm(z))  # noqa: E731
    keys = torch.arange(1, x.shape[0])
    return blocks_reference(x, steps(vm.encoder.layers), pre_norm_qkv, pre_norm_rest, head, 0, keys, target, heads=heads, n_layers=n_layers)


def blip_text_reference(model, ids, target, heads="single", n_layers=1):
    te = model.text_encoder
    x = te.embeddings(input_ids=ids[None])[0]
    valid = ids != 0
    mask = torch.zeros(ids.shape[0]).masked_fill(~valid, float("-inf"))

    def qkv(layer, x):
        a = layer.attention.self
        return a.query(x), a.key(x), a.value(x)

    def rest(layer, x, o):
        out = layer.attention.output
        y = out.LayerNorm(out.dense(o) + x)
        return layer.output.LayerNorm(layer.output.dense(layer.intermediate(y)) + y)

    def run(layer):
        return lambda x: layer(x[None], attention_mask=mask[None, None, None])[0]

    layers = [Step(layer, layer.attention.self.num_attention_heads, run(layer)) for layer in te.encoder.layer]
    positions = torch.arange(ids.shape[0])
    total, score = blocks_reference(
        x, layers, qkv, rest, model.text_proj, 0, positions, target, heads=heads, n_layers=n_layers, mask=mask, valid=valid
    )
    sep = int(valid.sum()) - 1
    return text_importance(total, valid & (positions > 0) & (positions < sep)), score


def siglip_vision_reference(model, image, target, heads="single", spatial="loosened"):
    vm = model.vision_model
    x = vm.embeddings(image, interpolate_pos_encoding=True)
    for layer in vm.encoder.layers:
        x = layer(x, attention_mask=None)
        x = x[0] if isinstance(x, tuple) else x
    x = vm.post_layernorm(x)[0]
    pool = vm.head
    mha = pool.attention
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
    q = pool.probe[0] @ w_q.T + b_q
    k, v = x @ w_k.T + b_k, x @ w_v.T + b_v

    def readout(o):
        z = mha.out_proj(o)
        return (z + pool.mlp(pool.layernorm(z)))[0]

    n_heads = 1 if heads == "single" else mha.num_heads
    return pooler_reference(q, k, v, n_heads, readout, torch.arange(x.shape[0]), target, spatial=spatial)


def siglip_text_reference(model, ids, target, heads="single", n_layers=1):
    tm = model.text_model
    x = tm.embeddings(input_ids=ids[None])[0]
    length = ids.shape[0]
    head = lambda z: tm.head(tm.final_layer_norm(z))  # noqa: E731
    positions = torch.arange(length)
    total, score = blocks_reference(
        x, steps(tm.encoder.layers), pre_norm_qkv, pre_norm_rest, head, length - 1, positions, target, heads=heads, n_layers=n_layers
    )
    eos = int((ids == SIGLIP_EOS).nonzero()[0, 0])
    return text_importance(total, positions < eos), score


def siglip_ids(ends=(4, 8, 15), length=16):
    """SigLIP-style ids ``[len(ends), length]``: random content (no start token), ``SIGLIP_EOS`` at each end, padding after."""
    ids = torch.randint(103, 990, (len(ends), length))
    for row, end in enumerate(ends):
        ids[row, end] = SIGLIP_EOS
        ids[row, end + 1 :] = 1
    return ids


@pytest.fixture(scope="module")
def hf_clip():
    torch.manual_seed(41)
    return tiny_hf_clip()


@pytest.fixture(scope="module")
def blip():
    torch.manual_seed(42)
    return tiny_blip()


def image_parity(model, reference, images, texts, **options):
    res = gradeclip.Explainer(model).explain_image(images, texts, **options)
    for b in range(images.shape[0]):
        for t in range(texts.shape[0]):
            ref_map, ref_score = reference(model, images[b : b + 1], texts[t], **options)
            assert_close_map(res.maps[b, t].flatten(), ref_map)
            torch.testing.assert_close(res.scores[b, t], ref_score, atol=1e-5, rtol=1e-5)
    return res


def text_parity(model, reference, images, ids, image_emb, **options):
    res = gradeclip.Explainer(model).explain_text(images, ids, **options)
    for b in range(images.shape[0]):
        for t in range(ids.shape[0]):
            ref, ref_score = reference(model, ids[t], image_emb[b], **options)
            torch.testing.assert_close(res.importance[b, t], ref, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(res.scores[b, t], ref_score, atol=1e-5, rtol=1e-5)
    return res


def scores_and_text_parity(model, reference, images, ids, own, runs):
    """The scores of both explanations equal the model's own ``own`` ``[B, T]``, and the text
    explanation matches ``reference`` for each ``(heads, n_layers)`` of ``runs``; returns the last."""
    explainer = gradeclip.Explainer(model)
    visual = explainer.explain_image(images, ids, heads="model")  # token ids are encoded by the model's text tower
    torch.testing.assert_close(visual.scores, own, atol=1e-5, rtol=1e-5)
    image_emb = explainer.encode_images(images)
    for heads, n_layers in runs:
        res = text_parity(model, reference, images, ids, image_emb, heads=heads, n_layers=n_layers)
    torch.testing.assert_close(res.model_scores, own, atol=1e-5, rtol=1e-5)
    return res


@pytest.mark.parametrize("heads,n_layers", [("single", 1), ("model", 2)])
def test_hf_clip_vision(hf_clip, heads, n_layers):
    images = torch.randn(2, 3, 32, 32)
    texts = F.normalize(torch.randn(3, 32), dim=-1)
    res = image_parity(hf_clip, clip_vision_reference, images, texts, heads=heads, n_layers=n_layers)
    assert res.maps.shape == (2, 3, 4, 4) and res.maps.sum() > 0
    res = image_parity(hf_clip, clip_vision_reference, torch.randn(1, 3, 48, 24), texts, heads=heads)  # interpolated positions
    assert res.maps.shape == (1, 3, 6, 3)


def test_hf_clip_model_scores_and_text(hf_clip):
    images = torch.randn(2, 3, 32, 32)
    ids = hf_ids(CLIP_SOT, CLIP_EOT)
    with torch.no_grad():
        image_emb = F.normalize(hf_clip.get_image_features(pixel_values=images).pooler_output, dim=-1)
        own = image_emb @ F.normalize(hf_clip.get_text_features(input_ids=ids).pooler_output, dim=-1).T
    explainer = gradeclip.Explainer(hf_clip)
    visual = explainer.explain_image(images, ids, heads="model")  # token ids are encoded by the model's text tower
    torch.testing.assert_close(visual.scores, own, atol=1e-5, rtol=1e-5)
    for heads, n_layers in (("single", 3), ("model", 1)):
        res = text_parity(hf_clip, clip_text_reference, images, ids, image_emb, heads=heads, n_layers=n_layers)
    torch.testing.assert_close(res.model_scores, own, atol=1e-5, rtol=1e-5)
    sums = res.importance.sum(-1)
    assert (res.importance[:, 0, 5:] == 0).all() and ((sums - 1).abs() < 1e-5).logical_or(sums == 0).all()


@pytest.mark.parametrize("heads,n_layers", [("single", 2), ("model", 1)])
def test_blip_vision(blip, heads, n_layers):
    images = torch.randn(2, 3, 32, 32)
    texts = F.normalize(torch.randn(3, 32), dim=-1)
    res = image_parity(blip, blip_vision_reference, images, texts, heads=heads, n_layers=n_layers)
    assert res.maps.shape == (2, 3, 4, 4) and res.maps.sum() > 0


def test_blip_itc_scores_and_text(blip):
    images = torch.randn(2, 3, 32, 32)
    ids = hf_ids(BLIP_CLS, BLIP_SEP)
    with torch.no_grad():
        own = blip(input_ids=ids, pixel_values=images, use_itm_head=False, attention_mask=(ids != 0).long()).itm_score
    res = scores_and_text_parity(blip, blip_text_reference, images, ids, own, (("single", 3), ("model", 2)))
    assert (res.importance[:, :, 0] == 0).all() and (res.importance[:, 0, 5:] == 0).all()


@pytest.fixture(scope="module")
def siglip():
    torch.manual_seed(43)
    return tiny_hf_siglip()


@pytest.mark.parametrize("heads,spatial", [("single", "loosened"), ("model", "softmax")])
def test_siglip_vision(siglip, heads, spatial):
    images = torch.randn(2, 3, 32, 32)
    texts = F.normalize(torch.randn(3, 64), dim=-1)
    res = image_parity(siglip, siglip_vision_reference, images, texts, heads=heads, spatial=spatial)
    assert res.maps.shape == (2, 3, 4, 4) and res.maps.sum() > 0
    res = image_parity(siglip, siglip_vision_reference, torch.randn(1, 3, 48, 24), texts, heads=heads, spatial=spatial)  # interpolated positions
    assert res.maps.shape == (1, 3, 6, 3)


def test_siglip_scores_and_text(siglip):
    images = torch.randn(2, 3, 32, 32)
    ids = siglip_ids()
    with torch.no_grad():
        out = siglip(input_ids=ids, pixel_values=images)
        own = out.image_embeds @ out.text_embeds.T  # the sigmoid model's cosine, before logit_scale / logit_bias
    res = scores_and_text_parity(siglip, siglip_text_reference, images, ids, own, (("single", 3), ("model", 1)))
    assert (res.importance[:, 0, 4:] == 0).all() and (res.importance[:, 2, :15] != 0).any()


def test_other_transformers_models_are_refused():
    from transformers import BertConfig, BertModel

    model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=100))
    with pytest.raises(gradeclip.UnsupportedModelError, match="BertModel: no gradeclip adapter"):
        _ = gradeclip.Explainer(model).image_tower
