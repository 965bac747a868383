"""Fine-tuning parts (SPEC §10) against references written from the SPEC: phrases, the per-image
targets of the map engine, dense features, the maps from the last block's tokens, the losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from gradeclip.finetune.dense import TailTower, image_forward, map_weights, phrase_maps, region_embeddings
from gradeclip.finetune.losses import global_loss, local_loss
from gradeclip.finetune.phrases import chunk_phrase, extractor, limit, synth_phrases
from gradeclip.methods.registry import get_method
from gradeclip.towers.registry import image_tower


# ---------------------------------------------------------------- phrases


def test_synth_phrases_are_the_captions_mentions():
    from gradeclip.synth import make_scenes
    from gradeclip.synth.captions import random_caption

    for scene in make_scenes(40, "train", seed=3):
        caption = random_caption(scene, np.random.default_rng(scene.index))
        expected = limit([" ".join(w for w in (m.size, m.colour, m.shape) if w) for m in caption.mentions], 4)
        assert synth_phrases([caption.text])[0] == expected, caption.text


def test_phrases_keep_at_most_k_and_empty_captions_have_none():
    text = "a red circle, a blue square, a green star, a pink heart and a cyan cross"
    assert synth_phrases([text], k=2) == [["red circle", "blue square"]]
    assert synth_phrases(["nothing to see here", ""]) == [[], []]
    assert extractor("synth", 1)(["a large red circle and a red circle"]) == [["large red circle"]]


def test_spacy_phrases_follow_adjective_noun_rule():
    phrases = extractor("spacy", 4)(["a dog in a black car waiting for traffic lights", "it is", "two small red circles"])
    assert phrases == [["dog", "black car", "traffic lights"], [], ["small red circles"]]


def test_chunk_phrase_rule():
    assert chunk_phrase([("the", "DET"), ("tall", "ADJ"), ("tree", "NOUN")]) == "tall tree"
    assert chunk_phrase([("it", "PRON")]) is None
    assert chunk_phrase([("very", "ADV"), ("red", "ADJ")]) is None


def test_bad_extractor_settings():
    from gradeclip.errors import InputError

    with pytest.raises(InputError, match="--phrases"):
        extractor("nltk")
    with pytest.raises(InputError, match="--max-phrases"):
        extractor("synth", 0)


# ---------------------------------------------------------------- engine with per-image targets


@pytest.fixture(scope="module")
def setup(tiny_model):
    torch.manual_seed(7)
    tower = image_tower(tiny_model)
    images = torch.randn(3, 3, 32, 32)
    targets = F.normalize(torch.randn(3, 2, 32), dim=-1)  # each image its own 2 targets
    return tiny_model, tower, images, targets


@pytest.mark.parametrize("method", ["gradeclip", "gradcam", "maskclip"])
def test_per_image_targets_equal_one_image_at_a_time(setup, method):
    _, tower, images, targets = setup
    _, fn = get_method(method)
    batched = fn(tower, images, targets)
    for b in range(images.shape[0]):
        alone = fn(tower, images[b : b + 1], targets[b])
        torch.testing.assert_close(batched.maps[b], alone.maps[0], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(batched.scores[b], alone.scores[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["gradeclip", "gradcam", "maskclip"])
def test_maps_from_the_last_blocks_tokens_equal_the_whole_towers(setup, method):
    _, tower, images, targets = setup
    fwd = image_forward(tower, images)
    tail_maps = phrase_maps(tower, fwd.tail, targets, method)
    whole = get_method(method)[1](tower, images, targets).maps.flatten(2)
    torch.testing.assert_close(tail_maps, whole, rtol=1e-4, atol=1e-6)
    assert isinstance(TailTower(tower, fwd.tail).blocks[0], type(tower.blocks[-1]))


# ---------------------------------------------------------------- dense features


def _dense_reference(model, images):
    """Per patch token, by hand from the model's modules: the last block with o_i = v_i."""
    v = model.visual
    x = v.conv1(images).flatten(2).transpose(1, 2)
    x = torch.cat([v.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + v.positional_embedding
    x = v.ln_pre(x)
    for block in v.transformer.resblocks[:-1]:
        x = block(x)
    last = v.transformer.resblocks[-1]
    out = torch.empty(x.shape[0], x.shape[1] - 1, v.proj.shape[1])
    width = x.shape[-1]
    for b in range(x.shape[0]):
        for i in range(1, x.shape[1]):
            token = x[b, i]
            value = F.linear(last.ln_1(token), last.attn.in_proj_weight[2 * width :], last.attn.in_proj_bias[2 * width :])
            y = token + last.ls_1(last.attn.out_proj(value))
            z = y + last.ls_2(last.mlp(last.ln_2(y)))
            out[b, i - 1] = v.ln_post(z) @ v.proj
    return out


def test_image_forward_gives_the_models_embedding_and_dense_features(setup):
    model, tower, images, _ = setup
    with torch.no_grad():
        fwd = image_forward(tower, images)
        torch.testing.assert_close(fwd.embedding, model.encode_image(images), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fwd.dense, _dense_reference(model, images), rtol=1e-5, atol=1e-5)
    assert fwd.tail.x.shape == (3, 17, 64) and not fwd.tail.x.requires_grad


def test_image_forward_is_differentiable(setup):
    _, tower, images, _ = setup
    fwd = image_forward(tower, images)
    (fwd.embedding.sum() + fwd.dense.sum()).backward()
    assert tower.blocks[0].module.attn.in_proj_weight.grad is not None
    tower.blocks[0].module.zero_grad(set_to_none=True)


def test_map_weights_and_region_embeddings():
    torch.manual_seed(0)
    maps = torch.rand(2, 3, 5)
    maps[0, 1] = 0.0  # no evidence: uniform
    maps[1, 2] = -torch.rand(5)  # only negative cosines: uniform too
    maps[1, 0, :2] = -1.0  # negatives count as zero
    w = map_weights(maps)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3))
    torch.testing.assert_close(w[0, 1], torch.full((5,), 0.2))
    torch.testing.assert_close(w[1, 2], torch.full((5,), 0.2))
    assert (w[1, 0, :2] == 0).all()
    dense = torch.randn(2, 5, 4)
    r = region_embeddings(w, dense)
    for b in range(2):
        for k in range(3):
            torch.testing.assert_close(r[b, k], sum(w[b, k, i] * dense[b, i] for i in range(5)))


