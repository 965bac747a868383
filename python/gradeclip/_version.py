"""The installed package's version, in its own module so that any layer can read it without
importing the package ``__init__`` (imports point down only)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__: str = version("gradeclip")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
