"""Evaluate explanation methods the way the Grad-ECLIP paper does, on your own data and models.

- Faithfulness (SPEC §7, paper Tables I–II): :func:`deletion_insertion` over an
  :class:`ImageFolder` (zero-shot classification) or a :class:`CaptionTable` (retrieval).
- Text faithfulness (paper Table III): :func:`text_deletion_insertion` over a :class:`CaptionTable`.
- Localisation (SPEC §8, paper Table IV): :func:`localization` over a :class:`MaskFolder`.
- Regions (SPEC §10, paper Tables VII and IX): :mod:`regions` — ``regions.evaluate`` classifies
  boxes and masks from the dense features (COCO-format files or the synthetic world) and measures retrieval.
- The building blocks, computed in Rust: :func:`perturbation_steps`, :func:`resize_center_crop`,
  :func:`model_ready`, :func:`auc`, :func:`localization_metrics`.
- Results: :class:`FaithfulnessResult`, :class:`LocalizationResult` (``.save()`` writes JSON +
  CSV), :func:`load_result`, :func:`summary_table` (the paper's layout).

Modules, one job each: :mod:`.datasets` (views over :mod:`gradeclip.data`), :mod:`.models` (the
model through the Explainer: geometry, encoders, maps), :mod:`.scorers`, :mod:`.runner`
(chunks, journal, timing), one module per task (:mod:`.faithfulness`, :mod:`.localisation`,
:mod:`.text_faithfulness`, :mod:`.regions`), :mod:`.perturbation` and :mod:`.metrics` (Rust), :mod:`.report`.
"""

from __future__ import annotations

from ..data import Sample, load_image, load_mask, read_class_index
from ..preprocessing import Geometry, model_ready, resize_center_crop
from . import regions
from .datasets import CaptionTable, ImageFolder, MaskFolder
from .faithfulness import deletion_insertion
from .localisation import localization
from .metrics import LOCALIZATION_METRICS, auc, localization_metrics
from .perturbation import MODES, checkpoint_fractions, perturbation_steps, text_steps
from .report import FaithfulnessResult, LocalizationResult, load_result, summary_table
from .scorers import RetrievalScorer, TextRetrievalScorer, ZeroShotClassifier
from .text_faithfulness import text_deletion_insertion

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
    "regions",
    "resize_center_crop",
    "summary_table",
    "text_deletion_insertion",
    "text_steps",
]