# ---------------------------------------------------------------- losses


def test_global_loss_matches_the_formula():
    torch.manual_seed(1)
    img, txt, scale = torch.randn(5, 8), torch.randn(5, 8), torch.tensor(14.3)
    cos = [[float(F.cosine_similarity(img[i], txt[j], dim=0)) for j in range(5)] for i in range(5)]
    s = float(scale)
    i2t = -sum(s * cos[i][i] - math.log(sum(math.exp(s * cos[i][j]) for j in range(5))) for i in range(5)) / 5
    t2i = -sum(s * cos[j][j] - math.log(sum(math.exp(s * cos[i][j]) for i in range(5))) for j in range(5)) / 5
    assert float(global_loss(img, txt, scale)) == pytest.approx(0.5 * (i2t + t2i), rel=1e-5)


def _focal_reference(regions, phrases, own, tau=0.07, alpha=0.25, gamma=2.0):
    total = 0.0
    for r in range(regions.shape[0]):
        for j in range(phrases.shape[0]):
            x = float(F.cosine_similarity(regions[r], phrases[j], dim=0)) / tau
            p = 1 / (1 + math.exp(-x))
            if j == own[r]:
                total += -alpha * (1 - p) ** gamma * math.log(p)
            else:
                total += -(1 - alpha) * p**gamma * math.log(1 - p)
    return total / regions.shape[0]


def test_local_loss_matches_the_focal_formula():
    torch.manual_seed(2)
    regions, phrases = torch.randn(7, 6), torch.randn(4, 6)
    own = torch.tensor([0, 1, 1, 3, 2, 0, 3])
    assert float(local_loss(regions, phrases, own)) == pytest.approx(_focal_reference(regions, phrases, own), rel=1e-5)
    assert float(local_loss(regions, phrases, own, temperature=0.5)) == pytest.approx(_focal_reference(regions, phrases, own, tau=0.5), rel=1e-5)


def test_local_loss_of_no_regions_is_zero():
    assert float(local_loss(torch.zeros(0, 6), torch.zeros(0, 6), torch.zeros(0, dtype=torch.long))) == 0.0
