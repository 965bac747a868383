"""Hugging Face models by name or folder (``gradeclip.load``), their tokenizers' words (byte-level BPE
and SentencePiece/Unigram offsets), and the offline errors. Models and tokenizers are built here
(docs/examples/hf_offline.py): random weights, no download."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from test_text_words import CASES

import gradeclip
from gradeclip.cli import main
from gradeclip.words import HFTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "examples"))
import hf_offline  # noqa: E402

#: cases whose words depend on open_clip's ftfy/HTML cleaning, which CLIP's Hugging Face tokenizer does not do
NEEDS_FTFY = {"HTML entity", "mojibake repaired across a space"}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return hf_offline.save_tiny_clip(tmp_path_factory.mktemp("hf-clip"))


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory) -> Path:
    return hf_offline.save_tiny_blip(tmp_path_factory.mktemp("hf-blip"))


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory) -> Path:
    return hf_offline.save_tiny_siglip(tmp_path_factory.mktemp("hf-siglip"))


@pytest.fixture(scope="module")
def bpe() -> HFTokenizer:
    return HFTokenizer(hf_offline.clip_bpe_tokenizer(), 77)


@pytest.fixture(scope="module")
def unigram() -> HFTokenizer:
    return HFTokenizer(hf_offline.unigram_tokenizer(), 32)


def photo(height: int = 50, width: int = 70) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8))


def check_partition(tokenizer: HFTokenizer, caption: str, context_length: int) -> None:
    """Words are the caption's substrings at their spans, in order, stripped; each kept token
    between start and end belongs to exactly one word; the tokens are the tokenizer's ids."""
    alignment = tokenizer.align(caption, context_length)
    ids = tokenizer([caption], context_length)[0]
    eot, first = alignment.eot, alignment.first
    assert (first == 0 or int(ids[0]) == tokenizer.sot_token_id) and int(ids[eot]) == tokenizer.eot_token_id
    assert [p for pos in alignment.positions for p in pos] == list(range(first, eot))
    assert alignment.tokens[first:eot] == [tokenizer.tokenizer.decode([int(i)]).strip() for i in ids[first:eot]]
    before = 0
    for (start, end), word in zip(alignment.spans, alignment.words):
        assert caption[start:end] == word and start >= before and word.strip() == word
        before = end


@pytest.mark.parametrize("name", [n for n in CASES if n not in NEEDS_FTFY])
def test_byte_level_bpe_words_match_open_clip(bpe, tokenizer, name):
    """Built from open_clip's vocabulary, the Hugging Face tokenizer gives open_clip's ids, and the
    words found from its offsets are the ones open_clip's tokenizer gives (tests/test_text_words.py)."""
    caption, expected = CASES[name]
    assert bpe([caption], 77).tolist()[0][: len(tokenizer.encode(caption)) + 2] == tokenizer([caption])[0][: len(tokenizer.encode(caption)) + 2].tolist()
    assert bpe.align(caption).words == expected
    check_partition(bpe, caption, 77)


def test_sentencepiece_words(unigram):
    caption = "A Dog, a cat and (an owl): friends!"
    alignment = unigram.align(caption)
    assert alignment.words == ["A", "Dog", ",", "a", "cat", "and", "(", "an", "owl", "):", "friends", "!"]
    assert alignment.tokens[0] == "[CLS]" and alignment.tokens[-1] == "[SEP]"
    check_partition(unigram, caption, 32)


def test_sentencepiece_words_without_a_start_token():
    """SigLIP's layout: the caption's tokens start at position 0, ``</s>`` after them."""
    siglip = HFTokenizer(hf_offline.unigram_tokenizer(siglip=True), 32)
    caption = "A Dog, a cat and (an owl): friends!"
    alignment = siglip.align(caption)
    assert siglip.sot_token_id is None and alignment.first == 0 and alignment.positions[0][0] == 0
    assert alignment.words == ["A", "Dog", ",", "a", "cat", "and", "(", "an", "owl", "):", "friends", "!"]
    assert alignment.tokens[-1] == "</s>"
    check_partition(siglip, caption, 32)
    cut = siglip.align("one two three four five six", 4)  # room for 3 tokens, then </s>
    assert cut.truncated and cut.eot == 3 and siglip(["one two three four five six"], 4)[0, 3] == siglip.eot_token_id


@settings(max_examples=80, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40), st.sampled_from([77, 7]))
def test_any_text_partitions_its_tokens(bpe, unigram, caption, context_length):
    if not caption.strip():
        return
    check_partition(bpe, caption, context_length)
    check_partition(unigram, caption, min(context_length, 32))


def test_truncated_words(bpe):
    alignment = bpe.align("one two three four five six", 6)  # room for 4 tokens
    assert alignment.truncated and alignment.words == ["one", "two", "three", "four"] and alignment.eot == 5
    cut = bpe.align("a hippopotamus, in the river", 5)  # hippo|potam|us cut after 'potam'
    assert cut.words == ["a", "hippopotamus"] and cut.positions == [(1,), (2, 3)]


