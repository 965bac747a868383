"""The example notebook runs top to bottom offline (nbclient, a real Jupyter kernel) and shows its
results inline: overlays and word highlights as HTML, the overlay as a PNG, the Hugging Face model's words."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import gradeclip

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "examples" / "explain_in_a_notebook.ipynb"


def outputs(cell) -> tuple[str, dict[str, str]]:
    """A code cell's printed text and its display data (mime type → content, the last one wins)."""
    text, data = "", {}
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            text += out["text"]
        elif out["output_type"] in ("execute_result", "display_data"):
            data.update(out["data"])
    return text, data


@pytest.mark.slow
def test_notebook_runs_and_shows_results(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    package = Path(gradeclip.__file__).resolve().parents[1]  # this checkout's package, for the kernel too
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(package), os.environ.get("PYTHONPATH", "")]))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(c.get("outputs") for c in notebook.cells if c.cell_type == "code"), "commit the notebook without outputs"
    work = tmp_path / "run"
    work.mkdir()
    (work / "hf_offline.py").write_bytes((NOTEBOOK.parent / "hf_offline.py").read_bytes())
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    code = [c for c in notebook.cells if c.cell_type == "code"]
    text, shown = outputs(code[1])
    assert "ImageExplanation(method='gradeclip', 3 images × 3 texts" in text
    assert "overlays on the images as given" in shown["text/html"] and shown["text/html"].count("<img") == 9
    text, shown = outputs(code[2])
    assert "(300, 451, 3)" in text and "image/png" in shown and (work / "cat-overlay.png").is_file()
    text, shown = outputs(code[3])
    assert "('red'," in text and 'class="gradeclip-text"' in shown["text/html"] and "<img" in shown["text/html"]
    text, shown = outputs(code[4])
    assert "CLIPModel HFTokenizer(CLIPTokenizer" in text
    assert "[('A', " in text and "('tabby', " in text and "(',', " in text and "('!', " in text
    assert 'class="gradeclip-text"' in shown["text/html"]
