"""The one door to the compiled extension ``gradeclip._native``: every gradeclip module calls the
Rust core through these functions, never ``_native`` directly.

Each function is the extension's own (signatures and docs in ``_native.pyi``), with one
difference: a ``ValueError`` the extension raises (NaN in a map, an unknown colour map, a bad
``GRADECLIP_NUM_THREADS``) reaches the caller as :class:`~gradeclip.errors.InputError`, and a
``TypeError`` (an argument of the wrong type) as :class:`~gradeclip.errors.InputTypeError`, with
the extension's message. ``OSError`` (a file that cannot be written) passes through as it is.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from . import _native
from .errors import InputError, InputTypeError

P = ParamSpec("P")
T = TypeVar("T")


def _translated(fn: Callable[P, T]) -> Callable[P, T]:
    """``fn`` with the extension's ValueError / TypeError re-raised as InputError / InputTypeError."""

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except TypeError as exc:
            raise InputTypeError(str(exc)) from None
        except ValueError as exc:
            raise InputError(str(exc)) from None

    return call


build_info = _translated(_native.build_info)
# rendering (rust/py_render.rs)
upsample = _translated(_native.upsample)
normalize = _translated(_native.normalize)
colorize = _translated(_native.colorize)
overlay = _translated(_native.overlay)
encode_png = _translated(_native.encode_png)
save_overlays = _translated(_native.save_overlays)
# evaluation (rust/py_eval.rs)
perturbation_checkpoints = _translated(_native.perturbation_checkpoints)
perturbation_batch = _translated(_native.perturbation_batch)
resize_center_crop = _translated(_native.resize_center_crop)
model_ready = _translated(_native.model_ready)
curve_auc = _translated(_native.curve_auc)
localization_metrics = _translated(_native.localization_metrics)

__all__ = list(_native.__all__)  # every function above; tests/test_native.py checks each is wrapped
