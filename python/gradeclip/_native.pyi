"""Type stubs for the compiled extension ``gradeclip._native`` (built from ``rust/``)."""

import os

import numpy as np
import numpy.typing as npt

def build_info() -> dict[str, object]:
    """Crate version, whether the build is abi3, debug assertions on/off, worker threads."""

# Rendering (rust/py_render.rs). gradeclip.render validates and reshapes; these take lists of
# C-contiguous arrays (maps float32 [h, w], images uint8 [H, W, 3]) and return flat results with
# the items back to back in input order.

def upsample(
    maps: list[npt.NDArray[np.float32]], sizes: list[tuple[int, int]], mode: str
) -> npt.NDArray[np.float32]:
    """Each map resized to its (H, W) ("bilinear" or "bicubic", half-pixel centres)."""

def normalize(maps: list[npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
    """Each map min-max normalised to [0, 1]; a constant map becomes zeros."""

def colorize(maps: list[npt.NDArray[np.float32]], colormap: str) -> npt.NDArray[np.uint8]:
    """Each map's values (clamped to [0, 1]) as RGB bytes from "jet", "viridis" or "turbo"."""

def overlay(
    images: list[npt.NDArray[np.uint8]], maps: list[npt.NDArray[np.float32]], alpha: float, colormap: str
) -> npt.NDArray[np.uint8]:
    """Each map upsampled to its image, normalised, coloured and blended: (1 - alpha) image + alpha colour."""

def encode_png(images: list[npt.NDArray[np.uint8]], compression: str) -> list[bytes]:
    """Each RGB image as a PNG file's bytes ("fastest", "fast", "balanced" or "high")."""

def save_overlays(
    paths: list[str | os.PathLike[str]],
    images: list[npt.NDArray[np.uint8]],
    maps: list[npt.NDArray[np.float32]],
    alpha: float,
    colormap: str,
    compression: str,
) -> None:
    """Each overlay encoded and written to its path atomically (temporary name, then rename)."""
