"""Every baseline method equals its paper's reference (tests/reference_baselines.py), one image and
one text at a time, on random-weight open_clip ViTs with fresh random inputs and odd grids."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import reference_baselines as ref
from conftest import tiny_clip

import gradeclip
from gradeclip.errors import InputError, UnknownMethodError

BASELINES = ["raw_attention", "rollout", "gradcam", "maskclip", "game", "rise", "clip_surgery", "m2ib"]


def unit(t: torch.Tensor) -> torch.Tensor:
    return F.normalize(t, dim=-1)


def close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 2e-5) -> None:
    scale = expected.abs().max().clamp_min(1e-12).item()
    torch.testing.assert_close(actual, expected, atol=rel * scale, rtol=1e-4)


def reference_maps(model, name, image, texts, **options):
    """[T, *grid] from the reference for one image [1, 3, H, W]."""
    if name == "raw_attention":
        return ref.raw_attention_ref(model, image).expand(texts.shape[0], -1, -1)
    if name == "rollout":
        return ref.rollout_ref(model, image).expand(texts.shape[0], -1, -1)
    if name == "rise":
        return ref.rise_ref(model, image, texts, **options)
    if name == "clip_surgery":
        mode = options.get("feature_surgery", "auto")
        if mode == "auto":
            mode = "texts" if texts.shape[0] > 1 else "redundant"
        blocks = options.get("surgery_blocks", min(6, len(model.visual.transformer.resblocks)))
        return ref.clip_surgery_ref(model, image, texts, blocks, mode, options.get("redundant"))
    fn = {
        "gradcam": ref.gradcam_ref,
        "maskclip": ref.maskclip_ref,
        "game": lambda m, i, t: ref.game_ref(m, i, t, **options),
        "m2ib": lambda m, i, t: ref.m2ib_ref(m, i, t, **options),
    }[name]
    return torch.stack([fn(model, image, t) for t in texts])


def assert_matches_reference(model, name, images, texts, rel=2e-5, **options):
    res = gradeclip.Explainer(model).explain_image(images, texts, method=name, **options)
    assert res.maps.dtype == torch.float32
    assert res.method == name
    for b in range(images.shape[0]):
        close(res.maps[b], reference_maps(model, name, images[b : b + 1], texts, **options), rel)
        for t in range(texts.shape[0]):
            # a baseline scores with the model's own cosine: ``scores`` and ``model_scores`` are
            # one tensor in every method, so each is checked against the reference's cosine
            own = ref.model_score(model, images[b : b + 1], texts[t])
            torch.testing.assert_close(res.scores[b, t], own, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(res.model_scores[b, t], own, atol=1e-5, rtol=1e-5)
    return res


TINY_OPTIONS = {
    "raw_attention": {},
    "rollout": {},
    "gradcam": {},
    "maskclip": {},
    "game": {"start_layer": 0},
    "rise": {"n_masks": 24, "cells": 3, "p": 0.4, "seed": 7},
    "clip_surgery": {"surgery_blocks": 2},
    "m2ib": {"layer": 0, "beta": 0.1, "steps": 4, "lr": 1.0, "samples": 3, "seed": 5},
}


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize("size", [(32, 32), (24, 40)], ids=["4x4", "3x5"])
def test_tiny_matches_reference(tiny_model, name, size):
    images = torch.randn(2, 3, *size)
    texts = unit(torch.randn(3, 32))
    res = assert_matches_reference(tiny_model, name, images, texts, **TINY_OPTIONS[name])
    grid = size if name == "rise" else (size[0] // 8, size[1] // 8)
    assert res.maps.shape == (2, 3, *grid)
    assert res.resolution == ("pixels" if name == "rise" else "tokens")
    assert res.maps.abs().sum() > 0


@pytest.mark.parametrize(
    "name,options",
    [
        ("game", {"start_layer": -1}),
        ("game", {"start_layer": 1}),
        ("clip_surgery", {"surgery_blocks": 3, "feature_surgery": "none"}),
        ("clip_surgery", {"surgery_blocks": 1, "feature_surgery": "texts"}),
        ("m2ib", {"layer": -2, "beta": 1.0, "steps": 3, "lr": 0.5, "samples": 2, "seed": 0}),
        ("rise", {"n_masks": 10, "cells": 5, "p": 0.5, "seed": 1}),
    ],
    ids=["game-last", "game-from1", "surgery-none", "surgery-texts", "m2ib-late", "rise-fine"],
)
def test_tiny_options(tiny_model, name, options):
    assert_matches_reference(tiny_model, name, torch.randn(2, 3, 40, 24), unit(torch.randn(2, 32)), **options)


@pytest.mark.parametrize("name", ["gradcam", "game", "m2ib"])
def test_one_text_and_layer_scale(name):
    """T = 1, and a model with layer scale (ls_1/ls_2 not identity)."""
    torch.manual_seed(11)
    model = tiny_clip(ls_init_value=0.5, layers=4)
    assert_matches_reference(model, name, torch.randn(3, 3, 32, 24), unit(torch.randn(1, 32)), **TINY_OPTIONS.get(name, {}))


def test_clip_surgery_single_text_subtracts_the_empty_prompt(tiny_model, tokenizer):
    """With one text and a tokenizer, the redundant feature is the empty prompt's embedding."""
    images = torch.randn(2, 3, 32, 32)
    res = gradeclip.Explainer(tiny_model, tokenizer).explain_image(images, "a dog", method="clip_surgery", surgery_blocks=2)
    with torch.no_grad():
        text = unit(tiny_model.encode_text(tokenizer(["a dog"])))
        empty = unit(tiny_model.encode_text(tokenizer([""])))[0]
    for b in range(2):
        close(res.maps[b], ref.clip_surgery_ref(tiny_model, images[b : b + 1], text, 2, "redundant", empty))
    explicit = gradeclip.Explainer(tiny_model).explain_image(images, text, method="clip_surgery", surgery_blocks=2, redundant=empty)
    torch.testing.assert_close(explicit.maps, res.maps)


