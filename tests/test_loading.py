"""gradeclip.load: random weights, local checkpoints (safe by default), tags that fail fast offline."""

from __future__ import annotations

import time

import pytest
import torch
from safetensors.torch import save_file

import gradeclip
from gradeclip import InputError, ModelLoadError

ARCH = "ViT-S-32"  # the smallest class-token ViT in open_clip's registry


@pytest.fixture(scope="module")
def random_model():
    torch.manual_seed(7)
    return gradeclip.load(ARCH)


def test_random_weights(random_model):
    model, preprocess, tokenizer = random_model
    assert not model.training
    from PIL import Image

    x = preprocess(Image.new("RGB", (300, 200), "red"))
    assert x.shape == (3, 224, 224)
    assert tokenizer(["a cat"]).shape == (1, 77)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_local_safetensors_checkpoint(random_model, tmp_path):
    model = random_model[0]
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded, _, _ = gradeclip.load(ARCH, pretrained=path)
    assert _same_weights(model, loaded)


def test_local_torch_checkpoint_with_state_dict_key(random_model, tmp_path):
    model = random_model[0]
    path = tmp_path / "epoch_3.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    loaded, _, _ = gradeclip.load(ARCH, pretrained=str(path))
    assert _same_weights(model, loaded)


class Payload:
    """Any class instance in a checkpoint needs pickle code to load."""


def test_pickled_objects_are_refused_by_default(random_model, tmp_path):
    path = tmp_path / "unsafe.pt"
    torch.save({"state_dict": random_model[0].state_dict(), "extra": Payload()}, path)
    with pytest.raises(ModelLoadError, match="allow_pickle=True"):
        gradeclip.load(ARCH, pretrained=path)


def test_mismatched_checkpoint(tmp_path):
    path = tmp_path / "wrong.safetensors"
    save_file({"visual.proj": torch.zeros(2, 2)}, str(path))
    with pytest.raises(ModelLoadError, match="could not load"):
        gradeclip.load(ARCH, pretrained=path)


def test_missing_file():
    with pytest.raises(ModelLoadError, match="does not exist"):
        gradeclip.load(ARCH, pretrained="/no/such/checkpoint.bin")


def test_unknown_architecture_suggests_names():
    with pytest.raises(ModelLoadError, match="Did you mean.*ViT-B-32"):
        gradeclip.load("ViT-B-3")


def test_unknown_tag_lists_tags():
    with pytest.raises(ModelLoadError, match="its tags: .*openai"):
        gradeclip.load("ViT-B-32", pretrained="imagenet")


def test_bad_precision():
    with pytest.raises(InputError, match="precision"):
        gradeclip.load(ARCH, precision="fp8")


def test_tag_fails_fast_offline(monkeypatch):
    """An unreachable hub (here: a host that never resolves) fails within seconds, saying how to use a local file."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("gradeclip.loading.HUB_HOST", ("hub.invalid", 443))
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match="pretrained='/path/to/file'"):
        gradeclip.load("ViT-B-32", pretrained="openai")
    assert time.monotonic() - start < 10


def test_precision_casts_every_weight():
    model, _, _ = gradeclip.load(ARCH, precision="bf16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
