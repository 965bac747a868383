"""The Python examples of docs/evaluation.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "evaluation.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_doc_example_runs(block, capsys):
    exec(compile(block, str(DOC), "exec"), {})


def test_fill_snippet_is_the_tests_reference():
    import numpy as np
    import reference_eval

    namespace: dict = {}
    exec(compile(next(b for b in BLOCKS if "def fill_bytes" in b), str(DOC), "exec"), namespace)
    np.testing.assert_array_equal(namespace["fill_bytes"](7, 3, 1000), reference_eval.fill_bytes(7, 3, 1000))