def test_clip_surgery_needs_a_redundant_feature_for_one_text(tiny_model):
    ex = gradeclip.Explainer(tiny_model)  # no tokenizer: the empty prompt cannot be encoded
    with pytest.raises(InputError, match="redundant"):
        ex.explain_image(torch.randn(1, 3, 32, 32), unit(torch.randn(1, 32)), method="clip_surgery")
    with pytest.raises(InputError, match="at least 2 texts"):
        ex.explain_image(torch.randn(1, 3, 32, 32), unit(torch.randn(1, 32)), method="clip_surgery", feature_surgery="texts")


@pytest.mark.parametrize("name", ["raw_attention", "rollout"])
def test_text_agnostic_methods_say_so(tiny_model, name):
    res = gradeclip.Explainer(tiny_model).explain_image(torch.randn(2, 3, 32, 32), unit(torch.randn(4, 32)), method=name)
    assert res.text_specific is False and gradeclip.methods()[name].text_specific is False
    for t in range(1, 4):
        assert torch.equal(res.maps[:, t], res.maps[:, 0])


def test_text_specific_methods_differ_across_texts(tiny_model):
    images, texts = torch.randn(1, 3, 32, 32), unit(torch.randn(2, 32))
    for name in ["gradcam", "maskclip", "game", "clip_surgery"]:
        res = gradeclip.Explainer(tiny_model).explain_image(images, texts, method=name)
        assert res.text_specific is True
        assert not torch.allclose(res.maps[:, 0], res.maps[:, 1]), name


def test_registry_describes_every_method():
    described = gradeclip.methods()
    assert set(BASELINES) | {"gradeclip"} == set(described)
    for name, info in described.items():
        assert info.name == name and info.paper and info.forwards_per_image and info.summary
    assert described["rise"].needs_gradients is False and described["game"].needs_gradients is True


def test_unknown_method_lists_the_valid_ones(tiny_model):
    with pytest.raises(UnknownMethodError) as err:
        gradeclip.Explainer(tiny_model).explain_image(torch.randn(1, 3, 32, 32), unit(torch.randn(1, 32)), method="lime")
    for name in BASELINES:
        assert name in str(err.value)


