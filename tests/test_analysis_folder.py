"""``labelled_scenes``: a labelled image folder (attributes.json + images + mask PNGs) written from
synthetic scenes gives the same attribute report as the same scenes built in code, its masks land
in the model's geometry, and bad entries are refused naming the file and key."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import gradeclip
from gradeclip import InputError
from gradeclip.analysis import attributes, labelled_scenes, synth_scenes
from gradeclip.cli import main
from gradeclip.loading import load


def write_folder(folder, scenes, scale=1):
    """Each synthetic scene as ``sN.png`` with one mask PNG per object (pixels repeated ``scale``×);
    returns the attributes.json entries written."""
    def up(a):
        return np.repeat(np.repeat(a, scale, 0), scale, 1)

    folder.mkdir()
    entries = []
    for n, scene in enumerate(scenes):
        Image.fromarray(up(scene.image)).save(folder / f"s{n}.png")
        objects = []
        for k, obj in enumerate(scene.objects):
            Image.fromarray(up(scene.masks[k]).astype(np.uint8) * 255).save(folder / f"s{n}_m{k}.png")
            objects.append({"mask": f"s{n}_m{k}.png", "colour": obj.colour, "shape": obj.shape, "size": obj.size, "region": obj.region})
        entries.append({"image": f"s{n}.png", "objects": objects})
    (folder / "attributes.json").write_text(json.dumps(entries))
    return entries


def first_scenes(count):
    from gradeclip.synth import make_scene

    out, index = [], 0
    while len(out) < count:
        scene = make_scene(index, "test", 0)
        index += 1
        if len(scene.objects) >= 2:
            out.append(scene)
    return out


@pytest.fixture(scope="module")
def synth_model():
    model, preprocess, tokenizer = load("gradeclip-synth")
    return gradeclip.Explainer(model, tokenizer), preprocess


def test_folder_report_equals_the_scenes_built_in_code(synth_model, tmp_path):
    explainer, preprocess = synth_model
    write_folder(tmp_path / "f", first_scenes(2))
    from_folder = attributes(explainer, labelled_scenes(tmp_path / "f", preprocess=preprocess), kinds=("colour", "size", "position"))
    in_code = attributes(explainer, synth_scenes(2, preprocess=preprocess), kinds=("colour", "size", "position"))
    assert len(from_folder.records) == len(in_code.records) > 0
    for a, b in zip(from_folder.records, in_code.records):
        assert {k: v for k, v in a.items() if k != "scene" and not isinstance(v, float)} == {k: v for k, v in b.items() if k != "scene" and not isinstance(v, float)}
        for key, value in b.items():
            if isinstance(value, float):
                assert a[key] == pytest.approx(value, abs=1e-5, nan_ok=True), key


def test_folder_masks_follow_the_model_geometry(synth_model, tmp_path):
    _, preprocess = synth_model
    scenes = first_scenes(1)
    write_folder(tmp_path / "big", scenes, scale=2)  # 128×128 files; the model sees 64×64
    (scene,) = labelled_scenes(tmp_path / "big", preprocess=preprocess)
    assert scene.image.shape == (3, 64, 64) and scene.name == "s0.png"
    np.testing.assert_array_equal(scene.masks, scenes[0].masks)


def test_folder_bad_entries_are_refused(synth_model, tmp_path, capsys):
    _, preprocess = synth_model
    entries = write_folder(tmp_path / "f", first_scenes(1))
    assert main(["analyze", "attributes", "--model", "gradeclip-synth", "--folder", str(tmp_path / "f"), "--types", "colour", "--out", str(tmp_path / "ok")]) == 0
    assert "**colour**" in (tmp_path / "ok" / "attributes.md").read_text()
    del entries[0]["objects"][1]["region"]
    (tmp_path / "f" / "attributes.json").write_text(json.dumps(entries))
    with pytest.raises(InputError, match=r"attributes.json.*entry 0 \(s0.png\) object 1: missing .*region"):
        labelled_scenes(tmp_path / "f", preprocess=preprocess)
    entries[0]["objects"][1]["region"] = "top left"
    entries[0]["objects"][0]["mask"] = "nowhere.png"
    (tmp_path / "f" / "attributes.json").write_text(json.dumps(entries))
    with pytest.raises(InputError, match="nowhere.png"):
        labelled_scenes(tmp_path / "f", preprocess=preprocess)
    assert main(["analyze", "attributes", "--model", "gradeclip-synth", "--folder", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "--folder" in capsys.readouterr().err
