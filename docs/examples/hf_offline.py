"""Small Hugging Face models built on this machine, with no download: random weights, real tokenizers.

Used by the example notebook (``hugging_face_and_photos.ipynb``) and the test suite. With internet, a
real model is one line instead: ``gradeclip.load("openai/clip-vit-base-patch32")``.

- :func:`clip_bpe_tokenizer`: CLIP's byte-level BPE tokenizer as a ``transformers`` tokenizer, built
  from the vocabulary that ships inside ``open_clip`` (the same ids as ``open_clip``'s tokenizer).
- :func:`unigram_tokenizer`: a SentencePiece-style Unigram tokenizer (``▁`` word boundaries, as in
  SigLIP or T5) trained on a few sentences, with BERT-style ``[CLS]`` / ``[SEP]`` around a caption,
  or SigLIP's layout (no start token, ``</s>`` after the caption).
- :func:`save_tiny_clip` / :func:`save_tiny_blip` / :func:`save_tiny_siglip`: a tiny random
  ``CLIPModel`` / BLIP retrieval model / ``SiglipModel`` saved with ``save_pretrained`` together with its tokenizer and image processor.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import torch

CLIP_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""  # open_clip's pre-split
CORPUS = [
    "a photo of a cat sitting on a red sofa",
    "an astronaut in a white suit next to a rocket",
    "two dogs playing with a ball in the park",
    "a bowl of fruit, apples and bananas, on a wooden table",
    "the city at night with cars and bright lights",
    "a small boat on a calm lake under the mountains",
    "A Dog, A Cat and An Owl: friends!",
]


def clip_bpe_tokenizer():
    """CLIP's tokenizer (``transformers`` ``CLIPTokenizer``, fast): lower-casing, open_clip's
    pre-split, byte-level BPE with ``</w>`` word ends, ``<|startoftext|>`` … ``<|endoftext|>``
    (ids 49406 / 49407, also the padding)."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import CLIPTokenizer

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(line.split()) for line in lines]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    bpe = Tokenizer(models.BPE(vocab={v: i for i, v in enumerate(vocab)}, merges=merges, end_of_word_suffix="</w>",
                               continuing_subword_prefix="", unk_token="<|endoftext|>"))
    bpe.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.RobertaProcessing(("<|endoftext|>", 49407), ("<|startoftext|>", 49406), trim_offsets=False)
    return CLIPTokenizer(tokenizer_object=bpe, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                         unk_token="<|endoftext|>", pad_token="<|endoftext|>")


def unigram_tokenizer(vocab_size: int = 200, siglip: bool = False):
    """A SentencePiece-style Unigram tokenizer trained on :data:`CORPUS` (``▁`` marks a word start),
    as a ``transformers`` fast tokenizer. BERT-style by default (``[PAD]`` = 0, ``[CLS]``, ``[SEP]``,
    ``[UNK]``, ``[CLS]`` … ``[SEP]`` around a caption); ``siglip=True``: SigLIP's layout (``<pad>``,
    ``</s>``, ``<unk>``; no start token, ``</s>`` after the caption and as the padding)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"] if siglip else ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]
    unigram = Tokenizer(models.Unigram())
    unigram.normalizer = normalizers.NFKC()
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    unigram.decoder = decoders.Metaspace()
    unigram.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token=specials[-1]))
    if siglip:
        eos = unigram.token_to_id("</s>")
        unigram.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", eos)])
        return PreTrainedTokenizerFast(tokenizer_object=unigram, pad_token="</s>", eos_token="</s>", unk_token="<unk>")
    cls, sep = unigram.token_to_id("[CLS]"), unigram.token_to_id("[SEP]")
    unigram.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=unigram, pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]")


def _spread(model: torch.nn.Module, scale: float = 0.05) -> torch.nn.Module:
    """Perturb biases and norms (the libraries start them at 0 or 1) so the random model is less uniform."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "bias" in name or "norm" in name:
                p.add_(scale * torch.randn_like(p))
    return model.eval()


def save_tiny_clip(folder: str | Path, image_size: int = 32, patch_size: int = 8, seed: int = 0) -> Path:
    """Save a tiny random ``CLIPModel`` (3-layer towers of width 64, 77-token texts) with
    :func:`clip_bpe_tokenizer` and a ``CLIPImageProcessor`` (shortest side → ``image_size``,
    centre crop) into ``folder``. Returns the folder."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    tower = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4)
    text = dict(tower, vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    vision = dict(tower, image_size=image_size, patch_size=patch_size)
    model = _spread(CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)))
    folder = Path(folder)
    model.save_pretrained(folder)
    clip_bpe_tokenizer().save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder


def save_tiny_blip(folder: str | Path, image_size: int = 32, seed: int = 0) -> Path:
    """Save a tiny random ``BlipForImageTextRetrieval`` (3-layer towers of width 64, 32-token texts)
    with :func:`unigram_tokenizer` and a ``BlipImageProcessor`` (resized to ``image_size`` square,
    no crop) into ``folder``. Returns the folder."""
    from transformers import BlipConfig, BlipForImageTextRetrieval, BlipImageProcessor

    torch.manual_seed(seed)
    tokenizer = unigram_tokenizer()
    tower = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4)
    text = dict(tower, vocab_size=len(tokenizer), max_position_embeddings=32, encoder_hidden_size=64,
                pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id)
    vision = dict(tower, image_size=image_size, patch_size=8)
    model = _spread(BlipForImageTextRetrieval(BlipConfig(text_config=text, vision_config=vision, image_text_hidden_size=32)))
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    BlipImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder


def save_tiny_siglip(folder: str | Path, image_size: int = 32, seed: int = 0) -> Path:
    """Save a tiny random ``SiglipModel`` (3-layer towers of width 64, 64-token texts) with
    :func:`unigram_tokenizer` in SigLIP's layout and a ``SiglipImageProcessor`` (resized to
    ``image_size`` square) into ``folder``. Returns the folder."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    torch.manual_seed(seed)
    tokenizer = unigram_tokenizer(siglip=True)
    tower = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4)
    text = dict(tower, vocab_size=len(tokenizer), max_position_embeddings=64, projection_size=64,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    vision = dict(tower, image_size=image_size, patch_size=8)
    model = _spread(SiglipModel(SiglipConfig(text_config=text, vision_config=vision)))
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    SiglipImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder
