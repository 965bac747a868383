"""The package's import: ``import gradeclip`` is light (the torch / pyarrow stack loads on first use
of a public name), every public name still resolves, and no module imports the package ``__init__``
from below."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import gradeclip

PACKAGE = Path(gradeclip.__file__).resolve().parent

# what a bare ``import gradeclip`` must not load: each costs from 0.1 s to seconds
HEAVY = ["torch", "torch.utils.data", "pyarrow", "pyarrow.parquet", "pandas", "open_clip", "transformers", "timm"]


def run_python(code: str) -> str:
    """``code`` run by a fresh interpreter with this checkout's package first on the path; its stdout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE.parent), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_import_loads_no_heavy_module():
    code = f"import json, sys\nimport gradeclip\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    assert json.loads(run_python(code)) == []


def test_public_names_resolve_to_their_modules():
    import gradeclip.explainer
    import gradeclip.pipeline
    import gradeclip.store

    for name in gradeclip.__all__:
        assert getattr(gradeclip, name) is not None, name
    assert set(gradeclip.__all__) <= set(dir(gradeclip))
    assert gradeclip.Explainer is gradeclip.explainer.Explainer
    assert gradeclip.ExplainJob is gradeclip.pipeline.ExplainJob
    assert gradeclip.Store is gradeclip.store.Store
    assert gradeclip.synth is sys.modules["gradeclip.synth"]
    try:
        gradeclip.not_a_name  # noqa: B018
    except AttributeError as error:
        assert "not_a_name" in str(error)
    else:
        raise AssertionError("an unknown attribute must raise AttributeError")


def test_methods_stays_the_function_when_the_subpackage_is_imported_first():
    """``gradeclip.methods`` (the function) and ``gradeclip.methods`` (the subpackage) share a name;
    importing the subpackage, before or after the package, must not replace the function."""
    code = (
        "from gradeclip.methods import registry\n"
        "import gradeclip\n"
        "assert gradeclip.methods is registry.methods, gradeclip.methods\n"
        "from gradeclip import methods\n"
        "import json; print(json.dumps(sorted(methods())))\n"
    )
    assert "gradeclip" in json.loads(run_python(code))


def package_init_imports(path: Path) -> list[str]:
    """``file:line name`` for each import in ``path`` that reads a name from the package ``__init__``
    (``from . import __version__``, ``from gradeclip import Explainer``); importing a submodule
    (``from . import render``) is fine."""
    relative = path.relative_to(PACKAGE.parent)
    package = list(relative.parts[:-1])  # the package the file's relative imports start from
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + (node.module.split(".") if node.module else []))
            if module != "gradeclip":
                continue
            for alias in node.names:
                if not ((PACKAGE / alias.name).is_dir() or any(PACKAGE.glob(f"{alias.name}.*"))):  # not a submodule
                    found.append(f"{relative}:{node.lineno} {alias.name}")
        elif isinstance(node, ast.Import):
            found += [f"{relative}:{node.lineno} import gradeclip" for alias in node.names if alias.name == "gradeclip"]
    return found


def test_no_module_imports_the_package_init():
    """Imports point down: the package ``__init__`` sits above every module, so none reads from it."""
    modules = [p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py"]
    assert len(modules) > 50
    found = [hit for path in modules for hit in package_init_imports(path)]
    assert found == []


def test_architecture_doc_names_every_module_and_only_real_ones():
    """docs/architecture.md says where things live: every top-level module and subpackage is in
    it, and every module or folder it names exists."""
    import re

    text = (PACKAGE.parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`([\w/]+(?:\.py|/))`", text))
    top = {p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    top |= {f"{p.name}/" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert sorted(top - named) == []
    files = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")} | {p.name for p in PACKAGE.rglob("*.py")}
    folders = {f"{p.relative_to(PACKAGE)}/" for p in PACKAGE.rglob("*") if p.is_dir()}
    assert sorted(n for n in named - {"python/gradeclip/", "rust/"} if n not in files | folders) == []
