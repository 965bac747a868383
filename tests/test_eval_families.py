"""``gradeclip.eval`` runs for every model family the Explainer explains against texts (small
random models): open_clip ViT and ResNet, a timm-tower CLIP (EVA02), transformers CLIP and BLIP.

The evaluation reaches each model only through the Explainer and its tower adapters; here the
untouched checkpoint's zero-shot hits are recomputed with each model's *own* image forward
(``encode_image``, ``get_image_features``, BLIP's ``vision_proj``), and the geometry with what
each family declares."""

from __future__ import annotations

import zlib

import gradeclip.eval as ev
import numpy as np
import open_clip
import pytest
import reference_eval as ref
import torch
import torch.nn.functional as F
from conftest import tiny_clip
from PIL import Image
from tiny_models import tiny_blip, tiny_eva02, tiny_hf_clip, tiny_resnet_clip

from gradeclip.eval.models import EvalModel
from gradeclip.preprocessing import OPENAI_MEAN, OPENAI_STD

NAMES = ["cat", "dog", "car", "tree", "boat", "house", "bird"]
TEMPLATES = ["a photo of a {}.", "a {} in a picture."]


def word_ids(sot: int, eot: int, length: int = 16):
    """A tokenizer for the transformers test models: ``sot``, one id per word (a hash), ``eot``, zeros."""

    def tokenize(texts):
        ids = torch.zeros(len(texts), length, dtype=torch.long)
        for row, text in enumerate(texts):
            words = [103 + zlib.crc32(w.encode()) % 880 for w in text.split()][: length - 2]
            ids[row, : len(words) + 2] = torch.tensor([sot, *words, eot])
        return ids

    return tokenize


def own_open_clip(model, x):
    return model.encode_image(x)


def own_hf_clip(model, x):
    return model.visual_projection(model.vision_model(pixel_values=x).pooler_output)


def own_blip(model, x):
    return model.vision_proj(model.vision_model(pixel_values=x)[0][:, 0])


FAMILIES = {
    "open_clip ViT": (tiny_clip, lambda: open_clip.get_tokenizer("ViT-B-32"), own_open_clip),
    "open_clip ResNet": (tiny_resnet_clip, lambda: open_clip.get_tokenizer("ViT-B-32"), own_open_clip),
    "timm tower (EVA02)": (tiny_eva02, lambda: open_clip.get_tokenizer("ViT-B-32"), own_open_clip),
    "transformers CLIP": (tiny_hf_clip, lambda: word_ids(998, 999), own_hf_clip),
    "transformers BLIP": (tiny_blip, lambda: word_ids(101, 102), own_blip),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """``images/<cat|dog>/<n>.png`` (random smooth pictures of several sizes) and object masks."""
    root = tmp_path_factory.mktemp("families")
    rng = np.random.default_rng(0)
    for n, (h, w) in enumerate([(40, 56), (64, 48), (50, 50), (72, 40)]):
        label = NAMES[n % 2]
        coarse = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR))
        mask = np.zeros((h, w), np.uint8)
        mask[h // 4 : h // 2, w // 3 : w // 2 + 5] = 255
        for kind, array in (("images", image), ("masks", mask)):
            (root / kind / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / kind / label / f"{n}.png")
    return root


@pytest.mark.parametrize("family", list(FAMILIES))
def test_faithfulness_and_localisation_run_for_every_family(family, folder):
    build, tokenizer_of, own_forward = FAMILIES[family]
    torch.manual_seed(3)
    model, tokenizer = build(), tokenizer_of()
    geometry = ev.Geometry.of(model)
    assert (geometry.mean, geometry.std) == (OPENAI_MEAN, OPENAI_STD)  # what every family here declares
    dataset = ev.ImageFolder(folder / "images")
    result = ev.deletion_insertion(
        model, dataset, tokenizer=tokenizer, class_names=NAMES, templates=TEMPLATES, steps=4, eval_every=2, progress=False
    )
    assert result.hits["deletion"].shape == (len(dataset), 3, 2)
    evaluated = EvalModel(model, tokenizer)  # the evaluation's encoder equals the model's own forward
    x = evaluated.model_ready([ev.load_image(s.path) for s in dataset])
    with torch.no_grad():
        own = F.normalize(own_forward(model, x).float(), dim=-1)
    torch.testing.assert_close(evaluated.encode_images(x, batch_size=3), own, atol=1e-5, rtol=1e-4)
    weights = ev.ZeroShotClassifier(model, tokenizer, NAMES, TEMPLATES).weights
    expected = []
    for sample in dataset:
        x = torch.from_numpy(ev.model_ready(ev.load_image(sample.path), geometry.size, geometry.mean, geometry.std))
        with torch.no_grad():
            logits = (F.normalize(own_forward(model, x).float(), dim=-1) @ weights.T)[0].numpy()
        others = np.delete(logits, sample.label)
        expected.append([ref.hit_at(logits[sample.label], others, k) for k in (1, 5)])
    expected = np.array(expected, dtype=float)  # None (a near tie) becomes NaN
    decided = ~np.isnan(expected)
    assert decided.mean() > 0.5
    np.testing.assert_array_equal(result.hits["deletion"][:, 0][decided], expected[decided])
    assert np.isin(result.hits["insertion"], (0.0, 1.0)).all()
    masks = ev.MaskFolder(folder / "images", folder / "masks")
    local = ev.localization(model, masks, tokenizer=tokenizer, text="a photo of a cat", progress=False)
    for values in local.values.values():
        assert values.shape == (len(masks),) and ((values >= 0) & (values <= 1)).all()


def test_geometry_reads_the_mean_and_std_the_model_declares():
    """open_clip's ``preprocess_cfg`` (timm towers included), timm's ``pretrained_cfg`` for a bare
    classifier's normalisation, and the shipped gradeclip-synth's own training normalisation."""
    import gradeclip
    from gradeclip.preprocessing import normalisation
    from tiny_models import tiny_timm_classifier

    for model in (tiny_clip(), tiny_eva02()):
        model.visual.preprocess_cfg = {"size": (32, 32), "mean": (0.1, 0.2, 0.3), "std": (0.4, 0.5, 0.6)}  # as open_clip sets it
        assert ev.Geometry.of(model) == ev.Geometry(32, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    classifier = tiny_timm_classifier()
    assert normalisation(classifier) == (tuple(classifier.pretrained_cfg["mean"]), tuple(classifier.pretrained_cfg["std"]))
    synth, _, _ = gradeclip.load("gradeclip-synth")
    assert ev.Geometry.of(synth) == ev.Geometry(64, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))  # synth/model.py DEFAULT_CONFIG
    squashed = tiny_clip()
    squashed.visual.preprocess_cfg = {"size": (32, 32), "resize_mode": "squash"}
    with pytest.raises(gradeclip.InputError, match="resize_mode='squash'"):
        ev.Geometry.of(squashed)
