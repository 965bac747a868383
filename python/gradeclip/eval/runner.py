"""The resumable runner every evaluation task uses: samples in chunks, one record per sample
journaled as it is finished (a rerun with the same settings skips them), seconds per stage.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..data import Sample
from ..errors import InputError
from ..files import write_text
from .report import FaithfulnessResult, LocalizationResult, settings_key


def positive_int(name: str, value: Any) -> int:
    """``value`` if it is a positive integer, else an :class:`InputError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return value


class Stopwatch:
    """Seconds spent per named stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0

    def summary(self) -> dict[str, float]:
        """Every stage, plus ``total`` (wall time since creation) and ``other`` (the rest)."""
        total = time.perf_counter() - self._start
        out = dict(self.seconds)
        out["other"] = max(0.0, total - sum(self.seconds.values()))
        out["total"] = total
        return out


class Journal:
    """Per-image records of an unfinished run, one JSON line each, so a rerun with the same
    settings skips the images already done. A torn last line (a killed run) is ignored."""

    def __init__(self, path: Path, key: str):
        self.path = path
        self.key = key
        self.records: dict[int, dict[str, Any]] = {}
        if path.is_file():
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
            if lines and _json_or_none(lines[0]) == {"settings_key": key}:
                for line in lines[1:]:
                    record = _json_or_none(line)
                    if isinstance(record, dict) and "index" in record:
                        self.records[int(record["index"])] = record
        # rewritten atomically (a kill now keeps the old journal): drops a torn tail or a stale run
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({"settings_key": key})] + [json.dumps(record) for record in self.records.values()]
        write_text(path, "".join(line + "\n" for line in lines))
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (kept open until close())

    def add(self, record: dict[str, Any]) -> None:
        """Append one finished sample's record (one line, flushed and synced to disk)."""
        self.records[int(record["index"])] = record
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self, remove: bool) -> None:
        self._file.close()
        if remove:
            self.path.unlink(missing_ok=True)


def _json_or_none(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def first_samples(dataset: Sequence[Sample], limit: int | None) -> list[Sample]:
    """The samples a run evaluates: the first ``limit`` (all with None); an empty dataset is an :class:`InputError`."""
    samples = list(dataset)[: limit if limit is not None else None]
    if not samples:
        raise InputError("the dataset is empty")
    return samples


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of ``items`` of ``size`` (the last may be shorter)."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


def run_resumable(
    samples: Sequence[Sample],
    evaluate: Callable[[Sequence[Sample]], list[dict[str, Any]]],
    *,
    settings: dict[str, Any],
    out_dir: str | os.PathLike[str] | None,
    name: str,
    chunk_size: int,
    desc: str,
    progress: bool,
) -> tuple[list[dict[str, Any]], Journal | None]:
    """Run ``evaluate`` over ``samples`` in chunks, one record per sample (``"index"`` keyed),
    journaling each chunk under ``out_dir`` and skipping samples a journal of the same settings
    already holds. Returns the records in dataset order and the journal (closed; delete it once
    the results are saved)."""
    from tqdm.auto import tqdm

    journal = Journal(Path(out_dir) / f"{name}.partial.jsonl", settings_key(settings)) if out_dir is not None else None
    records: dict[int, dict[str, Any]] = dict(journal.records) if journal else {}
    todo = [s for s in samples if s.index not in records]
    try:
        with tqdm(total=len(samples), initial=len(samples) - len(todo), desc=desc, disable=not progress) as bar:
            for chunk in chunks(todo, chunk_size):
                for record in evaluate(chunk):
                    records[int(record["index"])] = record
                    if journal:
                        journal.add(record)
                bar.update(len(chunk))
    finally:
        if journal:
            journal.close(remove=False)
    return [records[s.index] for s in samples], journal


def save(
    result: FaithfulnessResult | LocalizationResult, out_dir: str | os.PathLike[str] | None, name: str, journal: Journal | None
) -> None:
    """Save the finished result and drop the journal it no longer needs."""
    if out_dir is not None:
        result.save(out_dir, name)
    if journal is not None:
        journal.path.unlink(missing_ok=True)
