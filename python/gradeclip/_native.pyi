"""Type stubs for the compiled extension ``gradeclip._native`` (built from ``rust/``); checked
against the compiled module by tests/test_native.py. Call it through ``gradeclip.native``."""

import os

import numpy as np
import numpy.typing as npt

__all__ = [
    "build_info",
    "perturbation_checkpoints",
    "perturbation_batch",
    "resize_center_crop",
    "model_ready",
    "curve_auc",
    "localization_metrics",
    "upsample",
    "normalize",
    "colorize",
    "overlay",
    "encode_png",
    "save_overlays",
]

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

# Evaluation (rust/py_eval.rs). gradeclip.eval validates and converts; these take lists of
# C-contiguous arrays (images uint8 [H, W, 3], maps float32 [H, W], masks uint8 0/1 [H, W]).

def perturbation_checkpoints(
    images: list[npt.NDArray[np.uint8]],
    maps: list[npt.NDArray[np.float32]],
    mode: str,
    steps: int,
    eval_every: int,
    seed: int,
    streams: list[int],
) -> list[npt.NDArray[np.uint8]]:
    """Deletion ("deletion") or insertion ("insertion") checkpoints, uint8 [K, H, W, 3] per image."""

def perturbation_batch(
    images: list[npt.NDArray[np.uint8]],
    maps: list[npt.NDArray[np.float32]],
    mode: str,
    steps: int,
    eval_every: int,
    seed: int,
    streams: list[int],
    size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> npt.NDArray[np.float32]:
    """Every checkpoint through CLIP's preprocessing: float32 [B, K, 3, size, size]."""

def resize_center_crop(images: list[npt.NDArray[np.uint8]], size: int) -> npt.NDArray[np.uint8]:
    """Pillow-exact bicubic resize of the shorter side to size, centre crop: uint8 [B, size, size, 3]."""

def model_ready(
    images: list[npt.NDArray[np.uint8]], size: int, mean: tuple[float, float, float], std: tuple[float, float, float]
) -> npt.NDArray[np.float32]:
    """resize_center_crop, then (v / 255 - mean) / std: float32 [B, 3, size, size]."""

def curve_auc(curves: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Trapezoid area of each row of [B, K] over x uniform on [0, 1]: float64 [B]."""

def localization_metrics(
    maps: list[npt.NDArray[np.float32]], masks: list[npt.NDArray[np.uint8]]
) -> npt.NDArray[np.float64]:
    """Point game, energy-PG, pixel accuracy, mask IoU, average precision per pair: float64 [B, 5]."""
