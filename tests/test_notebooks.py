"""The notebooks run top to bottom (short versions: JACE_NOTEBOOK_QUICK=1), each in a fresh kernel.

Skipped when the notebook tools (nbclient, ipykernel; in the ``test`` extra) are missing.
"""

import os
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks")
NAMES = sorted(n for n in os.listdir(NOTEBOOKS) if n.endswith(".ipynb"))


def test_notebooks_are_in_sync_with_their_source():
    sys.path.insert(0, NOTEBOOKS)
    try:
        import make_notebooks
    finally:
        sys.path.remove(NOTEBOOKS)
    assert sorted(make_notebooks.NOTEBOOKS) == NAMES
    for name, cells in make_notebooks.NOTEBOOKS.items():
        stored = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
        assert [c.source for c in stored.cells] == [c.source for c in cells], f"{name}: run notebooks/make_notebooks.py"
        assert all(not c.get("outputs") for c in stored.cells if c.cell_type == "code"), f"{name} is saved with outputs"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom(name, tmp_path, monkeypatch):
    monkeypatch.setenv("JACE_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("JACE_NOTEBOOK_WORK", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": NOTEBOOKS}})
    client.execute()  # raises CellExecutionError naming the failing cell
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
