"""The analyses' figures (matplotlib, written as PNG): map grids (paper Figs. 13–14) and scatter
plots (Figs. 15–16). matplotlib is imported on first use, with the headless Agg backend."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:  # an optional dependency: say how to get it
        raise InputError("the analysis figures need matplotlib: pip install matplotlib (or gradeclip[analysis])") from exc
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def map_grid(
    rows: Sequence[Sequence[tuple[np.ndarray, str]]], path: str | os.PathLike[str], *, cell: float = 1.9, title: str | None = None
) -> None:
    """Write a grid of images to ``path`` (PNG): ``rows[r][c]`` is ``(uint8 RGB [H, W, 3], caption)``;
    rows may differ in length (empty cells stay blank)."""
    plt = _pyplot()
    if not rows or not any(rows):
        raise InputError("map_grid needs at least one image")
    ncols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(cell * ncols, cell * len(rows) + (0.4 if title else 0)), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(ncols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(row):
                image, caption = row[c]
                ax.imshow(image)
                ax.set_title(caption, fontsize=7, wrap=True)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def scatter(
    x: np.ndarray,
    y: np.ndarray,
    path: str | os.PathLike[str],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    line: tuple[float, float] | None = None,
    colour: np.ndarray | None = None,
    colour_label: str | None = None,
    labels: Sequence[str] | None = None,
    n_labels: int = 12,
) -> None:
    """Write a scatter plot to ``path`` (PNG): points ``(x, y)``, an optional regression line
    ``(slope, intercept)`` (red, dashed), optional point colours with a colour bar, and the words
    ``labels`` of the ``n_labels`` points with the highest and lowest ``y``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    points = ax.scatter(x, y, s=9, c=colour if colour is not None else "tab:blue", cmap="coolwarm" if colour is not None else None, alpha=0.75)
    if colour is not None:
        fig.colorbar(points, ax=ax, label=colour_label)
    if line is not None and len(x):
        xs = np.linspace(float(np.min(x)), float(np.max(x)), 50)
        ax.plot(xs, line[0] * xs + line[1], "r--", linewidth=1.5)
    if labels is not None and len(y):
        order = np.argsort(y, kind="stable")
        half = max(1, n_labels // 2)
        for i in list(order[:half]) + list(order[-half:]):
            ax.annotate(labels[i], (x[i], y[i]), fontsize=6, alpha=0.85)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