@pytest.mark.parametrize(
    "name,options",
    [
        ("game", {"start_layer": 3}),
        ("m2ib", {"layer": -4}),
        ("m2ib", {"steps": 0}),
        ("rise", {"p": 1.5}),
        ("rise", {"n_masks": 0}),
        ("clip_surgery", {"surgery_blocks": 4}),
        ("clip_surgery", {"feature_surgery": "all"}),
        ("rollout", {"start_layer": 0}),
    ],
)
def test_bad_options_are_input_errors(tiny_model, name, options):
    with pytest.raises(InputError):
        gradeclip.Explainer(tiny_model).explain_image(torch.randn(1, 3, 32, 32), unit(torch.randn(2, 32)), method=name, **options)


def test_no_side_effects_on_the_model(tiny_model):
    """No hooks left, no gradients accumulated, no parameter changed, training flags restored."""
    model = tiny_clip()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ex = gradeclip.Explainer(model)
    for name in BASELINES:
        ex.explain_image(torch.randn(1, 3, 32, 32), unit(torch.randn(2, 32)), method=name, **TINY_OPTIONS[name])
    assert all(p.grad is None for p in model.parameters())
    for module in model.modules():
        assert module.training
        assert not module._forward_hooks and not module._forward_pre_hooks and not module._backward_hooks
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_seeded_methods_repeat_and_depend_on_the_seed(tiny_model):
    ex = gradeclip.Explainer(tiny_model)
    images, texts = torch.randn(1, 3, 32, 32), unit(torch.randn(1, 32))
    for name, options in [("rise", {"n_masks": 16}), ("m2ib", {"layer": 0, "steps": 2, "samples": 2})]:
        a = ex.explain_image(images, texts, method=name, seed=3, **options).maps
        b = ex.explain_image(images, texts, method=name, seed=3, **options).maps
        c = ex.explain_image(images, texts, method=name, seed=4, **options).maps
        assert torch.equal(a, b) and not torch.equal(a, c), name


def test_m2ib_pair_maps_do_not_depend_on_the_batch(tiny_model):
    """Each (image, text) pair has its own bottleneck and the same noise: batching changes nothing."""
    ex = gradeclip.Explainer(tiny_model)
    images, texts = torch.randn(3, 3, 32, 32), unit(torch.randn(2, 32))
    options = {"layer": 1, "steps": 3, "samples": 2}
    together = ex.explain_image(images, texts, method="m2ib", **options).maps
    alone = ex.explain_image(images[2:], texts[1:], method="m2ib", **options).maps
    close(together[2, 1], alone[0, 0])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["raw_attention", "rollout", "gradcam", "maskclip", "game", "clip_surgery", "m2ib"])
def test_vit_b32_matches_reference(vit_b32, name):
    options = {"m2ib": {"layer": -3, "beta": 0.1, "steps": 2, "lr": 1.0, "samples": 2, "seed": 0}}.get(name, {})
    images = torch.randn(2, 3, 160, 224)  # grid 5×7
    res = assert_matches_reference(vit_b32, name, images, unit(torch.randn(2, 512)), rel=1e-4, **options)
    assert res.maps.shape == (2, 2, 5, 7)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", BASELINES)
def test_cuda_matches_cpu(name, monkeypatch):
    """Every method gives the CPU's maps on CUDA (seeded draws happen on the CPU for both)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # full fp32 patch embedding
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.manual_seed(21)
    model = tiny_clip()
    images, texts = torch.randn(2, 3, 24, 40), unit(torch.randn(3, 32))
    cpu = gradeclip.Explainer(model).explain_image(images, texts, method=name, **TINY_OPTIONS[name])
    gpu = gradeclip.Explainer(model.cuda()).explain_image(images.cuda(), texts.cuda(), method=name, **TINY_OPTIONS[name])
    assert gpu.maps.is_cuda
    close(gpu.maps.cpu(), cpu.maps, rel=1e-3)
    torch.testing.assert_close(gpu.model_scores.cpu(), cpu.model_scores, atol=1e-4, rtol=1e-4)
