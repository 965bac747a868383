"""gradeclip: Grad-ECLIP and its baselines — fast visual and textual explanations for CLIP models.

``import gradeclip`` loads only the exceptions and the version; every other public name (and the
torch, open_clip, pyarrow stack behind it) is imported the first time it is used (PEP 562).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    BackendUnavailableError,
    GradeclipError,
    InputError,
    InputTypeError,
    ModelLoadError,
    StoreError,
    TrainingError,
    UnknownMethodError,
    UnsupportedModelError,
)

if TYPE_CHECKING:  # what the lazy names below resolve to, for type checkers and IDEs
    from . import analysis, synth
    from .explainer import Explainer
    from .loading import ModelIdentity, load, model_identity
    from .methods import MethodInfo, methods
    from .pipeline import ExplainJob, explain_dataset
    from .preprocessing import native_preprocess
    from .results import ImageExplanation, PairExplanation, TextExplanation
    from .store import Store

# public name -> (module that defines it, attribute in that module; None: the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "synth": (".synth", None),
    "analysis": (".analysis", None),
    "Explainer": (".explainer", "Explainer"),
    "load": (".loading", "load"),
    "ModelIdentity": (".loading", "ModelIdentity"),
    "model_identity": (".loading", "model_identity"),
    "MethodInfo": (".methods", "MethodInfo"),
    "methods": (".methods", "methods"),
    "native_preprocess": (".preprocessing", "native_preprocess"),
    "ExplainJob": (".pipeline", "ExplainJob"),
    "explain_dataset": (".pipeline", "explain_dataset"),
    "ImageExplanation": (".results", "ImageExplanation"),
    "PairExplanation": (".results", "PairExplanation"),
    "TextExplanation": (".results", "TextExplanation"),
    "Store": (".store", "Store"),
}


def __getattr__(name: str) -> Any:
    """Import a public name on first use and keep it in the module (later lookups are plain)."""
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    module = importlib.import_module(module_name, __name__)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """This package's module type. Importing the subpackage ``gradeclip.methods`` makes Python set
    the package attribute ``methods`` to it; the public name ``gradeclip.methods`` is the function
    listing the methods, so that one assignment is ignored (the subpackage stays in ``sys.modules``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "methods" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def build_info() -> dict[str, object]:
    """Facts about the compiled extension: ``version``, ``abi3``, ``debug_assertions``, ``threads``."""
    from . import native

    return native.build_info()


__all__ = [
    "BackendUnavailableError",
    "ExplainJob",
    "Explainer",
    "GradeclipError",
    "ImageExplanation",
    "InputError",
    "InputTypeError",
    "MethodInfo",
    "ModelIdentity",
    "ModelLoadError",
    "PairExplanation",
    "Store",
    "StoreError",
    "TextExplanation",
    "TrainingError",
    "UnknownMethodError",
    "UnsupportedModelError",
    "__version__",
    "analysis",
    "build_info",
    "explain_dataset",
    "load",
    "methods",
    "model_identity",
    "native_preprocess",
    "synth",
]
