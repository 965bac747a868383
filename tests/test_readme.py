"""The README's Quickstart runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(section: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def test_quickstart_runs():
    blocks = python_blocks("Quickstart")
    assert blocks, "the README has no Quickstart code"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    res = namespace["res"]
    assert tuple(res.maps.shape) == (2, 3, 14, 14)
    assert namespace["heat"].shape == (2, 3, 224, 224)
    assert namespace["words"] and all(isinstance(w, str) for w, _ in namespace["words"])
