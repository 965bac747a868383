"""Runs that cannot lie (issue 16): every store and result names the model it explained, random
weights are the same in every process, messages say what is true, and every input is accounted
for in the store."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_clip
from PIL import Image

import gradeclip
from gradeclip import InputError, ModelLoadError
from gradeclip.cli import main

ARCH = "ViT-S-32"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 3, "head_width": 16, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 3},
}


def model_folder(folder: Path, weights_seed: int | None) -> Path:
    """An open_clip model folder of the tiny CLIP: its config, and weights drawn from
    ``weights_seed`` (None: no weights file, so the model is random)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CONFIG, "preprocess_cfg": {}}))
    if weights_seed is not None:
        torch.manual_seed(weights_seed)
        save_file({k: v.contiguous() for k, v in tiny_clip().state_dict().items()}, folder / "open_clip_model.safetensors")
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Six noise images with captions, in a folder."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"a photo number {i}\n")
    return folder


def model_identity(model):
    from gradeclip.loading import model_identity  # imported here, so each test shows its own failure on an older gradeclip

    return model_identity(model)


def no_loading(*args, **kwargs):
    raise AssertionError("the model was loaded")


def explain(*args: str) -> int:
    return main(["explain", "--quiet", "--workers", "0", *args])


def store_rows(root: Path) -> tuple[list[tuple], np.ndarray]:
    store = gradeclip.Store(root)
    frame = store.to_pandas()
    rows = list(frame[["key", "text", "score", "model_score"]].itertuples(index=False))
    return rows, store.maps(list(range(len(store))))


# bug 1: random weights are the same in every process and every run


@pytest.mark.slow  # three ViT-S-32 loads
def test_random_weights_are_seeded_and_leave_the_callers_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = model_identity(gradeclip.load(ARCH)[0])
    assert torch.equal(torch.rand(3), expected_next)  # the caller's random state is untouched
    second = model_identity(gradeclip.load(ARCH)[0])
    other = model_identity(gradeclip.load(ARCH, seed=1)[0])
    assert first.weights == "random, seed 0" and first.random
    assert first.fingerprint == second.fingerprint != other.fingerprint


def test_explain_twice_with_random_weights_gives_identical_stores(tmp_path, images, capsys):
    folder = model_folder(tmp_path / "random-model", weights_seed=None)
    for name in ("a", "b"):
        assert explain("--model", str(folder), "--data", str(images), "--texts", "a photo", "--out", str(tmp_path / name)) == 0
    assert "random weights (random, seed 0)" in capsys.readouterr().err
    (rows_a, maps_a), (rows_b, maps_b) = store_rows(tmp_path / "a"), store_rows(tmp_path / "b")
    assert rows_a == rows_b
    np.testing.assert_array_equal(maps_a, maps_b)
    config = gradeclip.Store(tmp_path / "a").manifest["config"]
    assert config["weights"] == "random, seed 0" and len(config["parameters_sha256"]) == 64


def test_resume_with_another_checkpoint_is_refused(tmp_path, images, capsys):
    folder = model_folder(tmp_path / "model", weights_seed=1)
    out = tmp_path / "store"
    args = ["--model", str(folder), "--data", str(images), "--texts", "a photo", "--out", str(out), "--shard-size", "2"]
    assert explain(*args) == 0
    before = gradeclip.Store(out).manifest["config"]["parameters_sha256"]
    (out / "parts" / "c0000001.parquet").unlink()  # as if killed before this chunk finished
    model_folder(folder, weights_seed=2)  # the same path now holds other weights
    capsys.readouterr()
    assert explain(*args) == 2
    err = capsys.readouterr().err
    assert "different settings" in err and f"parameters_sha256: store has \"{before}\"" in err
    assert "weights_sha256: store has" in err


