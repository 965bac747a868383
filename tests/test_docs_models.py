"""The examples of docs/models.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "models.md"


def test_models_doc_examples_run():  # offline: the suite sets HF_HUB_OFFLINE=1 (conftest)
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 4
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    assert namespace["res"].classes == [3, 7]
    assert namespace["text"].importance.shape == (2, 2, 6)
    coca_words = namespace["words"]
    assert [w for w, _ in coca_words.words(0, 0)] == ["a", "cat", "on", "a", "sofa"]
    assert coca_words.importance[0, 0, 6:].sum() == 0  # nothing from EOT (position 6) on
