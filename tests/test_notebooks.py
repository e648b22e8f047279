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


def _execute(path: Path, tmp_path: Path, **env_vars: str) -> tuple[int, str]:
    """The README's way: ``jupyter nbconvert --execute``, run from experiments/ with
    ``env_vars`` (the notebook's choice of file); the figures drawn and the text printed."""
    if shutil.which("jupyter") is None:
        pytest.skip("jupyter is not installed: pip install -e '.[notebooks]'")
    # The kernel imports this checkout's noisewarp, as the tests do; it draws inline.
    paths = [str(EXPERIMENTS.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env.update(env_vars, PYTHONPATH=os.pathsep.join(paths))
    result = subprocess.run(
        ["jupyter", "nbconvert", "--to", "notebook", "--execute", str(path),
         "--output-dir", str(tmp_path), "--ExecutePreprocessor.timeout=300"],
        cwd=EXPERIMENTS, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    notebook = nbformat.read(tmp_path / path.name, as_version=4)
    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    images = sum("image/png" in output.get("data", {}) for output in outputs)
    return images, "".join(output.get("text", "") for output in outputs)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, collected, tmp_path):
    """The README's way: ``jupyter nbconvert --execute`` on the collected sweep."""
    images, printed = _execute(path, tmp_path, NOISEWARP_COLLECTED=str(collected))
    assert images >= 2, f"{path.name} drew {images} figures"
    if path.name == "performance.ipynb":  # times mean little without the machine
        assert "measured on: " in printed and "numba" in printed, printed[-2000:]


TINY = ("deform=rotate", "output.previews=false")


@pytest.fixture(scope="module")
def frames_sweep(tmp_path_factory, run_py):
    """``frames`` swept: the runs of 3 frames are NaN at frames 3 and 4."""
    sweep = tmp_path_factory.mktemp("frames_sweep")
    run_py("-m", "method=particle,nearest", "res=16", "frames=3,5", *TINY,
           f"hydra.sweep.dir={sweep}", timeout=200)  # fmt: skip
    collect(sweep, sweep / "collected.nc", quiet=True)
    return sweep / "collected.nc"


@pytest.mark.slow
def test_gaussianity_shows_each_runs_last_frame(frames_sweep, tmp_path):
    """Of a sweep of ``frames``, the first value (3) is shown, at its own last frame: the
    last frame of the file (4) is NaN there (it left no statistic: no figure, a crash)."""
    images, printed = _execute(EXPERIMENTS / "gaussianity.ipynb", tmp_path,
                               NOISEWARP_COLLECTED=str(frames_sweep))  # fmt: skip
    assert "showing {'frames': 3}" in printed, printed[-2000:]
    assert "nothing to show" not in printed, printed[-2000:]
    assert images == 4, f"drew {images} figures: the z-score table is missing"


@pytest.fixture(scope="module")
def n_sweep(tmp_path_factory, run_py):
    """HIWYN at n = 2, 4 (res 16) beside grid at res 16, 24, one grid run unreadable: the
    grid runs fill a cell at each n, hiwyn never ran at res 24."""
    sweep = tmp_path_factory.mktemp("n_sweep")
    run_py("-m", "method=hiwyn", "method.options.n=2,4", "res=16", "frames=3", *TINY,
           f"hydra.sweep.dir={sweep / 'hiwyn'}", timeout=200)  # fmt: skip
    run_py("-m", "method=grid", "res=16,24", "frames=3", *TINY,
           f"hydra.sweep.dir={sweep / 'grid'}", timeout=200)  # fmt: skip
    (status,) = (sweep / "grid").glob("*res=24/status.json")
    status.write_text("{not json")
    collect(sweep, sweep / "collected.nc", quiet=True)
    return sweep / "collected.nc"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gaussianity.ipynb", "performance.ipynb"])
def test_notebook_counts_runs_and_shows_the_first_n(name, n_sweep, tmp_path):
    """Runs are counted as runs (4, not the 8 cells of the grid), the failed one listed
    once (not at each n), cells never run not at all; of HIWYN's n the first is shown (it
    is not averaged over)."""
    images, printed = _execute(EXPERIMENTS / name, tmp_path, NOISEWARP_COLLECTED=str(n_sweep))
    assert "3 of 4 runs complete" in printed, printed[-2000:]
    assert printed.count("unreadable") == 1, printed[-2000:]
    assert "showing {'n': 2}" in printed, printed[-2000:]
    assert images >= 2, f"{name} drew {images} figures"


@pytest.fixture(scope="module")
def eta_sweep(tmp_path_factory, run_py):
    """A diffusion sweep of eta, not of the strength (4 sampler steps, 3 frames)."""
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from noisewarp.diffusion.models import BUILTIN_MODEL

    if not (BUILTIN_MODEL / "model_index.json").exists():
        pytest.skip("built-in model not trained")
    sweep = tmp_path_factory.mktemp("eta_sweep")
    run_py("-m", "stage=diffuse", "method=fixed,particle", "frames=3", "diffusion.eta=0,1",
           "diffusion.steps=4", "output.previews=false", f"hydra.sweep.dir={sweep}",
           timeout=300)  # fmt: skip
    output = sweep / "collected_diffusion.nc"
    collect(sweep, output, quiet=True, metrics_file="diffusion.nc")
    return output


@pytest.mark.slow
def test_diffusion_shows_the_first_value_of_other_settings(eta_sweep, tmp_path):
    """A swept setting other than the strength (eta) is shown at its first value."""
    images, printed = _execute(EXPERIMENTS / "diffusion.ipynb", tmp_path,
                               NOISEWARP_DIFFUSION_COLLECTED=str(eta_sweep))  # fmt: skip
    assert "showing {'diffusion_eta': 0}" in printed, printed[-2000:]
    assert images >= 3, f"drew {images} figures"
