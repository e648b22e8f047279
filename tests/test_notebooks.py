"""The analysis notebooks run headless on a small collected sweep, so they never rot."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import noisewarp as nw
from noisewarp.collect import collect

nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[notebooks]'")

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
def test_notebook_executes(path, collected, tmp_path):
    """The README's way: ``jupyter nbconvert --execute`` on the collected sweep."""
    if shutil.which("jupyter") is None:
        pytest.skip("jupyter is not installed: pip install -e '.[notebooks]'")
    # The kernel imports this checkout's noisewarp, as the tests do; it draws inline.
    paths = [str(EXPERIMENTS.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env.update(NOISEWARP_COLLECTED=str(collected), PYTHONPATH=os.pathsep.join(paths))
    result = subprocess.run(
        ["jupyter", "nbconvert", "--to", "notebook", "--execute", str(path),
         "--output-dir", str(tmp_path), "--ExecutePreprocessor.timeout=300"],
        cwd=EXPERIMENTS, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    notebook = nbformat.read(tmp_path / path.name, as_version=4)
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
