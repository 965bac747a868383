"""``deletion_insertion(..., compat="authors")`` (SPEC §12) equals a slow loop written from the
authors' ``imagenet_eval_deletion.py``: the image capped (int() truncation), explained with
q, k after the output projection at ``int(x/p + 0.5)·p``, the map min-max normalised and resized
to the capped image, pixels in ``np.argsort(-heat)`` order, every checkpoint scored on the
model's preprocess."""

from __future__ import annotations

import numpy as np
import pytest
import reference_eval as ref
import torch
from PIL import Image
from test_eval_harness import (  # noqa: F401  (fixtures)
    DISTRACTORS,
    EVAL_EVERY,
    STEPS,
    TEMPLATES,
    assert_hits_match,
    classifier_weights,
    model,
    photo_root,
    preprocess,
    reference_embeddings,
    tokenizer,
)

import gradeclip
import gradeclip.eval as ev
from gradeclip.errors import InputError
from gradeclip.render import upsample

CAP = 40  # the authors cap the shorter side at 640; a small cap keeps the test fast and exercises it


def authors_input(image: Image.Image, mean, std, patch: int = 8) -> tuple[np.ndarray, torch.Tensor]:
    """Their two resizes written out: the capped image (uint8) and the explained input ``[1, 3, H', W']``."""
    w, h = image.size
    if min(w, h) > CAP:
        scale = min(w, h) / CAP
        image = image.resize((int(w / scale), int(h / scale)), Image.Resampling.BICUBIC)
    w, h = image.size
    size = (max(patch, int(w / patch + 0.5) * patch), max(patch, int(h / patch + 0.5) * patch))
    pixels = np.asarray(image.resize(size, Image.Resampling.BICUBIC), np.float32) / 255
    x = (torch.from_numpy(pixels).permute(2, 0, 1) - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    return np.asarray(image), x[None]


def argsort_ranks(heat: np.ndarray) -> np.ndarray:
    """A map whose stable descending order is their ``np.argsort(-heat)`` (normalised as they do)."""
    normalised = (heat - heat.min()) / (heat.max() - heat.min())
    order = np.argsort(-normalised.reshape(-1))
    ranks = np.empty(order.size)
    ranks[order] = np.arange(order.size, 0, -1)
    return ranks.reshape(heat.shape)


def test_authors_deletion_insertion_equals_their_loop(photo_root, model, tokenizer, preprocess, monkeypatch):  # noqa: F811
    import gradeclip.eval.faithfulness as faithfulness

    dataset = ev.ImageFolder(photo_root / "images")
    names = dataset.class_names + DISTRACTORS
    common = dict(tokenizer=tokenizer, class_names=names, templates=TEMPLATES, steps=STEPS, eval_every=EVAL_EVERY, seed=3, progress=False, limit=3)
    calls: list[tuple[list, list]] = []  # what the harness perturbs: per chunk of 2, deletion then insertion

    def recording(images, maps, *args, **kwargs):
        calls.append((list(images), list(maps)))
        return ev.perturbation_steps(images, maps, *args, **kwargs)

    monkeypatch.setattr(faithfulness, "perturbation_steps", recording)
    result = ev.deletion_insertion(model, dataset, compat="authors", max_short_side=CAP, chunk_size=2, **common)
    settings = result.settings
    assert settings["options"] == {"qk_space": "out_proj"} and settings["resolution"] == "native"
    assert settings["geometry"] == "authors" and settings["pixel_order"] == "argsort" and settings["max_short_side"] == CAP
    weights = classifier_weights(model, tokenizer, names)
    g = ev.Geometry.of(model)
    expected = {mode: [] for mode in ev.MODES}
    for sample in list(dataset)[:3]:
        capped, x = authors_input(Image.open(sample.path).convert("RGB"), g.mean, g.std)
        grid = gradeclip.Explainer(model).explain_image(x, weights[sample.label][None], qk_space="out_proj").maps[0, :1].numpy()
        heat = argsort_ranks(upsample(grid, capped.shape[:2])[0])
        chunk, position = divmod(sample.index, 2)
        for images, maps in calls[2 * chunk : 2 * chunk + 2]:
            image, walked = images[position], maps[position]
            np.testing.assert_array_equal(image, capped)  # the capped image is perturbed
            order = np.argsort(-walked.astype(np.float64).ravel(), kind="stable")  # the order the Rust walk takes
            np.testing.assert_array_equal(order, np.argsort(-heat.ravel(), kind="stable"))
        others = np.arange(len(names)) != sample.label
        for mode in ev.MODES:
            frames = ref.checkpoints(capped, heat, mode, STEPS, EVAL_EVERY, seed=3, stream=sample.index)
            logits = (reference_embeddings(model, frames, preprocess) @ weights.T).numpy()
            expected[mode].append([[ref.hit_at(row[sample.label], row[others], k) for k in (1, 5)] for row in logits])
    for mode in ev.MODES:
        assert_hits_match(result.hits[mode], np.array(expected[mode], dtype=float), mode)


def test_compat_is_for_grad_eclip(photo_root, model, tokenizer):  # noqa: F811
    dataset = ev.ImageFolder(photo_root / "images")
    with pytest.raises(InputError, match="method 'rollout' runs without it"):
        ev.deletion_insertion(model, dataset, tokenizer=tokenizer, method="rollout", compat="authors", progress=False, limit=1)