def test_ranks_with_different_models_are_refused(monkeypatch, tmp_path, images):
    """Each rank gathers every rank's input and parameter fingerprints; a mismatch names both."""
    from gradeclip import pipeline
    from gradeclip.distributed import Ranks

    config = {"input": "data", "parameters_sha256": "a" * 64, "model": "m", "weights": "random, seed 0"}
    monkeypatch.setattr(pipeline, "gather", lambda ranks, value: [value, ("data", "b" * 64)])
    source = gradeclip.data.open_source(str(images))
    with pytest.raises(ModelLoadError, match=f"sha256:{'b' * 64} on rank 1, sha256:{'a' * 64} on rank 0"):
        pipeline._same_everywhere(Ranks(0, 2, torch.device("cpu")), source, config)


# bug 2: no false "random weights" warnings


@pytest.mark.slow  # a ViT-S-32 load and its checkpoint
def test_shipped_and_file_weights_are_not_called_random(tmp_path, images, capsys, caplog):
    assert explain("--model", "gradeclip-synth", "--data", str(images), "--texts", "a photo", "--out", str(tmp_path / "s")) == 0
    assert "random" not in capsys.readouterr().err
    assert gradeclip.Store(tmp_path / "s").manifest["config"]["weights"] == "shipped"
    model = gradeclip.load(ARCH)[0]
    path = tmp_path / "w.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    with caplog.at_level(logging.WARNING):
        loaded = gradeclip.load(ARCH, pretrained=path)[0]
    assert "No pretrained weights" not in caplog.text
    identity = model_identity(loaded)
    assert identity.weights == f"file {path.resolve()}" and not identity.random and len(identity.file_sha256) == 64


# bug 5: truncation names the user's key, is recorded, and explain_image warns like explain_text


def test_truncated_captions_are_recorded_with_their_key(tmp_path, images, capsys):
    long = " ".join(f"word{i}" for i in range(100))
    table = tmp_path / "t.csv"
    table.write_text("key,image,caption\n" + "".join(f"{10 + i},{images}/img{i}.png,{long if i == 1 else 'a photo'}\n" for i in range(3)))
    folder = model_folder(tmp_path / "model", weights_seed=1)
    assert explain("--model", str(folder), "--data", str(table), "--out", str(tmp_path / "s")) == 0
    err = capsys.readouterr().err
    assert "key '11': the text is longer than the context length (77 tokens" in err and "texts[" not in err
    frame = gradeclip.Store(tmp_path / "s").to_pandas().set_index("key")
    assert re.search(r"truncated after 'word\d+'; the words after it are not explained", frame.loc["11", "warnings"][0])
    assert frame.loc["10", "warnings"] is None


def test_explain_image_warns_about_truncation_like_explain_text():
    model, _, tokenizer = gradeclip.load("gradeclip-synth")  # context length 48
    explainer = gradeclip.Explainer(model, tokenizer)
    text = "a red circle " * 30
    image = torch.zeros(1, 3, 64, 64)
    with pytest.warns(UserWarning, match=r"texts\[1\] is longer than the context length \(48 tokens"):
        explainer.explain_image(image, ["a circle", text])
    with pytest.warns(UserWarning, match=r"texts\[1\] is longer than the context length \(48 tokens"):
        explainer.explain_text(image, ["a circle", text])


# bug 6: defaults that fit the model, errors that name the flag


