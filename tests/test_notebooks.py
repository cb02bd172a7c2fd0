"""The shipped notebooks run top to bottom (nbclient, the venv's python3 kernel) on small fake runs."""

from __future__ import annotations

import nbformat
from nbclient import NotebookClient

from tests.helpers import REPO
from tests.test_compare import write_fake_study


def _outputs(nb, kind: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if kind in o.get("data", {})]


def test_compare_runs_notebook(tmp_path, monkeypatch):
    write_fake_study(tmp_path / "runs", methods=("sft", "cft"), seeds=(0, 1))
    monkeypatch.setenv("CFT_RUNS", str(tmp_path / "runs" / "study"))
    monkeypatch.setenv("CFT_COMPARE_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(REPO / "notebooks/compare_runs.ipynb", as_version=4)
    # jupyter_client starts the "python3" kernel with this interpreter (the venv's), run from tmp_path.
    NotebookClient(nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert (tmp_path / "out" / "summary.md").is_file()
    markdown = "".join(o["data"]["text/markdown"] for o in _outputs(nb, "text/markdown"))
    assert "| cft | 2 |" in markdown and "| sft | 2 |" in markdown
    assert len(_outputs(nb, "image/png")) == 4
    assert any("method" in o["data"]["text/html"] for o in _outputs(nb, "text/html"))  # the per-seed table


def test_critical_tokens_notebook(tmp_path, monkeypatch):
    from cft.data.annotation_format import write_part
    from tests.test_viz import _row

    ann = tmp_path / "ann"
    ann.mkdir()
    write_part(ann / "part-00000.parquet", [_row(i) for i in range(3)], {"asked": ["q0", "q1", "q2"], "skipped": {}})
    monkeypatch.setenv("CFT_ANNOTATIONS", str(ann))
    monkeypatch.setenv("CFT_HTML_OUT", str(tmp_path / "crit.html"))
    nb = nbformat.read(REPO / "notebooks/critical_tokens.ipynb", as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    # 9 critical of 42 scored positions (the token after the answer is never scored): 9 / 42 = 0.214.
    assert "3 responses, critical fraction 0.214" in printed
    assert (tmp_path / "crit.html").read_text().count("class='tok crit'") == 9
    assert any("digits" in o["data"]["text/html"] for o in _outputs(nb, "text/html"))
