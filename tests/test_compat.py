"""compat="authors" (SPEC §12) and its parts, against straightforward references of the authors' forms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_text_clip
from PIL import Image
from reference import reference_visual_map
from reference_text import reference_authors_text_importance, reference_text_importance

import gradeclip
from gradeclip import InputError
from gradeclip.preprocessing import authors_cap, authors_size

CAPTIONS = ["a dog", "Two tabby cats asleep on a red sofa, next to a window.", "photorealistic hippopotamus!"]


@pytest.fixture(scope="module")
def text_model():
    torch.manual_seed(23)
    return tiny_text_clip()


def _image_targets(model, images):
    with torch.no_grad():
        return F.normalize(model.encode_image(images), dim=-1)


@pytest.mark.parametrize(
    "options",
    [
        {"compat": "authors"},
        {"lambda_keys": "context"},
        {"relu": "after_sum"},
        {"compat": "authors", "qk_space": "out_proj"},
        {"lambda_keys": "context", "relu": "after_sum", "n_layers": 3},
    ],
    ids=["preset", "lambda-over-context", "relu-after-sum", "preset+out_proj", "both-3-layers"],
)
def test_authors_text_form_matches_reference(text_model, tokenizer, options):
    preset = options.get("compat") == "authors"
    full = options == {"compat": "authors"}
    images = torch.randn(2 if full else 1, 3, 32, 32)
    captions = CAPTIONS if full else CAPTIONS[2:]  # the reference is slow: one pair for the parts
    res = gradeclip.Explainer(text_model, tokenizer).explain_text(images, captions, **options)
    form = {
        "lambda_keys": options.get("lambda_keys", "context" if preset else "attended"),
        "relu": options.get("relu", "after_sum" if preset else "per_layer"),
        "qk_space": options.get("qk_space", "attention"),
    }
    assert {k: res.options[k] for k in form} == form
    ids = tokenizer(captions)
    targets = _image_targets(text_model, images)
    for b in range(images.shape[0]):
        for t in range(len(captions)):
            ref, ref_score = reference_authors_text_importance(text_model, ids[t], targets[b], n_layers=options.get("n_layers", 8), **form)
            torch.testing.assert_close(res.importance[b, t], ref, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(res.scores[b, t], ref_score, atol=1e-5, rtol=1e-5)


def test_authors_text_form_differs_from_spec(text_model, tokenizer):
    """The two differences are real on these weights: the authors' importances are not SPEC §3's."""
    images = torch.randn(2, 3, 32, 32)
    explainer = gradeclip.Explainer(text_model, tokenizer)
    authors = explainer.explain_text(images, CAPTIONS, compat="authors").importance
    spec = explainer.explain_text(images, CAPTIONS).importance
    ids, targets = tokenizer(CAPTIONS), _image_targets(text_model, images)
    ref = reference_text_importance(text_model, ids[1], targets[0])[0]
    torch.testing.assert_close(spec[0, 1], ref, atol=1e-5, rtol=1e-4)
    assert (authors - spec).abs().max() > 1e-2


def test_authors_visual_form(tiny_model, tokenizer):
    images = torch.randn(2, 3, 32, 40)  # a non-square grid, as at native resolution
    texts = ["a red toy", "a horse"]
    explainer = gradeclip.Explainer(tiny_model, tokenizer)
    res = explainer.explain_image(images, texts, compat="authors")
    assert res.options["qk_space"] == "out_proj"
    with torch.no_grad():
        emb = F.normalize(tiny_model.encode_text(tokenizer(texts)), dim=-1)
    for b in range(2):
        for t in range(2):
            ref_map, ref_score, _ = reference_visual_map(tiny_model, images[b : b + 1], emb[t], qk_space="out_proj")
            torch.testing.assert_close(res.maps[b, t], ref_map, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(res.scores[b, t], ref_score, atol=1e-5, rtol=1e-5)
    overridden = explainer.explain_image(images, texts, compat="authors", qk_space="attention", spatial="none")
    assert overridden.options == {"qk_space": "attention", "spatial": "none"}


def test_compat_refusals(tiny_model, tokenizer):
    explainer = gradeclip.Explainer(tiny_model, tokenizer)
    images = torch.randn(1, 3, 32, 32)
    with pytest.raises(InputError, match="compat='paper' is not a known preset"):
        explainer.explain_image(images, ["a"], compat="paper")
    with pytest.raises(InputError, match="method 'rollout' has none"):
        explainer.explain_image(images, ["a"], method="rollout", compat="authors")
    with pytest.raises(InputError, match="lambda_keys='context' is for text towers"):
        explainer.explain_image(images, ["a"], lambda_keys="context")
    with pytest.raises(InputError, match="relu='sum' is not one of"):
        explainer.explain_text(images, ["a"], relu="sum")


@pytest.mark.parametrize(
    "size,expected_cap,expected",
    [((20, 451), (20, 451), (24, 448)), ((1000, 700), (914, 640), (912, 640)), ((3, 9), (3, 9), (8, 8))],
    ids=["half-up", "capped-by-truncation", "at-least-one-patch"],
)
def test_authors_geometry(tiny_model, size, expected_cap, expected):
    """The authors' two resizes: cap the shorter side at 640 with int() truncation, then int(x/p + 0.5)·p."""
    height, width = size
    image = Image.new("RGB", (width, height), (120, 30, 200))
    capped = authors_cap(image)
    assert (capped.height, capped.width) == expected_cap
    assert authors_size(capped.height, capped.width, (8, 8)) == expected
    x = gradeclip.native_preprocess(image, tiny_model, compat="authors")
    assert tuple(x.shape[1:]) == expected
    own = gradeclip.native_preprocess(image, tiny_model)  # gradeclip's: one resize, Python's round (half to even)
    assert tuple(own.shape[1:]) == gradeclip.preprocessing.native_size(height, width, (8, 8))
    if size == (20, 451):
        assert own.shape[1] == 16  # 20/8 = 2.5: half-up gives 24, half-to-even 16


