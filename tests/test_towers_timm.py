"""timm-hosted towers (SigLIP's map head and text tower, EVA02 with rotary embedding) and timm
image classifiers against the SPEC references."""

from __future__ import annotations

import gradeclip
import pytest
import torch
import torch.nn.functional as F
from gradeclip.towers.registry import image_tower, text_tower
from gradeclip.towers.timm_vit import TimmViT
from reference_towers import Step, blocks_reference, pooler_reference, text_importance
from tiny_models import tiny_eva02, tiny_siglip, tiny_timm_classifier


def assert_close_map(got, want):
    torch.testing.assert_close(got, want, atol=2e-5 * want.abs().max().clamp_min(1e-12).item(), rtol=1e-4)


def siglip_reference(model, image, target, heads="single", spatial="loosened"):
    trunk = model.visual.trunk
    x = trunk.forward_features(image)[0]  # [N, D], after the trunk's norm
    pool = trunk.attn_pool
    q = pool.q(pool.latent[0])
    k, v = pool.kv(x).chunk(2, dim=-1)
    n_heads = 1 if heads == "single" else pool.num_heads

    def readout(o):
        z = pool.proj(o)
        z = z + pool.mlp(pool.norm(z))
        z = z[0] if pool.pool == "token" else z.mean(0)
        return model.visual.head(trunk.head(trunk.fc_norm(z)))

    if pool.pool == "token":
        q = q[:1]
    return pooler_reference(q, k, v, n_heads, readout, torch.arange(x.shape[0]), target, spatial=spatial)