@pytest.mark.slow  # a dataset run and a text-faithfulness run
def test_text_layers_default_to_what_the_model_has(tmp_path, images, capsys):
    model, _, tokenizer = gradeclip.load("gradeclip-synth")  # 3 text blocks
    explainer = gradeclip.Explainer(model, tokenizer)
    image = torch.zeros(1, 3, 64, 64)
    assert explainer.explain_text(image, ["a red circle"]).options["n_layers"] == 3
    assert explainer.explain_pair(image, "a red circle").textual.options["n_layers"] == 3
    assert explain("--model", "gradeclip-synth", "--data", str(images), "--text-maps", "--out", str(tmp_path / "s")) == 0
    frame = gradeclip.Store(tmp_path / "s").to_pandas()
    assert list(frame["words"].iloc[0]) == ["a", "photo", "number", "0"]  # its caption file, "a photo number 0"
    table = tmp_path / "c.csv"
    Image.new("RGB", (64, 64), "red").save(tmp_path / "r.png")
    table.write_text("image,caption\nr.png,a red circle\n")
    base = ["eval", "text-faithfulness", "--model", "gradeclip-synth", "--captions", str(table), "--no-progress", "--steps", "1"]
    assert main([*base, "--out", str(tmp_path / "e"), "--n-text-layers", "8"]) == 2
    assert "--n-text-layers must be in 1..3 (the model's text blocks), got 8" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "e")]) == 0
    err = capsys.readouterr().err
    assert "RANDOM" not in err and "random" not in err
    result = json.loads(next((tmp_path / "e").glob("*.json")).read_text())
    assert result["settings"]["options"]["n_text_layers"] == 3
    assert "gradeclip-synth, shipped weights (file sha256:" in result["settings"]["model"] and "parameters sha256:" in result["settings"]["model"]


# bug 8: fail fast


def test_bad_settings_are_refused_before_the_weights_load(monkeypatch, tmp_path, images, capsys):
    monkeypatch.setattr("gradeclip.pipeline.load", no_loading)
    folder = model_folder(tmp_path / "model", weights_seed=1)
    common = ["--model", str(folder), "--data", str(images), "--texts", "a photo"]
    cases = [
        (["--method", "bogus"], "unknown method"),
        (["--option", "bogus=1"], "no option 'bogus'"),
        (["--n-layers", "9"], "n_layers must be an integer in 1..3"),
        (["--heads", "model", "--spatial", "none", "--option", "qk_space=\"nowhere\""], "qk_space"),
        (["--text-maps", "--text-layers", "9"], "text_layers (--text-layers) must be in 1..3"),
    ]
    for i, (flags, message) in enumerate(cases):
        assert explain(*common, *flags, "--out", str(tmp_path / f"s{i}")) == 2, flags
        assert message in capsys.readouterr().err, flags
        assert not (tmp_path / f"s{i}").exists()