def test_explain_command_compat_authors(tmp_path, tiny_model, tokenizer):
    """``gradeclip explain --compat authors --text-maps``: the store's maps and word importances
    are the API's authors' forms, and the manifest says which options made them."""
    import json

    import numpy as np
    from safetensors.torch import save_file
    from skimage import data as sd

    from gradeclip.cli import main

    folder = tmp_path / "model"
    folder.mkdir()
    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 3, "head_width": 16, "mlp_ratio": 2.0},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 3}}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, folder / "open_clip_model.safetensors")
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, array in {"cat": sd.chelsea(), "coffee": sd.coffee()}.items():
        Image.fromarray(array).resize((48, 40)).save(photos / f"{name}.png")
        (photos / f"{name}.txt").write_text(f"a photo of a small {name}\n")
    out = tmp_path / "store"
    args = ["explain", "--quiet", "--model", str(folder), "--data", str(photos), "--out", str(out), "--workers", "0", "--compat", "authors", "--text-maps", "--text-layers", "2"]
    assert main(args) == 0
    store = gradeclip.Store(out)
    assert store.manifest["config"]["options"] == {"qk_space": "out_proj"}
    assert store.manifest["config"]["text_maps"] == {"n_layers": 2, "heads": "single", "lambda_keys": "context", "relu": "after_sum"}
    model, preprocess, tok = gradeclip.load(f"local-dir:{folder}")
    explainer = gradeclip.Explainer(model, tok)
    frame = store.to_pandas()
    for row in range(len(frame)):
        values = frame.iloc[row]
        with Image.open(values["path"]) as image:
            x = preprocess(image.convert("RGB"))[None]
        ref = explainer.explain_image(x, [values["text"]], qk_space="out_proj")
        np.testing.assert_allclose(store.map(row), ref.maps[0, 0].numpy(), rtol=2e-3, atol=2e-3 * float(ref.maps.abs().max()) + 1e-7)
        words = explainer.explain_text(x, [values["text"]], n_layers=2, lambda_keys="context", relu="after_sum").words(0, 0)
        np.testing.assert_allclose(values["word_importance"], [v for _, v in words], atol=1e-5)
