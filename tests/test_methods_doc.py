"""The example in docs/methods.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "methods.md"


@pytest.mark.slow
def test_methods_doc_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, "docs/methods.md has no python example"
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), {})