def test_eval_refuses_a_bad_method_or_option_before_the_weights_load(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr("gradeclip.loading.load", no_loading)
    base = ["eval", "localization", "--model", "gradeclip-synth", "--images", str(tmp_path), "--masks", str(tmp_path), "--out", str(tmp_path / "e")]
    assert main([*base, "--method", "bogus"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert main([*base, "--method", "gradcam", "--option", "heads=model"]) == 2
    assert "method 'gradcam' has no option 'heads'" in capsys.readouterr().err


def test_a_finished_store_is_reported_without_loading_the_model(monkeypatch, tmp_path, images, capsys):
    folder = model_folder(tmp_path / "model", weights_seed=1)
    args = ["--model", str(folder), "--data", str(images), "--texts", "a photo", "--out", str(tmp_path / "s")]
    assert explain(*args) == 0
    capsys.readouterr()
    monkeypatch.setattr("gradeclip.pipeline.load", no_loading)
    assert explain(*args) == 0
    assert "already complete: nothing to do (the model was not loaded)" in capsys.readouterr().out


def test_offline_hub_names_fail_in_seconds(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # as for a user who never set it
    monkeypatch.setattr("gradeclip.loading.HUB_HOST", ("hub.invalid", 443))
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match="hub is unreachable.*local-dir:/path/to/folder"):
        gradeclip.load("hf-hub:timm/ViT-B-16-SigLIP")
    assert time.monotonic() - start < 10


def test_a_missing_gpu_is_an_input_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="device 'cuda' asked for, but CUDA is not available here"):
        gradeclip.load("gradeclip-synth", device="cuda")


# bug 9: summaries count the whole job


def test_summary_counts_the_store_this_run_and_what_was_skipped(tmp_path, images, capsys):
    (tmp_path / "data").mkdir()
    for path in images.iterdir():
        (tmp_path / "data" / path.name).write_bytes(path.read_bytes())
    (tmp_path / "data" / "broken.png").write_bytes(b"not an image")
    folder = model_folder(tmp_path / "model", weights_seed=1)
    args = ["--model", str(folder), "--data", str(tmp_path / "data"), "--texts", "a photo", "--out", str(tmp_path / "s"), "--shard-size", "3"]
    assert explain(*args) == 0
    (tmp_path / "s" / "parts" / "c0000000.parquet").unlink()  # the chunk with broken.png
    capsys.readouterr()
    assert explain(*args) == 0
    out = capsys.readouterr().out
    assert "7 samples (6 explained, 1 failed), 6 explained pairs" in out
    assert "this run: 3 samples done (2 explained, 1 failed)" in out and "4 skipped (already in the store)" in out


# bug 3: high-bit-depth images keep their pixels; all-zero maps are flagged


def encoded(array: np.ndarray, format: str) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format)
    return buffer.getvalue()


def test_high_bit_depth_images_are_scaled_to_eight_bits():
    from gradeclip.data import decode_image

    ramp = (np.arange(40 * 48).reshape(40, 48) * 34).astype(np.uint16)  # 0 .. 65,246
    expected = np.rint(ramp.astype(np.float64) * 255 / 65535).astype(np.uint8)
    for image in (decode_image(encoded(ramp, "PNG")), decode_image(encoded(ramp.astype(np.int32), "TIFF"))):
        pixels = np.asarray(image)
        assert image.mode == "RGB" and pixels.shape == (40, 48, 3)
        np.testing.assert_array_equal(pixels[..., 0], expected)
        np.testing.assert_array_equal(pixels[..., 2], expected)
    unit = ramp.astype(np.float32) / 65535
    np.testing.assert_array_equal(np.asarray(decode_image(encoded(unit, "TIFF")))[..., 1], expected)
    with pytest.raises(gradeclip.errors.UnreadableImage, match="no known scale to 8 bits"):
        decode_image(encoded(unit * 1000, "TIFF"))


def test_all_zero_maps_are_flagged_in_the_store(tmp_path, images):
    """A model whose last block's values are zero gives all-zero Grad-ECLIP maps: each row says so."""
    model, preprocess, tokenizer = gradeclip.load(f"local-dir:{model_folder(tmp_path / 'model', weights_seed=1)}")
    attention = model.visual.transformer.resblocks[-1].attn
    width = attention.embed_dim
    with torch.no_grad():
        attention.in_proj_weight[2 * width :] = 0
        attention.in_proj_bias[2 * width :] = 0
    job = gradeclip.ExplainJob(model="tiny", data=str(images), out=str(tmp_path / "s"), texts=["a photo"], workers=0, progress=False)
    gradeclip.explain_dataset(job, loaded=(model, preprocess, tokenizer))
    store = gradeclip.Store(tmp_path / "s")
    assert not store.maps(list(range(len(store)))).any()
    assert all(w is not None and any(x.startswith("all-zero map") for x in w) for w in store.to_pandas()["warnings"])


# bugs 4 and 7: URLs are refused as such; error rows keep their caption


def test_urls_and_broken_images_are_error_rows_with_their_captions(tmp_path, images):
    table = tmp_path / "t.csv"
    (tmp_path / "broken.png").write_bytes(b"not an image")
    table.write_text(
        f"image,caption\n{images}/img0.png,a photo\nhttps://example.com/x.jpg,a picture from the web\nbroken.png,a broken photo\n"
    )
    folder = model_folder(tmp_path / "model", weights_seed=1)
    assert explain("--model", str(folder), "--data", str(table), "--out", str(tmp_path / "s")) == 0
    frame = gradeclip.Store(tmp_path / "s").to_pandas().set_index("key")
    assert list(frame["status"]) == ["ok", "error", "error"]
    assert frame.loc["1", "error"].startswith("URLs are not fetched ('https://example.com/x.jpg')")
    assert frame.loc["1", "path"] == "https://example.com/x.jpg"
    assert list(frame["text"]) == ["a photo", "a picture from the web", "a broken photo"]
