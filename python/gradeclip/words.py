"""Captions as token ids, and the tokens mapped back to the words the user wrote (SPEC §3).

open_clip's ``SimpleTokenizer`` cleans a caption (ftfy, HTML entities, whitespace, lower case)
before splitting it into BPE pieces, so its tokens cannot be traced to the caption's characters by
decoding them. Instead, the caption is cut where the user put whitespace, each piece of it is
tokenised on its own, and the pieces' tokens are matched, in order, against the tokens of the whole
caption. The tokenizer's pre-split never crosses whitespace, so each whitespace-separated chunk owns
a run of the caption's tokens; when cleaning does join chunks (rare), the smallest run of chunks
that matches becomes one word. Within a chunk, leading and trailing punctuation ("(", '"', ",",
"!!") become words of their own when their tokens stand apart; inner punctuation stays in the word
("don't", "well-known", "3.5").
"""

from __future__ import annotations

import re
import unicodedata
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from .errors import InputError

_CHUNK = re.compile(r"\S+")


@dataclass(frozen=True)
class WordAlignment:
    """How one caption's tokens map back to its words.

    Attributes:
        tokens: the decoded token strings at positions ``0..EOT`` (start and end tokens included).
        words: the caption's words exactly as written, in caption order (words cut off by
            truncation are left out).
        spans: ``(start, end)`` character offsets of each word in the caption.
        positions: the token positions (indices into a ``context_length`` row) of each word's BPE
            pieces; empty for a word the tokenizer drops entirely.
        truncated: whether the caption was longer than the context length.
        first: the position of the caption's first token: 1 after a start token, 0 for a
            tokenizer that adds none (SigLIP's).
    """

    tokens: list[str]
    words: list[str]
    spans: list[tuple[int, int]]
    positions: list[tuple[int, ...]]
    truncated: bool
    first: int = 1

    @property
    def eot(self) -> int:
        """The end-of-text token's position."""
        return len(self.tokens) - 1


def check_tokenizer(tokenizer: Any) -> Any:
    """Return ``tokenizer`` if it is open_clip's ``SimpleTokenizer`` (truncating, no token
    reduction) or an :class:`HFTokenizer`; raise :class:`InputError` saying why words cannot be
    mapped otherwise."""
    from open_clip.tokenizer import SimpleTokenizer

    if isinstance(tokenizer, HFTokenizer):
        return tokenizer

    if tokenizer is None:
        raise InputError(
            "explaining texts needs the model's tokenizer: pass tokenizer= to the Explainer, or give the model's "
            "token ids [T, L] directly (SigLIP's tokenizer needs a hub download; then there are no words)"
        )
    if not isinstance(tokenizer, SimpleTokenizer):
        raise InputError(
            f"explaining texts needs open_clip's SimpleTokenizer or a Hugging Face fast tokenizer (with offsets) to map "
            f"tokens back to words; got {type(tokenizer).__name__}. Other tokenizers: give their token ids [T, L] directly"
        )
    if getattr(tokenizer, "reduction_fn", None) is not None:
        raise InputError("the tokenizer drops tokens at random (reduction_mask); text explanations need plain truncation")
    return tokenizer


class TruncationWarning(UserWarning):
    """A text was longer than the model's context length and was cut (:func:`truncation_message`)."""


def truncation_message(name: str, context_length: int, kept: str) -> str:
    """What to say about a text ``name`` (``"texts[3]"``, ``"the caption of key '11'"``) truncated
    to ``context_length`` tokens after the word ``kept``."""
    return (
        f"{name} is longer than the context length ({context_length} tokens with its start and end tokens) "
        f"and was truncated after {kept!r}; the words after it are not explained"
    )


