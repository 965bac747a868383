"""The seam to the Rust extension: ``_native.pyi`` matches the compiled module, every gradeclip
module reaches the extension through ``gradeclip.native`` only, and what the extension raises
arrives as ``InputError`` (``InputTypeError`` for wrong types), from render and eval alike."""

from __future__ import annotations

import ast
import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gradeclip
from gradeclip import _native, native, render
from gradeclip import eval as ev
from gradeclip.errors import InputError, InputTypeError

PACKAGE = Path(gradeclip.__file__).resolve().parent


def stubtest(tmp_path: Path, stub: str) -> subprocess.CompletedProcess[str]:
    """``mypy.stubtest`` of the compiled ``gradeclip._native`` against ``stub`` (the text of a
    ``.pyi``). The stub sits in a stub-only package of its own, so mypy reads numpy's stubs and
    nothing of gradeclip's (its ``__init__`` would pull in torch's)."""
    stubs = tmp_path / "stubs" / "gradeclip"
    stubs.mkdir(parents=True)
    (stubs / "__init__.pyi").write_text("")
    (stubs / "_native.pyi").write_text(stub)
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\n")
    env = dict(os.environ, MYPYPATH=str(stubs.parent))
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE.parent), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "mypy.stubtest", "gradeclip._native", "--mypy-config-file", str(config)]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_stub_matches_the_compiled_module(tmp_path):
    stub = (PACKAGE / "_native.pyi").read_text()
    done = stubtest(tmp_path / "as-shipped", stub)
    assert done.returncode == 0, done.stdout + done.stderr
    # the check can fail: a renamed parameter and a missing function are both reported (on the
    # stub with its array types as `object`, which spares mypy numpy's stubs: seconds, not tens)
    untyped = re.sub(r"npt\.NDArray\[np\.\w+\]", "object", stub.replace("import numpy as np\nimport numpy.typing as npt\n", ""))
    assert "np." not in untyped and stubtest(tmp_path / "untyped", untyped).returncode == 0
    drifted = untyped.replace("def upsample(\n    maps:", "def upsample(\n    grids:").replace("def curve_auc(", "def _curve_auc(")
    assert drifted != untyped
    done = stubtest(tmp_path / "drifted", drifted)
    assert done.returncode != 0
    assert "gradeclip._native.upsample" in done.stdout and "gradeclip._native.curve_auc" in done.stdout


def test_only_the_seam_imports_the_extension():
    """``from . import _native`` / ``from .._native import ...`` anywhere but gradeclip/native.py
    would let the extension's ValueError / TypeError through untranslated."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "native.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module or ''}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            if any(name.split(".")[-1] == "_native" or "._native" in name or name.startswith("_native") for name in names):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert found == []


def test_every_extension_function_goes_through_the_seam():
    for name in _native.__all__:
        assert getattr(native, name).__wrapped__ is getattr(_native, name), name


@pytest.mark.parametrize("name", sorted(_native.__all__))
def test_a_wrong_argument_type_is_an_input_type_error(name):
    params = inspect.signature(getattr(_native, name)).parameters
    args = [object()] * max(1, len(params))  # no function takes plain objects; build_info takes none
    with pytest.raises(TypeError):
        getattr(_native, name)(*args)  # the extension's own error ...
    with pytest.raises(InputTypeError):
        getattr(native, name)(*args)  # ... reaches gradeclip's callers as an InputError


def test_extension_value_errors_are_input_errors():
    bad = np.zeros((4, 4), np.float32)
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN") as raw:
        _native.upsample([bad], [(8, 8)], "bilinear")
    assert not isinstance(raw.value, InputError)
    with pytest.raises(InputError, match="NaN"):
        native.upsample([bad], [(8, 8)], "bilinear")
    with pytest.raises(InputError, match=r"maps\[0\] contains NaN"):
        render.upsample(bad[None], (8, 8))
    with pytest.raises(InputError, match="NaN"):
        ev.localization_metrics(bad, np.ones((4, 4), bool))


@pytest.mark.parametrize(
    "call",
    [
        lambda images: render.overlay(images, np.zeros((2, 3, 3), np.float32)),
        lambda images: render.encode_png(images),
        lambda images: ev.resize_center_crop(images, 8),
        lambda images: ev.perturbation_steps(images, np.zeros((2, 8, 8), np.float32)),
    ],
    ids=["render.overlay", "render.encode_png", "eval.resize_center_crop", "eval.perturbation_steps"],
)
def test_render_and_eval_check_images_alike(call):
    """One converter (gradeclip.arrays): the same bad images give the same error and message."""
    with pytest.raises(InputTypeError, match=r"^images must be uint8 \(0\.\.255 RGB\), got float32$"):
        call(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(InputError, match=r"^images\[1\] must be RGB with a last axis of 3, got shape \(8, 8, 4\)$"):
        call([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 4), np.uint8)])
    with pytest.raises(InputTypeError, match=r"^images\[0\] must be a numpy array or a torch tensor, got str$"):
        call(["not an image", np.zeros((8, 8, 3), np.uint8)])


def test_save_overlays_write_errors_stay_os_errors(tmp_path):
    """A file that cannot be written is not an input error: OSError passes the seam as it is."""
    shutil.rmtree(tmp_path)
    with pytest.raises(OSError, match=r"paths\[0\]") as raised:
        render.save_overlays([tmp_path / "a.png"], np.zeros((1, 4, 4, 3), np.uint8), np.zeros((1, 2, 2), np.float32))
    assert not isinstance(raised.value, InputError)
