"""gradeclip.analysis (SPEC §11): each number against a direct computation from the Explainer's
own per-text results, the probe logic on hand-made scenes, the corpus statistics on hand-made
records, and resumable corpus runs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import gradeclip
from gradeclip import InputError
from gradeclip.analysis import LabelledScene, addibility, attributes, concreteness
from gradeclip.analysis.attribute_probes import probes
from gradeclip.analysis.word_concreteness import Normaliser, word_statistics
from gradeclip.cli import main
from gradeclip.data import open_source


def energy(raw: np.ndarray, mask: np.ndarray) -> float:
    """SPEC §8 energy-PG written out: bilinear upsampling (half-pixel), min-max, mass inside the mask."""
    up = F.interpolate(torch.from_numpy(raw)[None, None].float(), size=mask.shape, mode="bilinear", align_corners=False)[0, 0].double()
    span = up.max() - up.min()
    h = (up - up.min()) / span if span > 0 else torch.zeros_like(up)
    return float(h[torch.from_numpy(mask)].sum() / h.sum()) if h.sum() > 0 else 0.0


def test_addibility_numbers(tiny_model, tokenizer, tmp_path):
    explainer = gradeclip.Explainer(tiny_model, tokenizer)
    image = torch.randn(3, 32, 32)
    mask = np.zeros((50, 50), bool)
    mask[5:30, 10:40] = True
    reports = addibility(explainer, image, ["red toy", "feed the sheep"], mask=mask, figure=tmp_path / "grid.png")
    assert [r.words for r in reports] == [["red", "toy"], ["feed", "the", "sheep"]]
    for r in reports:
        alone = [explainer.explain_image(image[None], [t]).maps[0, 0].double().numpy() for t in [*r.words, r.phrase]]
        phrase = alone[-1].ravel()
        for w, got in zip(alone[:-1], r.word_cosine):
            assert got == pytest.approx(phrase @ w.ravel() / np.linalg.norm(phrase) / np.linalg.norm(w), abs=1e-4)
        total = np.sum(alone[:-1], axis=0).ravel()
        assert r.sum_cosine == pytest.approx(phrase @ total / np.linalg.norm(phrase) / np.linalg.norm(total), abs=1e-4)
        assert list(r.energy) == [*r.words, r.phrase]
        for text, m in zip(r.energy, alone):
            assert r.energy[text] == pytest.approx(energy(m.astype(np.float32), mask), abs=1e-4)
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InputError, match="one image"):
        addibility(explainer, torch.randn(2, 3, 32, 32), ["a"])


def _scene(objects, shape=(8, 8)):
    masks = np.zeros((len(objects), *shape), bool)
    for k in range(len(objects)):
        masks[k, k, k] = True  # one pixel each, distinct
    return LabelledScene(torch.zeros(3, 32, 32), masks, tuple(objects), "hand-made")


def test_probe_targets_and_discrimination():
    red_circle = {"colour": "red", "shape": "circle", "size": "small", "region": "top left"}
    blue_circle = {"colour": "blue", "shape": "circle", "size": "large", "region": "top right"}
    red_square = {"colour": "red", "shape": "square", "size": "small", "region": "bottom left"}
    twin = dict(red_circle, region="bottom right")
    scene = _scene([red_circle, blue_circle, red_square, twin])
    got = {(p.obj, p.kind): p for p in probes([scene])}
    colour = got[(0, "colour")]
    assert (colour.probe, colour.base, colour.attribute_words, colour.noun_words) == ("a red circle", "a circle", ("red",), ("circle",))
    assert colour.discriminating  # "a circle" also fits the blue circle
    assert colour.target.sum() == 2 and colour.target[0, 0] and colour.target[3, 3]  # both red circles are targets
    shape = got[(2, "shape")]
    assert (shape.probe, shape.base) == ("a red square", "red") and shape.discriminating and shape.target.sum() == 1
    position = got[(0, "position")]
    assert position.probe == "a circle in the top left" and position.attribute_words == ("top", "left")
    assert position.discriminating and position.target.sum() == 1
    size = got[(1, "size")]
    assert size.probe == "a large circle" and size.discriminating and size.target[1, 1] and size.target.sum() == 1
    alone = {(p.obj, p.kind): p for p in probes([_scene([red_square])])}
    assert not any(p.discriminating for p in alone.values())
    with pytest.raises(InputError, match="unknown attribute type"):
        probes([scene], ["material"])


def test_attributes_records_match_the_explainer(tiny_model, tokenizer, tmp_path):
    explainer = gradeclip.Explainer(tiny_model, tokenizer)
    objects = [{"colour": "red", "shape": "circle", "size": "small", "region": "top left"},
               {"colour": "blue", "shape": "circle", "size": "large", "region": "bottom right"}]
    masks = np.zeros((2, 40, 40), bool)
    masks[0, 2:15, 3:12] = True
    masks[1, 25:38, 20:39] = True
    torch.manual_seed(5)
    scenes = [LabelledScene(torch.randn(3, 32, 32), masks, tuple(objects), f"s{i}") for i in range(2)]
    report = attributes(explainer, scenes, kinds=("colour", "position"), max_targets=3, figure=tmp_path / "fig.png")
    assert len(report.records) == 2 * 2 * 2
    for rec in report.records[:4] + report.records[-2:]:
        scene = scenes[int(rec["scene"][1:])]
        target = masks[rec["object"]]
        for key, text in (("base", rec["base"]), ("probe", rec["probe"])):
            raw = explainer.explain_image(scene.image[None], [text]).maps[0, 0].numpy()
            assert rec[f"energy_{key}"] == pytest.approx(energy(raw, target), abs=2e-3)
        words = dict(explainer.explain_text(scene.image[None], [rec["probe"]], n_layers=3).words(0, 0))
        attr_words = [rec["value"]] if rec["type"] == "colour" else rec["value"].split()
        noun = words["circle"]
        attr = sum(words[w] for w in attr_words)
        assert rec["attribute_share"] == pytest.approx(attr / (attr + noun), abs=1e-5)
        assert rec["discriminating"]  # two circles: "a circle" fits both
    table = report.table("colour")
    assert [r["value"] for r in table] == ["blue", "red", "all"] and table[-1]["probes"] == 4
    assert table[-1]["energy_probe"] == pytest.approx(np.mean([r["energy_probe"] for r in report.records if r["type"] == "colour"]))
    assert "**position**" in report.markdown()
    assert (tmp_path / "fig.png").stat().st_size > 0


def test_word_statistics_by_hand():
    records = [
        {"key": "a", "words": ["A", "red", "Dog."], "importance": [0.1, 0.2, 0.4]},
        {"key": "b", "words": ["the", "dog", "runs", ","], "importance": [0.0, 0.5, 0.25, 0.25]},
        {"key": "c", "words": ["nothing"], "importance": [0.0]},  # all zero: left out
    ]
    stats = word_statistics(records, Normaliser("none"), top_n=3)
    assert stats[0] == {"word": "dog", "count": 2, "mean_importance": pytest.approx((1.0 + 1.0) / 2)}
    assert [s["word"] for s in stats[1:]] == ["a", "red"]  # count 1 each: alphabetical
    assert stats[1]["mean_importance"] == pytest.approx(0.25) and stats[2]["mean_importance"] == pytest.approx(0.5)


def _caption_table(tmp_path, count=6):
    from skimage import data as sd

    photos = [sd.astronaut(), sd.chelsea(), sd.coffee(), sd.rocket(), sd.astronaut()[::-1], sd.chelsea()[:, ::-1]]
    captions = ["a woman in a space suit", "a cat sitting on a table", "a cup of coffee", "a rocket on the launch pad", "an upside down woman", "a cat looking left"]
    rows = []
    for i in range(count):
        Image.fromarray(photos[i]).resize((48, 40)).save(tmp_path / f"p{i}.png")
        rows.append({"image": f"p{i}.png", "caption": captions[i]})
    rows.append({"image": "missing.png", "caption": "a lost image"})
    with open(tmp_path / "captions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["image", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    return tmp_path / "captions.csv", captions


@pytest.mark.slow
def test_concreteness_run_resumes_and_matches_the_explainer(tiny_model, tokenizer, tmp_path):
    import open_clip

    table, captions = _caption_table(tmp_path)
    preprocess = open_clip.image_transform(32, is_train=False)
    explainer = gradeclip.Explainer(tiny_model, tokenizer)
    source = open_source(table)
    out = tmp_path / "out"
    report = concreteness(explainer, source, preprocess, out, top_n=20, lemmatizer="none", chunk_size=3, batch_size=2, max_targets=2, progress=False)
    assert report.lemmatizer == "lower-case" and report.captions == 6
    assert [s["key"] for s in report.skipped] == ["6"]  # the row whose image is missing, with its reason
    assert report.skipped[0]["reason"]
    parts = sorted(p.name for p in (out / "parts").iterdir())
    assert parts == ["c0000000.json", "c0000001.json", "c0000002.json"]
    first = json.loads((out / "parts" / "c0000001.json").read_text())["records"][0]
    image = preprocess(Image.open(tmp_path / "p3.png").convert("RGB"))[None]
    words = explainer.explain_text(image, [captions[3]], n_layers=3).words(0, 0)
    assert first["words"] == [w for w, _ in words]
    np.testing.assert_allclose(first["importance"], [v for _, v in words], atol=1e-5)
    by_word = {w["word"]: w for w in report.words}
    assert by_word["cat"]["count"] == 2 and by_word["a"]["count"] == 7
    assert by_word["cat"]["concreteness"] == pytest.approx(4.86)
    rated = [w for w in report.words if not np.isnan(w["concreteness"])]
    from scipy.stats import linregress

    fit = linregress([w["concreteness"] for w in rated], [w["mean_importance"] for w in rated])
    assert report.regression["slope"] == pytest.approx(fit.slope) and report.regression["n"] == len(rated)
    assert report.regression["p"] == pytest.approx(fit.pvalue)
    for name in ("words.csv", "summary.json", "concreteness.png", "frequency.png"):
        assert (out / name).stat().st_size > 0
    # resume: a finished part is read back, a lost one is recomputed to the same numbers
    (out / "parts" / "c0000001.json").unlink()
    again = concreteness(explainer, open_source(table), preprocess, out, top_n=20, lemmatizer="none", chunk_size=3, batch_size=2, max_targets=2, progress=False)
    assert again.words == report.words
    with pytest.raises(InputError, match="other settings"):
        concreteness(explainer, open_source(table), preprocess, out, top_n=20, lemmatizer="none", chunk_size=4, progress=False)


@pytest.mark.slow
def test_analyze_command_runs_on_the_shipped_model(tmp_path, capsys):
    from gradeclip.synth import make_scene

    make_scene(3, "test").pil().save(tmp_path / "scene.png")
    assert main(["analyze", "addibility", "--model", "gradeclip-synth", "--image", str(tmp_path / "scene.png"), "--phrases", "purple star", "--out", str(tmp_path / "a")]) == 0
    rows = json.loads((tmp_path / "a" / "addibility.json").read_text())
    assert rows[0]["phrase"] == "purple star" and set(rows[0]) >= {"sum_cosine", "cosine[purple]", "cosine[star]"}
    assert main(["analyze", "attributes", "--model", "gradeclip-synth", "--scenes", "1", "--types", "colour", "size", "--out", str(tmp_path / "t")]) == 0
    text = (tmp_path / "t" / "attributes.md").read_text()
    assert "**colour**" in text and "**size**" in text and "**shape**" not in text
    assert main(["analyze", "attributes", "--model", "gradeclip-synth", "--scenes", "1", "--types", "material", "--out", str(tmp_path / "x")]) == 2
    assert "unknown attribute type" in capsys.readouterr().err


def test_analysis_doc_example_runs():
    """The Python example of docs/analysis.md runs as written."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "analysis.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    namespace: dict = {}
    exec(compile(block, "docs/analysis.md", "exec"), namespace)
    report = namespace["report"]
    assert report.words == ["orange", "star"] and set(report.energy) == {"orange", "star", "orange star"}