def truncated_after(tokenizer: Any, text: str, context_length: int) -> str | None:
    """None when the tokenizer (open_clip's ``SimpleTokenizer`` or an :class:`HFTokenizer`) keeps
    all of ``text`` within ``context_length`` tokens; else the last word it keeps (``""`` when
    none). Other tokenizers: None (their truncation cannot be traced to words)."""
    from open_clip.tokenizer import SimpleTokenizer

    if isinstance(tokenizer, HFTokenizer):
        alignment = tokenizer.align(text, context_length)
    elif isinstance(tokenizer, SimpleTokenizer) and len(tokenizer.encode(text)) + 2 > context_length:
        alignment = align_words(tokenizer, text, context_length)
    else:
        return None
    if not alignment.truncated:
        return None
    return alignment.words[-1] if alignment.words else ""


def warn_truncated(tokenizer: Any, texts: Sequence[str], context_length: int) -> None:
    """A :class:`TruncationWarning` naming ``texts[i]`` for every text the tokenizer truncates."""
    for index, text in enumerate(texts):
        kept = truncated_after(tokenizer, text, context_length)
        if kept is not None:
            warnings.warn(truncation_message(f"texts[{index}]", context_length, kept), TruncationWarning, stacklevel=4)


def tokenize_captions(tokenizer: Any, texts: Sequence[str], context_length: int) -> tuple[Tensor, list[WordAlignment]]:
    """Token ids ``[T, context_length]`` (long, CPU) of ``texts`` as the tokenizer makes them, and
    each caption's :class:`WordAlignment`.

    A caption longer than the context length is truncated (as the tokenizer does) with a
    :class:`TruncationWarning` naming its index. Raises :class:`InputError` for a tokenizer that
    cannot be mapped back to words (:func:`check_tokenizer`).
    """
    tokenizer = check_tokenizer(tokenizer)
    ids = tokenizer(list(texts), context_length=context_length)
    alignments = []
    for index, text in enumerate(texts):
        if isinstance(tokenizer, HFTokenizer):
            alignment = tokenizer.align(text, context_length)
        else:
            alignment = align_words(tokenizer, text, context_length)
        if alignment.truncated:
            kept = alignment.words[-1] if alignment.words else ""
            warnings.warn(truncation_message(f"texts[{index}]", context_length, kept), TruncationWarning, stacklevel=3)
        if alignment.eot != int((ids[index] == tokenizer.eot_token_id).int().argmax()):
            raise InputError(f"texts[{index}]: the tokenizer's output does not match its own encoding of the caption")
        alignments.append(alignment)
    return ids, alignments


def align_words(tokenizer: Any, text: str, context_length: int) -> WordAlignment:
    """Map the tokens of ``text`` (tokenised by open_clip's ``SimpleTokenizer``, truncated to
    ``context_length``) back to its words. See the module docstring for the rules."""
    content = tokenizer.encode(text)
    kept = min(len(content), context_length - 2)  # room for the start and end tokens
    truncated = len(content) > kept
    row = [tokenizer.sot_token_id, *content[:kept], tokenizer.eot_token_id]
    tokens = [tokenizer.decode([i]).strip() for i in row]
    words, spans, positions = [], [], []
    for start, end, first, count in _word_pieces(tokenizer, text, content, kept):
        if first >= kept and (count > 0 or truncated):
            break  # cut off by truncation
        words.append(text[start:end])
        spans.append((start, end))
        positions.append(tuple(1 + k for k in range(first, min(first + count, kept))))
    return WordAlignment(tokens, words, spans, positions, truncated)


