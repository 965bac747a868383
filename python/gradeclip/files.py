"""Replacing files atomically: the one way gradeclip writes a file that a reader, a resumed run or
a crash may meet half-written (store shards and manifests, evaluation results, checkpoints,
weights, demo and coverage pages).

Each write goes to a temporary file in the target's folder, named ``<name>.tmp-<pid>-<random>``
(unique per call, so concurrent writers never share one), is flushed and fsynced, then renamed
over the target with ``os.replace``. A reader therefore sees the old file, no file, or the
complete new one; a write that fails removes its temporary file and leaves the old file as it
was. Folders are not created. (Overlay PNGs are written the same way by the Rust core, with
names ``.<name>.<pid>-<n>.tmp``: :func:`gradeclip.render.save_overlays`.)
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["is_temporary", "write_bytes", "write_json", "write_text", "write_with"]

_MARK = ".tmp-"


def write_with(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> None:
    """Atomically replace ``path`` with what ``write(file)`` writes to the binary file it is given
    (``np.save``, ``torch.save``, ``pq.write_table`` all take one)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}{_MARK}{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically replace ``path`` with ``data``."""
    write_with(path, lambda f: f.write(data))


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically replace ``path`` with ``text`` encoded as UTF-8."""
    write_bytes(path, text.encode("utf-8"))


def write_json(
    path: str | os.PathLike[str], value: Any, *, indent: int = 2, sort_keys: bool = False, default: Callable[[Any], Any] | None = None
) -> None:
    """Atomically replace ``path`` with ``value`` as JSON (``json.dumps`` with these options) and a
    final newline."""
    write_text(path, json.dumps(value, indent=indent, sort_keys=sort_keys, default=default) + "\n")


def is_temporary(name: str) -> bool:
    """Whether a file name is an unfinished write's: ours (``*.tmp-<pid>-<random>``) or the Rust
    overlay writer's (``.*.tmp``). Such files are what an interrupted process leaves behind."""
    return _MARK in name or (name.startswith(".") and name.endswith(".tmp"))
