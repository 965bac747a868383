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
    """

    tokens: list[str]
    words: list[str]
    spans: list[tuple[int, int]]
    positions: list[tuple[int, ...]]
    truncated: bool

    @property
    def eot(self) -> int:
        """The end-of-text token's position."""
        return len(self.tokens) - 1


def check_tokenizer(tokenizer: Any) -> Any:
    """Return ``tokenizer`` if it is open_clip's ``SimpleTokenizer`` (truncating, no token
    reduction); raise :class:`InputError` saying why words cannot be mapped otherwise."""
    from open_clip.tokenizer import SimpleTokenizer

    if tokenizer is None:
        raise InputError(
            "explaining texts needs the model's tokenizer: pass tokenizer= to the Explainer, or give the model's "
            "token ids [T, L] directly (SigLIP's tokenizer needs a hub download; then there are no words)"
        )
    if not isinstance(tokenizer, SimpleTokenizer):
        raise InputError(
            f"explaining texts needs open_clip's SimpleTokenizer (CLIP BPE) to map tokens back to words; "
            f"got {type(tokenizer).__name__}. Other tokenizers: give their token ids [T, L] directly"
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
    """None when open_clip's ``SimpleTokenizer`` keeps all of ``text`` within ``context_length``
    tokens; else the last word it keeps (``""`` when none). Other tokenizers: None (their
    truncation cannot be traced to words)."""
    from open_clip.tokenizer import SimpleTokenizer

    if not isinstance(tokenizer, SimpleTokenizer) or len(tokenizer.encode(text)) + 2 <= context_length:
        return None
    words = align_words(tokenizer, text, context_length).words
    return words[-1] if words else ""


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


def _split_punctuation(tokenizer: Any, text: str, start: int, end: int, ids: list[int]) -> list[tuple[int, int, int]]:
    """Split leading/trailing punctuation off the word ``text[start:end]`` (tokens ``ids``) when the
    parts' own tokens concatenate to ``ids``. Returns ``(start, end, n_tokens)`` per part."""
    lead = start
    while lead < end and _is_punctuation(text[lead]):
        lead += 1
    trail = end
    while trail > lead and _is_punctuation(text[trail - 1]):
        trail -= 1
    if lead == end or (lead == start and trail == end):
        return [(start, end, len(ids))]  # all punctuation, or none at the edges
    bounds = [b for b in ((start, lead), (lead, trail), (trail, end)) if b[0] < b[1]]
    counts = []
    joined: list[int] = []
    for s, e in bounds:
        part = tokenizer.encode(text[s:e])
        counts.append(len(part))
        joined += part
    if joined != ids:
        return [(start, end, len(ids))]
    return [(s, e, n) for (s, e), n in zip(bounds, counts)]

