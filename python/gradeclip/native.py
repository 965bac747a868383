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
from typing import TYPE_CHECKING, ParamSpec, TypeVar

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


__all__ = list(_native.__all__)
for _name in __all__:  # every function of the extension, wrapped
    globals()[_name] = _translated(getattr(_native, _name))
del _name

if TYPE_CHECKING:  # the same names as the stub (_native.pyi) types them; the wrappers keep their signatures
    from ._native import *  # noqa: F403
