"""Evaluate explanation methods the way the Grad-ECLIP paper does, on your own data and models.

- Faithfulness (SPEC §7, paper Tables I–II): :func:`deletion_insertion` over an
  :class:`ImageFolder` (zero-shot classification) or a :class:`CaptionTable` (retrieval).
- Text faithfulness (paper Table III): :func:`text_deletion_insertion` over a :class:`CaptionTable`.
- Localisation (SPEC §8, paper Table IV): :func:`localization` over a :class:`MaskFolder`.
- The building blocks, computed in Rust: :func:`perturbation_steps`, :func:`resize_center_crop`,
  :func:`model_ready`, :func:`auc`, :func:`localization_metrics`.
- Results: :class:`FaithfulnessResult`, :class:`LocalizationResult` (``.save()`` writes JSON +
  CSV), :func:`load_result`, :func:`summary_table` (the paper's layout).
"""

from __future__ import annotations

from ..data import Sample, load_image, load_mask, read_class_index
from .datasets import CaptionTable, ImageFolder, MaskFolder
from .harness import (
    Geometry,
    RetrievalScorer,
    TextRetrievalScorer,
    ZeroShotClassifier,
    deletion_insertion,
    localization,
    text_deletion_insertion,
)
from .metrics import LOCALIZATION_METRICS, auc, localization_metrics
from .perturbation import (
    MODES,
    checkpoint_fractions,
    model_ready,
    perturbation_steps,
    resize_center_crop,
    text_steps,
)
from .report import FaithfulnessResult, LocalizationResult, load_result, summary_table

__all__ = [
    "LOCALIZATION_METRICS",
    "MODES",
    "CaptionTable",
    "FaithfulnessResult",
    "Geometry",
    "ImageFolder",
    "LocalizationResult",
    "MaskFolder",
    "RetrievalScorer",
    "Sample",
    "TextRetrievalScorer",
    "ZeroShotClassifier",
    "auc",
    "checkpoint_fractions",
    "deletion_insertion",
    "load_image",
    "load_mask",
    "load_result",
    "localization",
    "localization_metrics",
    "model_ready",
    "perturbation_steps",
    "read_class_index",
    "resize_center_crop",
    "summary_table",
    "text_deletion_insertion",
    "text_steps",
]
