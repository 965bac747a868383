"""The Explainer refuses bad input with typed errors and leaves the model exactly as it found it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_clip

import gradeclip
from gradeclip import InputError, UnknownMethodError, UnsupportedModelError


@pytest.fixture
def explainer(tiny_model, tokenizer):
    return gradeclip.Explainer(tiny_model, tokenizer)


def images(b=2, h=32, w=32):
    return torch.randn(b, 3, h, w)


@pytest.mark.parametrize(
    "bad,match",
    [
        (torch.randn(3, 32, 32), "rank 3"),
        (torch.randn(2, 4, 32, 32), "3 channels"),
        (torch.randn(2, 3, 30, 32), "multiple of the patch"),
        (torch.zeros(0, 3, 32, 32), "empty batch"),
        (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), "float tensor"),
        (torch.full((2, 3, 32, 32), float("nan")), "NaN"),
        ([[0.0]], "torch.Tensor"),
    ],
    ids=["rank", "channels", "patch-multiple", "empty", "uint8", "nan", "not-a-tensor"],
)
def test_bad_images(explainer, bad, match):
    with pytest.raises(InputError, match=match):
        explainer.explain_image(bad, ["a cat"])


@pytest.mark.parametrize(
    "texts,match",
    [
        ([], "empty"),
        (["a cat", "   "], r"texts\[1\] is empty"),
        ([1, 2], "list of strings"),
        (torch.randn(2, 31), "width 31"),
        (torch.full((1, 32), float("nan")), "NaN"),
        (torch.zeros(1, 32), "all zeros"),
        (torch.zeros(0, 32), "T ≥ 1"),
    ],
    ids=["empty-list", "blank-text", "not-strings", "wrong-width", "nan-embedding", "zero-embedding", "no-embeddings"],
)
def test_bad_texts(explainer, texts, match):
    with pytest.raises(InputError, match=match):
        explainer.explain_image(images(), texts)


def test_strings_need_a_tokenizer(tiny_model):
    with pytest.raises(InputError, match="tokenizer"):
        gradeclip.Explainer(tiny_model).explain_image(images(), ["a cat"])


@pytest.mark.parametrize(
    "options,match",
    [
        ({"heads": "all"}, "heads='all'"),
        ({"spatial": "cosine"}, "spatial"),
        ({"qk_space": "values"}, "qk_space"),
        ({"n_layers": 0}, "n_layers"),
        ({"n_layers": 4}, r"1\.\.3"),
        ({"n_layers": True}, "n_layers"),
        ({"per_head": True}, "per_head"),
        ({"layers": 2}, "no option 'layers'"),
    ],
    ids=["heads", "spatial", "qk_space", "zero-layers", "too-many-layers", "bool-layers", "per-head-single", "unknown-option"],
)
def test_bad_options(explainer, options, match):
    with pytest.raises(InputError, match=match):
        explainer.explain_image(images(), ["a cat"], **options)


def test_unknown_method_lists_valid_ones(explainer):
    with pytest.raises(UnknownMethodError, match="valid methods: .*gradeclip"):
        explainer.explain_image(images(), ["a cat"], method="gradcamm")


def test_errors_are_catchable_as_builtin_types(explainer):
    with pytest.raises(ValueError):
        explainer.explain_image(images(), [])
    assert issubclass(UnsupportedModelError, TypeError)


@pytest.mark.parametrize(
    "vision,match",
    [
        ({"pool_type": "avg"}, "averages the tokens"),
        ({"attentional_pool": "cascade", "attn_pooler_heads": 4}, "attentional pooler"),
        ({"qk_norm": True}, "QK normalisation"),
    ],
    ids=["avg-pool", "attn-pool-cascade", "qk-norm"],
)
def test_unsupported_towers_name_the_reason(vision, match):
    model = tiny_clip(**vision)
    with pytest.raises(UnsupportedModelError, match=match):
        gradeclip.Explainer(model).explain_image(images(), F.normalize(torch.randn(1, 32), dim=-1))


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, [m.training for m in model.modules()]


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def test_model_left_unchanged_even_after_an_error():
    torch.manual_seed(5)
    model = tiny_clip().train()
    model.visual.transformer.resblocks[1].eval()  # a mixed state must come back exactly
    state, flags = _snapshot(model)
    ex = gradeclip.Explainer(model)
    text = F.normalize(torch.randn(2, 32), dim=-1)
    ex.explain_image(images(), text, n_layers=2)
    with pytest.raises(InputError):
        ex.explain_image(images(), text, spatial="bogus")  # raised inside the method, after eval mode was set
    after_state, after_flags = _snapshot(model)
    assert after_flags == flags
    assert _hooks(model) == 0
    assert all(torch.equal(state[k], after_state[k]) for k in state)
    assert all(p.grad is None for p in model.parameters())


def test_under_no_grad_and_inference_callers(explainer):
    x, text = images(), F.normalize(torch.randn(3, 32), dim=-1)
    plain = explainer.explain_image(x, text)
    with torch.no_grad():
        quiet = explainer.explain_image(x, text)
    torch.testing.assert_close(quiet.maps, plain.maps)
    with torch.inference_mode():
        x_inf = x.clone()
        frozen = explainer.explain_image(x_inf, text)
    torch.testing.assert_close(frozen.maps, plain.maps)


#: |score − float32 score| of a 16-bit copy of the tiny model: at most 2.8e-3 (bf16) and 6.1e-4
#: (fp16) over seeds 0–6 with either CPU kernel set (ATEN_CPU_CAPABILITY default / avx2), about one
#: unit of each format's rounding; the tolerances are 1.5 and 3 units
LOW_PRECISION_SCORE_TOL = {torch.bfloat16: 6e-3, torch.float16: 1.5e-3}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision_models_return_float32_maps(dtype):
    torch.manual_seed(6)
    model = tiny_clip()
    x, text = images(3), F.normalize(torch.randn(2, 32), dim=-1)
    ref = gradeclip.Explainer(model).explain_image(x, text)
    low = gradeclip.Explainer(model.to(dtype)).explain_image(x, text)
    assert low.maps.dtype == low.scores.dtype == low.model_scores.dtype == torch.float32
    assert torch.isfinite(low.maps).all()
    flat_ref, flat_low = ref.maps.flatten(2), low.maps.flatten(2)
    corr = F.cosine_similarity(flat_ref - flat_ref.mean(-1, keepdim=True), flat_low - flat_low.mean(-1, keepdim=True), dim=-1)
    assert corr.min() > 0.9, corr
    tol = LOW_PRECISION_SCORE_TOL[dtype]
    assert tol <= 0.1 * (ref.scores.max() - ref.scores.min()), "the scores must spread far wider than the tolerance"
    torch.testing.assert_close(low.scores, ref.scores, atol=tol, rtol=0)
    torch.testing.assert_close(low.model_scores, ref.model_scores, atol=tol, rtol=0)


def test_single_string_is_one_text(explainer):
    res = explainer.explain_image(images(), "a red circle")
    assert res.maps.shape == (2, 1, 4, 4)
    assert res.texts == ["a red circle"]
