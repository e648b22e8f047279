"""The analysis notebooks run headless on a small collected sweep, so they never rot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import noisewarp as nw
from noisewarp.collect import collect

nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[notebooks]'")
nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[notebooks]'")

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
NOTEBOOKS = sorted(EXPERIMENTS.glob("*.ipynb"))


def test_there_are_notebooks():
    assert {p.name for p in NOTEBOOKS} >= {"gaussianity.ipynb", "performance.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, (
                f"{path.name}: clear the outputs before committing"
            )


@pytest.fixture(scope="module")
def collected(tmp_path_factory, run_py):
    """A small sweep: a few methods x 2 deformations x 2 resolutions, collected."""
    sweep = tmp_path_factory.mktemp("sweep")
    methods = [m for m in ("particle", "grid", "nearest") if m in nw.METHODS]
    run_py(
        "-m",
        f"method={','.join(methods)}",
        "deform=translate,rotate",
        "res=32,48",
        "frames=4",
        "output.previews=false",
        f"hydra.sweep.dir={sweep}",
        timeout=400,
    )
    output = sweep / "collected.nc"
    collect(sweep, output)
    return output


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, collected, monkeypatch):
    monkeypatch.setenv("NOISEWARP_COLLECTED", str(collected))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel draws inline, headless
    # The kernel imports this checkout's noisewarp, as the tests do.
    paths = [str(EXPERIMENTS.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(EXPERIMENTS)}},
    )
    client.execute()
    images = sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        for output in cell.get("outputs", [])
    )
    assert images >= 2, f"{path.name} drew {images} figures"
    printed = "".join(
        output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", [])
    )
    if path.name == "performance.ipynb":  # times mean little without the machine
        assert "measured on: " in printed and "numba" in printed, printed[-2000:]
