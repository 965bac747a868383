"""Evaluation results: what they hold, how they are saved (JSON + CSV, atomically) and read
back, and the paper's summary tables."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..files import write_json, write_text
from .metrics import LOCALIZATION_METRICS, auc

MODE_ARROWS = {"deletion": "↓", "insertion": "↑"}
TABLE_TITLES = {
    "classification": "Deletion / insertion AUC, zero-shot classification (paper Table I)",
    "retrieval": "Deletion / insertion AUC, image-text retrieval (paper Table II)",
    "text retrieval": "Word deletion / insertion AUC, image-text retrieval (paper Table III)",
}
LOCALIZATION_HEADERS = {
    "point_game": "PG",
    "energy_pg": "energy-PG",
    "pixel_accuracy": "Pixel Acc.",
    "average_precision": "AP",
    "mask_iou": "maskIoU",
}
#: the paper's column order for Table IV
LOCALIZATION_TABLE_ORDER = ("point_game", "energy_pg", "pixel_accuracy", "average_precision", "mask_iou")


def settings_key(settings: dict[str, Any]) -> str:
    """A short hash of the settings that determine the numbers (same key ⇒ results can be resumed)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]




def default_name(settings: dict[str, Any]) -> str:
    """A file name for a run: task, method, target, and the settings key."""
    parts = [settings.get("task", "eval"), settings.get("method", ""), settings.get("target", "")]
    stem = "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", str(p)) for p in parts if p)
    return f"{stem}-{settings_key(settings)}"


