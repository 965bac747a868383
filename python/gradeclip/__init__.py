"""gradeclip: Grad-ECLIP and its baselines — fast visual and textual explanations for CLIP models."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .errors import (
    BackendUnavailableError,
    GradeclipError,
    InputError,
    ModelLoadError,
    StoreError,
    TrainingError,
    UnknownMethodError,
    UnsupportedModelError,
)
from . import synth
from .explainer import Explainer
from .loading import load
from .methods import MethodInfo, methods
from .preprocessing import native_preprocess
from .pipeline import ExplainJob, explain_dataset
from .results import ImageExplanation, PairExplanation, TextExplanation
from .store import Store

try:
    __version__ = version("gradeclip")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"


def build_info() -> dict[str, object]:
    """Facts about the compiled extension: ``version``, ``abi3``, ``debug_assertions``, ``threads``."""
    from ._native import build_info as native_build_info

    return native_build_info()


__all__ = [
    "BackendUnavailableError",
    "ExplainJob",
    "Explainer",
    "GradeclipError",
    "ImageExplanation",
    "InputError",
    "MethodInfo",
    "ModelLoadError",
    "PairExplanation",
    "Store",
    "StoreError",
    "TextExplanation",
    "TrainingError",
    "UnknownMethodError",
    "UnsupportedModelError",
    "__version__",
    "build_info",
    "explain_dataset",
    "load",
    "methods",
    "native_preprocess",
    "synth",
]