def _word_pieces(tokenizer: Any, text: str, content: list[int], limit: int) -> list[tuple[int, int, int, int]]:
    """``(start, end, first_token, n_tokens)`` of each word of ``text``, covering ``content`` in order.

    Only the first ``limit`` tokens (those that survive truncation) are matched: when ``content``
    is longer, the words are followed only up to the cut, so a very long caption costs no more
    than the part of it that is explained.
    """
    chunks = [m.span() for m in _CHUNK.finditer(text)]
    truncated = len(content) > limit
    pieces: list[tuple[int, int, int, int]] = []
    done = 0  # tokens of ``content`` already assigned
    i = 0
    while i < len(chunks) and not (truncated and done >= limit):
        for j in range(i, len(chunks)):  # the smallest run of chunks whose tokens come next
            start, end = chunks[i][0], chunks[j][1]
            ids = tokenizer.encode(text[start:end])
            seen = min(len(ids), limit - done)  # the run's tokens before the cut
            if ids[:seen] == content[done : done + seen] and (seen == len(ids) or truncated):
                break
            if done + len(ids) >= limit:  # reaches the cut without matching: growing the run cannot help
                ids = content[done:]
                if not truncated:  # the rest of the caption is one word
                    j, end = len(chunks) - 1, chunks[-1][1]
                break
        if j == len(chunks) - 1 and not truncated:  # the last word takes what is left (all the rest if no run matched)
            ids = content[done:]
        for s, e, n in _split_punctuation(tokenizer, text, start, end, ids):
            s, e = _trim_whitespace(text, s, e)
            pieces.append((s, e, done, n))
            done += n
        i = j + 1
    return pieces


def _trim_whitespace(text: str, start: int, end: int) -> tuple[int, int]:
    """``(start, end)`` without the whitespace at its edges (characters Python calls whitespace
    but the tokenizer keeps, such as U+0085, which ftfy reads as "…"), unless nothing else is left."""
    while end - start > 1 and text[start].isspace():
        start += 1
    while end - start > 1 and text[end - 1].isspace():
        end -= 1
    return start, end


def _is_punctuation(char: str) -> bool:
    return unicodedata.category(char)[0] not in "LNM"