@dataclass
class FaithfulnessResult:
    """Deletion / insertion curves of one method over a dataset (SPEC §7).

    Attributes:
        settings: everything the numbers depend on (model, method, options, scorer, schedule, …).
        metrics: the scorer's metrics, e.g. ``("top1", "top5")`` or ``("ir@1", "ir@5", "tr@1", "tr@5")``.
        fractions: nominal fraction of pixels changed at each of the K checkpoints.
        hits: ``{mode: float64 [N, K, M]}``, each image's 0/1 scores at each checkpoint.
        indices: the N images' dataset indices; keys: their ids; targets: each image's explained
            target (class index or caption row).
        timings: seconds spent per stage (``load``, ``preprocess``, ``explain``, ``perturb``, ``score``, ``setup``, ``total``).
    """

    settings: dict[str, Any]
    metrics: tuple[str, ...]
    fractions: list[float]
    hits: dict[str, np.ndarray]
    indices: list[int]
    keys: list[str]
    targets: list[int]
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_records(
        cls,
        settings: dict[str, Any],
        metrics: tuple[str, ...],
        fractions: list[float],
        records: list[dict[str, Any]],
        modes: Sequence[str],
        timings: dict[str, float],
    ) -> FaithfulnessResult:
        """The result of a run's per-image records (``index``, ``key``, ``target``, ``hits``:
        ``{mode: [K][M]}``), in the order given."""
        k, m = len(fractions), len(metrics)
        return cls(
            settings=settings,
            metrics=metrics,
            fractions=fractions,
            hits={mode: np.array([r["hits"][mode] for r in records], dtype=np.float64).reshape(len(records), k, m) for mode in modes},
            indices=[r["index"] for r in records],
            keys=[r["key"] for r in records],
            targets=[r["target"] for r in records],
            timings=timings,
        )
    @property
    def curves(self) -> dict[str, np.ndarray]:
        """``{mode: float64 [K, M]}``: the dataset mean at each checkpoint."""
        return {mode: h.mean(axis=0) for mode, h in self.hits.items()}

    @property
    def auc(self) -> dict[str, dict[str, float]]:
        """``{mode: {metric: AUC}}`` of the mean curves (x uniform on [0, 1])."""
        return {mode: {m: float(auc(curve[:, i])) for i, m in enumerate(self.metrics)} for mode, curve in self.curves.items()}

    def per_image_auc(self, mode: str) -> np.ndarray:
        """float64 ``[N, M]``: each image's AUC for ``mode``."""
        h = self.hits[mode]
        return np.stack([auc(h[:, :, i]) for i in range(h.shape[2])], axis=1) if len(h) else np.zeros((0, len(self.metrics)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": "faithfulness",
            "settings": self.settings,
            "metrics": list(self.metrics),
            "fractions": self.fractions,
            "curves": {mode: c.tolist() for mode, c in self.curves.items()},
            "auc": self.auc,
            "timings": self.timings,
            "images": [
                {"index": i, "key": k, "target": t, "hits": {mode: h[n].astype(int).tolist() for mode, h in self.hits.items()}}
                for n, (i, k, t) in enumerate(zip(self.indices, self.keys, self.targets))
            ],
        }

    def csv_text(self) -> str:
        """One row per (image, mode, metric): ids, the image's AUC, then its curve."""
        out = io.StringIO()
        writer = csv.writer(out)
        k = len(self.fractions)
        writer.writerow(["index", "key", "target", "mode", "metric", "auc"] + [f"p{j}" for j in range(k)])
        for mode, h in self.hits.items():
            areas = self.per_image_auc(mode)
            for n, (index, key, target) in enumerate(zip(self.indices, self.keys, self.targets)):
                for m, metric in enumerate(self.metrics):
                    writer.writerow([index, key, target, mode, metric, f"{areas[n, m]:.6g}"] + [f"{v:g}" for v in h[n, :, m]])
        return out.getvalue()

    def save(self, out_dir: str | os.PathLike[str], name: str | None = None) -> tuple[Path, Path]:
        """Write ``<name>.json`` (settings, curves, AUCs, per-image hits, timings) and ``<name>.csv``
        (per-image AUCs and curves) into ``out_dir`` atomically. Returns both paths."""
        return _save(self.to_dict(), self.csv_text(), out_dir, name or default_name(self.settings))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaithfulnessResult:
        images = data["images"]
        modes = list(data["curves"])
        hits = {
            m: np.array([img["hits"][m] for img in images], dtype=np.float64).reshape(
                len(images), len(data["fractions"]), len(data["metrics"])
            )
            for m in modes
        }
        return cls(
            settings=data["settings"],
            metrics=tuple(data["metrics"]),
            fractions=list(data["fractions"]),
            hits=hits,
            indices=[img["index"] for img in images],
            keys=[img["key"] for img in images],
            targets=[img["target"] for img in images],
            timings=data.get("timings", {}),
        )


@dataclass
class LocalizationResult:
    """SPEC §8 metrics of one method over a dataset of images with masks.

    Attributes:
        settings: everything the numbers depend on.
        values: ``{metric: float64 [N]}`` per image, for :data:`LOCALIZATION_METRICS`.
        keys: the N images' ids; skipped: ids of images left out (no object pixel left in the
            mask at the evaluated geometry).
        timings: seconds per stage.
    """

    settings: dict[str, Any]
    values: dict[str, np.ndarray]
    keys: list[str]
    skipped: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def means(self) -> dict[str, float]:
        """``{metric: mean over images}`` (NaN when no image was evaluated)."""
        return {m: float(v.mean()) if len(v) else float("nan") for m, v in self.values.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": "localization",
            "settings": self.settings,
            "means": self.means,
            "skipped": self.skipped,
            "timings": self.timings,
            "images": [{"key": k, **{m: float(v[n]) for m, v in self.values.items()}} for n, k in enumerate(self.keys)],
        }

    def csv_text(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["key", *LOCALIZATION_METRICS])
        for n, key in enumerate(self.keys):
            writer.writerow([key] + [f"{self.values[m][n]:.6g}" for m in LOCALIZATION_METRICS])
        return out.getvalue()

    def save(self, out_dir: str | os.PathLike[str], name: str | None = None) -> tuple[Path, Path]:
        """Write ``<name>.json`` and ``<name>.csv`` (per-image metrics) atomically."""
        return _save(self.to_dict(), self.csv_text(), out_dir, name or default_name(self.settings))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LocalizationResult:
        images = data["images"]
        return cls(
            settings=data["settings"],
            values={m: np.array([img[m] for img in images], dtype=np.float64) for m in LOCALIZATION_METRICS},
            keys=[img["key"] for img in images],
            skipped=list(data.get("skipped", [])),
            timings=data.get("timings", {}),
        )


def _save(data: dict[str, Any], csv_text: str, out_dir: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    out = Path(out_dir)
    json_path, csv_path = out / f"{name}.json", out / f"{name}.csv"
    out.mkdir(parents=True, exist_ok=True)
    write_json(json_path, data, indent=1, default=_jsonable)
    write_text(csv_path, csv_text)
    return json_path, csv_path


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return os.fspath(value)
    return str(value)


def load_result(path: str | os.PathLike[str]) -> FaithfulnessResult | LocalizationResult:
    """Read a result JSON written by ``save``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read result {os.fspath(path)!r}: {exc}") from exc
    if data.get("task") == "faithfulness":
        return FaithfulnessResult.from_dict(data)
    if data.get("task") == "localization":
        return LocalizationResult.from_dict(data)
    raise InputError(f"{os.fspath(path)!r} is not a gradeclip evaluation result")


def method_label(settings: dict[str, Any]) -> str:
    """A table row name: the method, plus its options when any were set."""
    options = settings.get("options") or {}
    extra = " ".join(f"{k}={v}" for k, v in sorted(options.items()))
    return f"{settings.get('method', '?')}{' ' + extra if extra else ''}"


def _grid(header_rows: list[list[str]], rows: list[list[str]]) -> str:
    table = header_rows + rows
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(len(header_rows), "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary_table(results: Iterable[FaithfulnessResult | LocalizationResult]) -> str:
    """The paper's layout: deletion/insertion AUCs (Tables I–II: rows = methods, columns = mode ×
    target or retrieval direction × @k) and localisation means (Table IV)."""
    results = list(results)
    parts = []
    faith = [r for r in results if isinstance(r, FaithfulnessResult)]
    for scorer in sorted({r.settings.get("scorer", "") for r in faith}):
        title = TABLE_TITLES.get(scorer, f"Deletion / insertion AUC, {scorer}")
        parts.append(title + "\n" + _faithfulness_table([r for r in faith if r.settings.get("scorer", "") == scorer]))
    local = [r for r in results if isinstance(r, LocalizationResult)]
    if local:
        parts.append("Localisation (mean over images)")
        header = ["method", *(LOCALIZATION_HEADERS[m] for m in LOCALIZATION_TABLE_ORDER), "images"]
        rows = [
            [method_label(r.settings), *(f"{r.means[m]:.4f}" for m in LOCALIZATION_TABLE_ORDER), str(len(r.keys))] for r in local
        ]
        parts[-1] += "\n" + _grid([header], rows)
    return "\n\n".join(parts)


def _sparse(labels: list[str], keys: list[str]) -> list[str]:
    """Each label only over the first of the consecutive columns sharing its key."""
    return [label if i == 0 or keys[i] != keys[i - 1] else "" for i, label in enumerate(labels)]


def _faithfulness_table(results: Sequence[FaithfulnessResult]) -> str:
    modes = [m for m in ("deletion", "insertion") if any(m in r.hits for r in results)]
    groups = sorted({r.settings.get("target", "") for r in results}, key=lambda t: (t != "ground_truth", t))
    metrics = list(dict.fromkeys(m for r in results for m in r.metrics))

    # retrieval metrics "ir@1" split into a group (IR/TR) and a column (@1); classification "top1" → "@1"
    def split(metric: str) -> tuple[str, str]:
        if "@" in metric:
            group, k = metric.split("@")
            return group.upper(), f"@{k}"
        return "", "@" + metric.removeprefix("top")

    columns = [(mode, target, metric) for mode in modes for target in groups for metric in metrics]
    top_labels = [f"{mode.capitalize()} {MODE_ARROWS[mode]}" for mode, _, _ in columns]
    mid_labels = [(target.replace("_", " ") + " " + split(metric)[0]).strip() for _, target, metric in columns]
    top = ["", *_sparse(top_labels, top_labels)]
    middle = ["", *_sparse(mid_labels, [f"{a}|{b}" for a, b in zip(top_labels, mid_labels)])]
    bottom = ["method", *(split(metric)[1] for _, _, metric in columns)]
    by_method: dict[str, dict[tuple[str, str, str], str]] = {}
    for r in results:
        cells = by_method.setdefault(method_label(r.settings), {})
        for mode, values in r.auc.items():
            for metric, value in values.items():
                cells[(mode, r.settings.get("target", ""), metric)] = f"{value:.4f}"
    rows = [[label, *(cells.get(c, "-") for c in columns)] for label, cells in by_method.items()]
    return _grid([top, middle, bottom], rows)
