"""Every exception gradeclip raises on purpose.

All derive from :class:`GradeclipError`, so ``except gradeclip.GradeclipError`` catches them;
each also derives from the built-in type a caller would expect (``ValueError`` for bad values,
``TypeError`` for unsupported models), so generic handlers keep working.
"""

from __future__ import annotations

__all__ = [
    "GradeclipError",
    "InputError",
    "InputTypeError",
    "UnreadableImage",
    "UnsupportedModelError",
    "UnknownMethodError",
    "ModelLoadError",
    "BackendUnavailableError",
    "StoreError",
    "TrainingError",
]


class GradeclipError(Exception):
    """Base class of every error gradeclip raises on purpose."""


class InputError(GradeclipError, ValueError):
    """An input (image batch, text list, option value, array) is malformed; the message names it."""


class InputTypeError(InputError, TypeError):
    """An input has the wrong type or dtype (a list where an array belongs, float images, integer
    maps): an :class:`InputError` that is also a ``TypeError``, the built-in type Python uses."""


class UnreadableImage(InputError):
    """An image (or mask) file that cannot be read or decoded; ``str(exc)`` says why (dataset runs
    record it as the sample's error row)."""


class UnsupportedModelError(GradeclipError, TypeError):
    """The model (or one of its towers) cannot be explained; the message names the model and why."""


class UnknownMethodError(GradeclipError, KeyError):
    """An explanation method name is not registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class ModelLoadError(GradeclipError, RuntimeError):
    """Weights could not be loaded (unknown tag, offline hub, unreadable or mismatched checkpoint)."""


class BackendUnavailableError(GradeclipError, RuntimeError):
    """A compute backend was requested (e.g. through ``GRADECLIP_BACKEND``) that cannot run here."""


class StoreError(GradeclipError, RuntimeError):
    """A store folder cannot be used as asked: made with another model or options, not a store,
    or incomplete; the message says which and what to do."""


class TrainingError(GradeclipError, RuntimeError):
    """A training run failed for a reason other than its settings (e.g. a worker process died)."""
