"""Analysing a model with Grad-ECLIP (paper §5, SPEC §11; ``docs/analysis.md``).

- :func:`addibility`: word maps vs phrase maps of one image (§5.1).
- :func:`attributes`: "ATTR NOUN" vs "NOUN" probes on scenes with exact ground truth (§5.2).
- :func:`concreteness`: word importance vs Brysbaert concreteness over a caption corpus (§5.3).
"""

from __future__ import annotations

from .attribute_probes import ATTRIBUTE_TYPES, AttributeReport, LabelledScene, attributes, labelled_scenes, synth_scenes
from .concepts import PhraseReport, addibility
from .word_concreteness import ConcretenessReport, brysbaert_norms, concreteness, explain_corpus

__all__ = [
    "ATTRIBUTE_TYPES",
    "AttributeReport",
    "ConcretenessReport",
    "LabelledScene",
    "PhraseReport",
    "addibility",
    "attributes",
    "brysbaert_norms",
    "concreteness",
    "explain_corpus",
    "labelled_scenes",
    "synth_scenes",
]