def _punctuation_bounds(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """``text[start:end]`` cut into its leading punctuation, the rest, and its trailing punctuation
    (the non-empty ones of the three, as ``(start, end)``); one part when it is all punctuation."""
    lead = start
    while lead < end and _is_punctuation(text[lead]):
        lead += 1
    trail = end
    while trail > lead and _is_punctuation(text[trail - 1]):
        trail -= 1
    if lead == end:
        return [(start, end)]
    return [b for b in ((start, lead), (lead, trail), (trail, end)) if b[0] < b[1]]


def _split_punctuation(tokenizer: Any, text: str, start: int, end: int, ids: list[int]) -> list[tuple[int, int, int]]:
    """Split leading/trailing punctuation off the word ``text[start:end]`` (tokens ``ids``) when the
    parts' own tokens concatenate to ``ids``. Returns ``(start, end, n_tokens)`` per part."""
    bounds = _punctuation_bounds(text, start, end)
    if len(bounds) == 1:
        return [(start, end, len(ids))]  # all punctuation, or none at the edges
    counts = []
    joined: list[int] = []
    for s, e in bounds:
        part = tokenizer.encode(text[s:e])
        counts.append(len(part))
        joined += part
    if joined != ids:
        return [(start, end, len(ids))]
    return [(s, e, n) for (s, e), n in zip(bounds, counts)]



class HFTokenizer:
    """A Hugging Face fast tokenizer as gradeclip uses it: captions → token ids ``[T, L]`` (padded
    to the context length), and each caption's words (:meth:`align`).

    Words come from the tokenizer's character offsets, so any fast tokenizer works (byte-level BPE
    as in CLIP, WordPiece as in BLIP, SentencePiece/Unigram as in SigLIP): the caption is cut where
    the user put whitespace, each token belongs to the chunk holding its first non-space character,
    and a chunk's leading and trailing punctuation become words of their own when no token straddles
    them (the rules of :func:`align_words`).

    Args:
        tokenizer: a ``transformers`` fast tokenizer (``PreTrainedTokenizerFast``-like: it returns
            offsets) that adds the model's end token, and its start token if the model has one.
        context_length: the model's text length (ids are padded and truncated to it).

    Attributes:
        sot_token_id: the start token's id, or None for a tokenizer that adds none (SigLIP's).
        eot_token_id: the end token's id.
        first: the position of a caption's first token in the ids (1 after a start token, else 0).
    """

    def __init__(self, tokenizer: Any, context_length: int):
        self.tokenizer = tokenizer
        self.context_length = context_length
        probe = tokenizer("a", add_special_tokens=True)["input_ids"]
        bare = tokenizer("a", add_special_tokens=False)["input_ids"]
        before = len(probe) - len(bare) - 1  # special tokens before the caption's
        if before not in (0, 1) or probe[before : before + len(bare)] != bare:
            raise InputError(
                f"the Hugging Face tokenizer {type(tokenizer).__name__} does not add one end token (and at most one start "
                "token) around a caption; gradeclip needs the end token (the model pools or skips it)"
            )
        self.sot_token_id = int(probe[0]) if before else None
        self.eot_token_id = int(probe[-1])
        self.first = before
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_token_id = self.eot_token_id if pad is None else int(pad)

    def __repr__(self) -> str:
        return f"HFTokenizer({type(self.tokenizer).__name__}, context_length={self.context_length})"

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> Tensor:
        """Token ids ``[T, context_length]`` (long, CPU): start token (if the tokenizer adds one), the
        caption's tokens (truncated to fit), end token, then padding."""
        import torch

        length = context_length or self.context_length
        texts = [texts] if isinstance(texts, str) else list(texts)
        rows = self.tokenizer(texts, add_special_tokens=True, truncation=True, max_length=length)["input_ids"]
        ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return ids

    def align(self, text: str, context_length: int | None = None) -> WordAlignment:
        """The :class:`WordAlignment` of ``text`` tokenised to ``context_length`` (default: the model's)."""
        length = context_length or self.context_length
        full = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        content, offsets = list(full["input_ids"]), [tuple(o) for o in full["offset_mapping"]]
        kept = min(len(content), length - 1 - self.first)
        row = [self.sot_token_id] * self.first + [*content[:kept], self.eot_token_id]
        tokens = [self.tokenizer.decode([i]).strip() for i in row]
        words, spans, positions = [], [], []
        done = 0  # tokens owned by the words before
        for start, end, owned in _offset_words(text, offsets):
            if len(content) > kept and done >= kept:
                break  # cut off by truncation
            words.append(text[start:end])
            spans.append((start, end))
            positions.append(tuple(self.first + k for k in owned if k < kept))
            done += len(owned)
        return WordAlignment(tokens, words, spans, positions, len(content) > kept, self.first)


def _offset_words(text: str, offsets: list[tuple[int, int]]) -> list[tuple[int, int, list[int]]]:
    """``(start, end, token indices)`` of each word of ``text``, from each token's character
    ``offsets``: every token goes to the whitespace chunk holding its first non-space character
    (a token with no characters, to the word before it), and leading/trailing punctuation is split
    off a chunk where no token straddles the cut. Every token index appears exactly once, in order."""
    chunks = [m.span() for m in _CHUNK.finditer(text)]
    owner, anchors = [], []  # chunk index and anchor character of each token
    for start, end in offsets:
        anchor = next((c for c in range(start, end) if not text[c].isspace()), None)
        chunk = owner[-1] if owner else 0
        if anchor is not None:
            chunk = next(i for i, (s, e) in enumerate(chunks) if s <= anchor < e)
        owner.append(chunk)
        anchors.append(min(max(start if anchor is None else anchor, chunks[chunk][0]), chunks[chunk][1] - 1))
    words: list[tuple[int, int, list[int]]] = []
    for c, (start, end) in enumerate(chunks):
        owned = [k for k, o in enumerate(owner) if o == c]
        bounds = _punctuation_bounds(text, start, end)
        straddles = any(offsets[k][0] < b[0] < offsets[k][1] for k in owned for b in bounds[1:])
        if len(bounds) == 1 or straddles:
            words.append((start, end, owned))
        else:
            words.extend((s, e, [k for k in owned if s <= anchors[k] < e]) for s, e in bounds)
    return words
