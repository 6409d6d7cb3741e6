"""Every notebook in notebooks/ runs end to end (nbclient, tiny settings, synthetic data), and it is committed
without outputs, exactly as scripts/make_notebooks.py writes it."""
import os

import pytest

from conftest import REPO_ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = sorted(f for f in os.listdir(os.path.join(REPO_ROOT, "notebooks")) if f.endswith(".ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_end_to_end(name, tmp_path, monkeypatch):
    path = os.path.join(REPO_ROOT, "notebooks", name)
    book = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in book.cells if cell.cell_type == "code"), "committed with outputs"
    monkeypatch.setenv("NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("MVTEC_DIR", str(tmp_path / "no_mvtec_here"))
    client = nbclient.NotebookClient(book, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": os.path.join(REPO_ROOT, "notebooks")}})
    client.execute()
    outputs = "".join(str(o.get("text", "")) for cell in book.cells for o in cell.get("outputs", []))
    assert "using synthetic data" in outputs and "exported" in outputs and "image(s) ->" in outputs
    images = [o for cell in book.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # heatmaps shown inline


def test_notebooks_are_the_template_output_for_every_method():
    """One template serves every method: each notebook equals what scripts/make_notebooks.py writes now."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_notebooks", os.path.join(REPO_ROOT, "scripts",
                                                                                 "make_notebooks.py"))
    template = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(template)
    expected = template.build_all()
    assert sorted(os.path.basename(p) for p in expected) == NOTEBOOKS
    for path, book in expected.items():
        committed = nbformat.read(path, as_version=4)
        assert [c.source for c in committed.cells] == [c.source for c in book.cells], path