def test_load_clip_folder_explains_like_the_model(clip_dir):
    model, preprocess, tokenizer = gradeclip.load(str(clip_dir))
    assert type(model).__name__ == "CLIPModel" and isinstance(tokenizer, HFTokenizer)
    images = torch.stack([preprocess(photo()), preprocess(photo(80, 40))])
    assert images.shape == (2, 3, 32, 32)
    texts = ["a cat on a sofa", "A rocket, launching!"]
    explainer = gradeclip.Explainer(model, tokenizer)
    res = explainer.explain_image(images, texts, heads="model")
    with torch.no_grad():  # the model's own cosine, through transformers' own API
        ids = tokenizer(texts)
        image_emb = model.get_image_features(pixel_values=images).pooler_output
        want = F.normalize(image_emb, dim=-1) @ F.normalize(model.get_text_features(input_ids=ids).pooler_output, dim=-1).T
    torch.testing.assert_close(res.model_scores, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(res.scores, want, atol=1e-4, rtol=1e-4)
    text = explainer.explain_text(images, texts, n_layers=2)
    words = text.words(1, 1)
    assert [w for w, _ in words] == ["A", "rocket", ",", "launching", "!"]
    assert sum(v for _, v in words) == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(text.model_scores, want, atol=1e-5, rtol=1e-5)


def test_a_raw_transformers_tokenizer_is_wrapped(clip_dir):
    model, _, _ = gradeclip.load(str(clip_dir))
    explainer = gradeclip.Explainer(model, hf_offline.clip_bpe_tokenizer())
    assert isinstance(explainer.tokenizer, HFTokenizer) and explainer.tokenizer.context_length == 77
    words = explainer.explain_text(torch.randn(1, 3, 32, 32), "two dogs", n_layers=1).words(0, 0)
    assert [w for w, _ in words] == ["two", "dogs"]


def test_load_blip_folder_sentencepiece_words(blip_dir):
    model, preprocess, tokenizer = gradeclip.load(str(blip_dir))
    assert type(model).__name__ == "BlipForImageTextRetrieval"
    image = preprocess(photo())[None]
    pair = gradeclip.Explainer(model, tokenizer).explain_pair(image, "A dog, playing!", n_text_layers=2)
    assert [w for w, _ in pair.words] == ["A", "dog", ",", "playing", "!"]
    assert sum(v for _, v in pair.words) == pytest.approx(1.0, abs=1e-5)
    assert pair.map.shape == (4, 4)


def test_load_siglip_folder_explains_like_the_model(siglip_dir):
    model, preprocess, tokenizer = gradeclip.load(str(siglip_dir))
    assert type(model).__name__ == "SiglipModel" and tokenizer.context_length == 64
    images = torch.stack([preprocess(photo()), preprocess(photo(80, 40))])
    assert images.shape == (2, 3, 32, 32)
    texts = ["a cat on a sofa", "A rocket, launching!"]
    explainer = gradeclip.Explainer(model, tokenizer)
    res = explainer.explain_image(images, texts, heads="model")
    with torch.no_grad():  # the sigmoid model's own cosine (before logit_scale / logit_bias), padded to max_length
        ids = tokenizer.tokenizer(texts, padding="max_length", max_length=64, return_tensors="pt")["input_ids"]
        out = model(input_ids=ids, pixel_values=images)
    want = out.image_embeds @ out.text_embeds.T
    torch.testing.assert_close(res.model_scores, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(res.scores, want, atol=1e-4, rtol=1e-4)
    assert res.maps.shape == (2, 2, 4, 4)
    text = explainer.explain_text(images, texts, n_layers=3)
    words = text.words(1, 1)
    assert [w for w, _ in words] == ["A", "rocket", ",", "launching", "!"]
    assert sum(v for _, v in words) == pytest.approx(1.0, abs=1e-5)
    first = tokenizer.align(texts[1]).positions[0]
    assert first[0] == 0 and words[0][1] == pytest.approx(float(text.importance[1, 1, list(first)].sum()), abs=1e-6)
    torch.testing.assert_close(text.model_scores, want, atol=1e-5, rtol=1e-5)


def test_offline_hub_id_fails_fast_with_instructions():
    with pytest.raises(gradeclip.ModelLoadError, match=r"(?s)local Hugging Face cache.*save_pretrained.*gradeclip.load\('/path/to/folder'\)"):
        gradeclip.load("nobody-here/clip-that-is-not-cached")


def test_folder_problems_are_named(clip_dir, tmp_path):
    (tmp_path / "config.json").write_text((clip_dir / "config.json").read_text())
    for name in ("model.safetensors",):
        (tmp_path / name).write_bytes((clip_dir / name).read_bytes())
    with pytest.raises(gradeclip.ModelLoadError, match="tokenizer of .* has no vocabulary.*save_pretrained"):
        gradeclip.load(str(tmp_path))
    with pytest.raises(gradeclip.ModelLoadError, match="pretrained="):
        gradeclip.load(str(clip_dir), pretrained="openai")
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(gradeclip.UnsupportedModelError, match="'bert' model.*CLIPModel.*SiglipModel \\('siglip'\\)"):
        gradeclip.load(str(other))


def test_cli_takes_a_hugging_face_folder(clip_dir, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        photo(40 + 10 * i, 60).save(photos / f"p{i}.png")
    out = tmp_path / "store"
    assert main(["explain", "--quiet", "--model", str(clip_dir), "--data", str(photos), "--texts", "a cat", "a dog", "--out", str(out), "--device", "cpu"]) == 0
    frame = gradeclip.Store(out).to_pandas()
    assert len(frame) == 4 and set(frame["status"]) == {"ok"}
