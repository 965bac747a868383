"""Every ``gradeclip ...`` command shown in docs/analysis.md and docs/reproduce.md parses with the
real argument parser (so a renamed or removed flag breaks this test, not a reader's run)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from gradeclip.cli import build_parser

DOCS = Path(__file__).resolve().parents[1] / "docs"


def commands(name: str) -> list[str]:
    """The ``gradeclip`` command lines of the doc's ``bash`` blocks (backslash continuations joined)."""
    blocks = re.findall(r"```bash\n(.*?)```", (DOCS / name).read_text(), flags=re.S)
    lines = [line.strip() for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [line for line in lines if line.startswith("gradeclip ")]


@pytest.mark.parametrize("doc,least", [("analysis.md", 3), ("reproduce.md", 8)])
def test_doc_commands_parse(doc, least):
    found = commands(doc)
    assert len(found) >= least, found
    parser = build_parser()
    for line in found:
        words = shlex.split(line.split(" #", 1)[0])[1:]
        try:
            parser.parse_args(words)
        except SystemExit as exc:  # argparse reports the bad flag on stderr and exits 2
            pytest.fail(f"{doc}: `{line}` does not parse (exit {exc.code})")