def _rotate(t, rope, heads):
    from timm.layers.pos_embed_sincos import apply_rot_embed_cat

    length, width = t.shape
    th = t.reshape(length, heads, width // heads).transpose(0, 1)
    th = torch.cat([th[:, :1], apply_rot_embed_cat(th[:, 1:], rope)], dim=1)
    return th.transpose(0, 1).reshape(length, width)


def vit_reference(model, image, target, *, trunk, outer, score="cosine", heads="single", n_layers=1, spatial="loosened"):
    """timm ViT / EVA: the last ``n_layers`` blocks explained at the class token."""
    x = trunk.patch_embed(image)
    x = trunk._pos_embed(x)
    rope = None
    if isinstance(x, tuple):
        x, rope = x
    x = trunk.norm_pre(x)[0]
    eva = rope is not None

    def qkv(blk, x):
        a, h = blk.attn, blk.norm1(x)
        if eva:
            q, k, v = a.q_proj(h), a.k_proj(h), a.v_proj(h)
            return _rotate(q, rope, a.num_heads), _rotate(k, rope, a.num_heads), v
        return F.linear(h, a.qkv.weight, a.qkv.bias).chunk(3, dim=-1)

    def rest(blk, x, o):
        a = blk.attn
        out = a.proj(a.norm(o))
        if eva:
            y = x + (out if blk.gamma_1 is None else blk.gamma_1 * out)
            m = blk.mlp(blk.norm2(y))
            return y + (m if blk.gamma_2 is None else blk.gamma_2 * m)
        y = x + blk.ls1(out)
        return y + blk.ls2(blk.mlp(blk.norm2(y)))

    def head(z):
        e = trunk.head(trunk.fc_norm(trunk.norm(z)))
        return e if outer is None else outer(e)

    def run(blk):
        return (lambda x: blk(x[None], rope=rope)[0]) if eva else (lambda x: blk(x[None])[0])

    steps = [Step(b, b.attn.num_heads, run(b)) for b in trunk.blocks]
    keys = torch.arange(trunk.num_prefix_tokens, x.shape[0])
    return blocks_reference(x, steps, qkv, rest, head, 0, keys, target, heads=heads, n_layers=n_layers, score=score, spatial=spatial)


def check_against(reference, model, images, texts, explain=None, **options):
    explainer = gradeclip.Explainer(model)
    res = explain(explainer, images, **options) if explain else explainer.explain_image(images, texts, **options)
    for b in range(images.shape[0]):
        for t in range(texts.shape[0]):
            ref_map, ref_score = reference(model, images[b : b + 1], texts[t], **options)
            assert_close_map(res.maps[b, t].flatten(), ref_map)
            torch.testing.assert_close(res.scores[b, t], ref_score, atol=1e-5, rtol=1e-5)
    return res


@pytest.fixture(scope="module")
def siglip():
    torch.manual_seed(31)
    return tiny_siglip()


@pytest.mark.parametrize("heads,spatial", [("single", "loosened"), ("model", "softmax")])
def test_siglip_map_head_matches_reference(siglip, heads, spatial):
    assert isinstance(image_tower(siglip), TimmViT)
    images, texts = torch.randn(2, 3, 32, 32), F.normalize(torch.randn(3, 64), dim=-1)
    res = check_against(siglip_reference, siglip, images, texts, heads=heads, spatial=spatial)
    assert res.maps.shape == (2, 3, 4, 4) and res.maps.sum() > 0
    with torch.no_grad():
        own = F.normalize(siglip.encode_image(images), dim=-1) @ texts.T
    torch.testing.assert_close(res.model_scores, own, atol=1e-5, rtol=1e-5)


def test_siglip_several_latents_average_their_maps():
    torch.manual_seed(32)
    model = tiny_siglip(latents=3, pool="avg")
    images, texts = torch.randn(2, 3, 32, 32), F.normalize(torch.randn(2, 64), dim=-1)
    res = check_against(siglip_reference, model, images, texts, heads="model")
    with torch.no_grad():
        own = F.normalize(model.encode_image(images), dim=-1) @ texts.T
    torch.testing.assert_close(res.scores, own, atol=1e-5, rtol=1e-5)
    with pytest.raises(gradeclip.InputError, match="per_head=True needs one query"):
        gradeclip.Explainer(model).explain_image(images, texts, heads="model", per_head=True)


def test_siglip_text_from_token_ids(siglip):
    """SigLIP's tokenizer needs a hub download: its texts are explained from token ids."""
    ids = torch.randint(2, 1000, (2, 16))
    ids[0, 6:] = 1  # padding (pad id 1)
    images = torch.randn(2, 3, 32, 32)
    explainer = gradeclip.Explainer(siglip)
    with pytest.raises(gradeclip.InputError, match="token ids"):
        explainer.explain_text(images, ["a dog"])
    res = explainer.explain_text(images, ids, n_layers=2, heads="model")
    with torch.no_grad():
        image_emb = F.normalize(siglip.encode_image(images), dim=-1)
        own = image_emb @ F.normalize(siglip.encode_text(ids), dim=-1).T
    torch.testing.assert_close(res.scores, own, atol=1e-5, rtol=1e-5)
    text = siglip.text
    for heads in ("single", "model"):
        res = explainer.explain_text(images, ids, n_layers=2, heads=heads)
        for b in range(2):
            for t in range(2):
                total, score = text_reference(text, ids[t], image_emb[b], heads=heads, n_layers=2)
                torch.testing.assert_close(res.importance[b, t], text_importance(total, ids[t] != 1), atol=1e-5, rtol=1e-4)
                torch.testing.assert_close(res.scores[b, t], score, atol=1e-5, rtol=1e-5)
    assert (res.importance[:, 0, 6:] == 0).all()
    with pytest.raises(gradeclip.InputError, match="words"):
        res.words(0, 0)
    assert isinstance(text_tower(siglip).blocks[0].module, torch.nn.Module)


def text_reference(text, ids, target, heads, n_layers):
    """open_clip's bidirectional TextTransformer pooled at its last position."""
    x = text.token_embedding(ids) + text.positional_embedding

    def qkv(blk, x):
        return F.linear(blk.ln_1(x), blk.attn.in_proj_weight, blk.attn.in_proj_bias).chunk(3, dim=-1)

    def rest(blk, x, o):
        y = x + blk.ls_1(blk.attn.out_proj(o))
        return y + blk.ls_2(blk.mlp(blk.ln_2(y)))

    steps = [Step(b, b.attn.num_heads, lambda x, b=b: b(x[None])[0]) for b in text.transformer.resblocks]
    last = ids.shape[0] - 1
    keys = torch.arange(ids.shape[0])
    def head(z):
        return text.text_projection(text.ln_final(z))

    return blocks_reference(x, steps, qkv, rest, head, last, keys, target, heads=heads, n_layers=n_layers)


@pytest.mark.parametrize("heads,n_layers", [("single", 1), ("model", 2), ("single", 3)])
def test_eva02_rotary_matches_reference(heads, n_layers):
    torch.manual_seed(33)
    model = tiny_eva02()
    tower = image_tower(model)
    assert isinstance(tower, TimmViT) and tower.blocks[-1].rope is not None
    images, texts = torch.randn(2, 3, 32, 32), F.normalize(torch.randn(3, 48), dim=-1)
    trunk, outer = model.visual.trunk, model.visual.head
    res = check_against(
        lambda m, i, t, **o: vit_reference(m, i, t, trunk=trunk, outer=outer, **o), model, images, texts, heads=heads, n_layers=n_layers
    )
    assert res.maps.shape == (2, 3, 4, 4) and res.maps.sum() > 0
    with torch.no_grad():
        own = F.normalize(model.encode_image(images), dim=-1) @ texts.T
    torch.testing.assert_close(res.model_scores, own, atol=1e-5, rtol=1e-5)
    with pytest.raises(gradeclip.InputError, match="own input size 32×32"):
        gradeclip.Explainer(model).explain_image(torch.randn(1, 3, 48, 32), texts)


@pytest.mark.parametrize("heads,n_layers", [("single", 1), ("model", 2)])
def test_timm_classifier_explains_class_logits(heads, n_layers):
    torch.manual_seed(34)
    model = tiny_timm_classifier(init_values=0.5)
    images = torch.randn(2, 3, 32, 32)
    classes = [3, 0, 7]
    onehot = F.one_hot(torch.tensor(classes), 10).float()
    res = check_against(
        lambda m, i, t, **o: vit_reference(m, i, t, trunk=m, outer=None, score="logit", **o),
        model,
        images,
        onehot,
        explain=lambda ex, i, **o: ex.explain_classes(i, classes, **o),
        heads=heads,
        n_layers=n_layers,
    )
    assert res.classes == classes and res.texts is None and res.maps.shape == (2, 3, 4, 4)
    with torch.no_grad():
        logits = model(images)[:, classes]
    torch.testing.assert_close(res.model_scores, logits, atol=1e-5, rtol=1e-5)


def test_classifier_api_errors():
    model = tiny_timm_classifier()
    explainer = gradeclip.Explainer(model)
    with pytest.raises(gradeclip.InputError, match="explain_classes"):
        explainer.explain_image(torch.randn(1, 3, 32, 32), F.normalize(torch.randn(1, 10), dim=-1))
    with pytest.raises(gradeclip.InputError, match="method='gradeclip' only"):
        explainer.explain_classes(torch.randn(1, 3, 32, 32), [1], method="rollout")
    with pytest.raises(gradeclip.InputError, match=r"0\.\.9"):
        explainer.explain_classes(torch.randn(1, 3, 32, 32), [10])
    with pytest.raises(gradeclip.UnsupportedModelError, match="no text tower"):
        text_tower(model)
    avg = tiny_timm_classifier(global_pool="avg", class_token=False)
    with pytest.raises(gradeclip.UnsupportedModelError, match="global average"):
        image_tower(avg)
