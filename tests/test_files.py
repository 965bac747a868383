"""gradeclip.files, the one atomic writer: a write that fails at any step leaves the old file as it
was and no temporary file; a complete write is fsynced before it is renamed into place; no other
module replaces files its own way."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

import gradeclip
from gradeclip import files

PACKAGE = Path(gradeclip.__file__).resolve().parent


def test_writes_replace_the_file(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    files.write_json(path, {"b": 1, "a": [1.5, "x"]}, indent=1, sort_keys=True)
    assert path.read_text() == '{\n "a": [\n  1.5,\n  "x"\n ],\n "b": 1\n}\n'
    files.write_text(path, "é\n")
    assert path.read_bytes() == "é\n".encode()
    files.write_bytes(path, b"\x00\x01")
    files.write_with(tmp_path / "other.bin", lambda f: f.write(b"abc"))
    assert path.read_bytes() == b"\x00\x01" and (tmp_path / "other.bin").read_bytes() == b"abc"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.bin", "out.json"]


class Crash(Exception):
    pass


def crash(*args, **kwargs):
    raise Crash


@pytest.mark.parametrize("step", ["write", "fsync", "replace"])
def test_a_crash_mid_write_keeps_the_old_file(tmp_path, monkeypatch, step):
    path = tmp_path / "state.json"
    path.write_text("old")

    def write(f):
        f.write(b"new, half")
        if step == "write":
            crash()
        f.write(b" and the rest")

    if step != "write":
        monkeypatch.setattr(os, step, crash)
    with pytest.raises(Crash):
        files.write_with(path, write)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary left


def test_the_new_file_is_fsynced_before_it_replaces_the_old(tmp_path, monkeypatch):
    events = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))), fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(a))), replace(a, b))[1])
    files.write_text(tmp_path / "a.txt", "x")
    assert [e[0] for e in events] == ["fsync", "replace"]
    assert events[0][1] == events[1][1]  # the file fsynced is the one renamed
    tmp = Path(events[1][1])
    assert tmp.parent == tmp_path and files.is_temporary(tmp.name) and tmp.name.startswith("a.txt.tmp-")


def test_temporary_names_are_unique(tmp_path, monkeypatch):
    seen = []
    replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (seen.append(Path(a).name), replace(a, b))[1])
    for _ in range(20):
        files.write_text(tmp_path / "a.txt", "x")
    assert len(set(seen)) == 20


def test_is_temporary():
    assert files.is_temporary("c0000001.npy.tmp-123-ab12cd34")
    assert files.is_temporary(".000003-0.png.4242-7.tmp")  # the Rust overlay writer's
    assert not files.is_temporary("manifest.json") and not files.is_temporary("notes.tmp")


def test_no_module_replaces_files_its_own_way():
    """Only gradeclip/files.py renames files into place (``os.replace``, ``os.rename``, ``.rename``)."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "files.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("replace", "rename"):
                target = node.func.value
                if (isinstance(target, ast.Name) and target.id == "os") or (node.func.attr == "rename"):
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert found == []

