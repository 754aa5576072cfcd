"""Runs every notebook in notebooks/ top to bottom, with tiny parameters.

Each notebook reads its parameters from `MTL_NB_*` environment variables; the
kernel inherits the ones set here. The notebooks are committed without
outputs, which is checked too, and they must run without Python warnings
(their causes are fixed, not filtered: e.g. `make_batches` knows its batch
count, and `fit` on a tf.data dataset gets `shuffle=False`).
"""

import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # every notebook executed: minutes (CI runs them: .ci/run)

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
CELL_TIMEOUT = 300  # seconds per cell
TINY = {
    "MTL_NB_EPOCHS": "1",
    "MTL_NB_HIDDEN": "16",
    "MTL_NB_LAYERS": "1",
    "MTL_NB_MAX_ROWS": "128",
    "MTL_NB_MAX_DEV_ROWS": "64",
    "MTL_NB_TFDS_DOWNLOAD": "0",  # never wait for a download in a test
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


def run_notebook(path, monkeypatch, tmp_path, **env):
    """Executes the notebook at `path` in a fresh kernel; raises on a failing cell."""
    for key, value in {**TINY, "MTL_NB_OUTPUT_DIR": str(tmp_path), **env}.items():
        monkeypatch.setenv(key, value)
    # The kernel imports mtl_keras from this checkout, installed or not.
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    ).execute()
    return notebook


# A Python warning as `warnings.showwarning` prints it: "file:line: UserWarning: ...".
WARNING_LINE = re.compile(r"^.*:\d+: (\w*Warning): .*$", re.MULTILINE)


def printed(notebook, name=None):
    """Everything the code cells printed (to stream `name`, or to both)."""
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream" and name in (None, output.name)
    )


def errors_of(notebook):
    return [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]


def python_warnings(notebook):
    return [
        match.group(0) for match in WARNING_LINE.finditer(printed(notebook, "stderr"))
    ]


def test_the_tutorial_notebooks_are_there():
    names = [path.name for path in NOTEBOOKS]
    for expected in (
        "01_quickstart.ipynb",
        "02_real_data.ipynb",
        "03_the_training_loop.ipynb",
    ):
        assert expected in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: cell {cell.id} has outputs"
            assert cell.execution_count is None, (
                f"{path.name}: cell {cell.id} was executed"
            )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch, tmp_path):
    notebook = run_notebook(path, monkeypatch, tmp_path)
    assert not errors_of(notebook)
    assert not python_warnings(notebook)


def test_real_data_notebook_runs_without_shared_data(monkeypatch, tmp_path):
    """No shared/data and no download: it must still run to the end (on mock data)."""
    shared = Path(
        os.environ.get("MTL_KERAS_SHARED_DATA", REPO.parent / "shared" / "data")
    )
    if not shared.is_dir():
        pytest.skip("no shared/data here: test_notebook_runs already ran this case")
    path = NOTEBOOKS_DIR / "02_real_data.ipynb"
    notebook = run_notebook(
        path, monkeypatch, tmp_path, MTL_KERAS_SHARED_DATA=str(tmp_path / "absent")
    )
    assert not errors_of(notebook)
    assert not python_warnings(notebook)
    assert "No local copies" in printed(notebook)
