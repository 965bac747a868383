"""The Python example of docs/finetune.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "finetune.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_doc_example_runs(block, capsys):
    namespace: dict = {}
    exec(compile(block, str(DOC), "exec"), namespace)
    assert namespace["record"]["status"] == "done" and namespace["record"]["step"] == 2
    assert "'count'" in capsys.readouterr().out


def test_doc_names_every_flag_it_uses():
    from gradeclip.cli import build_parser

    parser = build_parser()
    text = DOC.read_text(encoding="utf-8")
    for command in ("finetune", "eval regions"):
        for line in re.findall(rf"gradeclip {command} (.*?)(?:\n(?!\s)|$)", text, re.S):
            for flag in re.findall(r"--[a-z-]+", line):
                args = command.split() + ["--help"]
                sub = parser._subparsers._group_actions[0].choices[args[0]]  # type: ignore[union-attr]
                if len(args) > 2:
                    sub = sub._subparsers._group_actions[0].choices[args[1]]  # type: ignore[union-attr]
                assert flag in sub._option_string_actions, (command, flag)
