"""The README's Quickstart runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(section: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def test_quickstart_runs(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    blocks = python_blocks("Quickstart")
    assert blocks, "the README has no Quickstart code"
    monkeypatch.chdir(tmp_path)  # the Quickstart writes an overlay PNG
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    res = namespace["res"]
    assert tuple(res.maps.shape) == (2, 3, 14, 14)
    assert namespace["heat"].shape == (2, 3, 224, 224)
    assert namespace["overlay"].shape == (300, 451, 3)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "cat-overlay.png")), namespace["overlay"])
    assert [w for w, _ in namespace["words"]] == ["a", "cat", "on", "a", "sofa"]
