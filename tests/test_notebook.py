"""notebooks/explore_run.ipynb runs headlessly against a small run, so it never goes stale."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO
from tests.test_report import build_small_run

NOTEBOOK = REPO / "notebooks" / "explore_run.ipynb"


def test_notebook_is_stored_without_outputs():
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    assert "parameters" in code[0].get("metadata", {}).get("tags", [])  # papermill can set OUT


def test_explore_notebook_runs_on_a_small_run(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient", reason="pip install nbclient ipykernel (the notebook extra)")
    pytest.importorskip("matplotlib")
    out = build_small_run(tmp_path)
    monkeypatch.setenv("GRIST_RUN", str(out))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError naming the failing cell

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= 5  # funnel, reasons, lengths, quality signals, duplicates, tokens
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "small - alpha (local) -> beta (local) -> lang (lid_filter) -> quality (quality_filter) -> dedup (dedup) -> tokenize (tokenize)" in text
    assert "removed by lang: {'fr': 1}" in text
    index = json.loads((out / "tokens" / "index.json").read_text())
    assert f"'train': {index['splits']['train']['tokens']}" in text
