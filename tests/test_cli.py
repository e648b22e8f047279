"""The command line: one-line errors, the installed console script with its packaged
configs (and a user's own groups via --config-dir), ``python -m noisewarp``."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMALL = ("res=16", "frames=2", "deform=rotate", "output.previews=false")


def test_a_bad_value_is_a_one_line_error(run_py, tmp_path):
    result = run_py("res=0", f"hydra.run.dir={tmp_path}", check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == "noisewarp: error: res must be an integer >= 1, got 0", result.stderr
    assert "Traceback" not in result.stderr
    # The traceback is there for whoever asks for it.
    full = run_py("res=0", f"hydra.run.dir={tmp_path}", check=False, env={"HYDRA_FULL_ERROR": "1"})
    assert full.returncode != 0 and "Traceback" in full.stderr and "ConfigError" in full.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("rez=3", "Could not override 'rez'"),  # a mistyped key
        ("method=nope", "Could not find 'method/nope'"),
        ("channels=${nope}", "Interpolation key 'nope' not found"),
        ("output.overwrite=no", "output.overwrite must be true or false, got 'no'"),
    ],
)
def test_hydra_errors_are_one_line_too(run_py, tmp_path, override, message):
    result = run_py(override, *SMALL, f"output.dir={tmp_path / 'run'}", check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("noisewarp: error: "), result.stderr
    assert message in lines[0]
    assert not (tmp_path / "run" / "noise.h5").exists()


def test_python_m_noisewarp_runs_in_outputs_run(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "noisewarp", *SMALL, "output.progress=false"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    runs = list((tmp_path / "outputs" / "run").iterdir())
    assert len(runs) == 1 and (runs[0] / "metrics.nc").is_file()


@pytest.mark.slow
def test_installed_wheel_runs_anywhere_with_its_own_configs(tmp_path):
    """pip install of the wheel (no checkout on the path) + noisewarp-run, from another
    directory; --config-dir adds a group of the user's own."""
    pytest.importorskip("setuptools", reason="pip install -e '.[test]' (builds the wheel)")
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         str(REPO), "-w", str(wheels)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=False)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         str(next(wheels.glob("*.whl")))],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    work = tmp_path / "elsewhere"
    (work / "mine" / "method").mkdir(parents=True)
    (work / "mine" / "method" / "coarse_hiwyn.yaml").write_text("name: hiwyn\noptions:\n  n: 2\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run(
        [str(python), "-c", "import noisewarp, noisewarp.motion as m; "
         "print(noisewarp.__file__); assert m.BUNDLED_CLIP.is_file()"],
        cwd=work, capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert where.returncode == 0 and str(env_dir) in where.stdout, where.stderr
    result = subprocess.run(
        [str(env_dir / "bin" / "noisewarp-run"), "--config-dir", "mine", "method=coarse_hiwyn",
         *SMALL, "output.progress=false"],
        cwd=work, capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((work / "outputs" / "run").iterdir())
    assert len(runs) == 1 and "hiwyn(n=2)" in (runs[0] / "summary.txt").read_text()


def test_output_dir_holds_the_whole_run(run_py, tmp_path):
    """output.dir=PATH: the results, run.log and .hydra/ in that one folder."""
    target = tmp_path / "mine"
    run_py(*SMALL, f"output.dir={target}")
    names = {p.name for p in target.iterdir()}
    assert {"noise.h5", "metrics.nc", "run.log", ".hydra", "status.json"} <= names, names
    assert "16x16x4" in (target / "run.log").read_text()


def test_a_path_in_the_overrides_makes_one_folder(tmp_path):
    """deform.path=/a/b/c.flo: one run directory (the slashes replaced), not nested ones."""
    flo = REPO / "noisewarp" / "data" / "swirl_forward_32x48.flo"
    result = subprocess.run(
        [sys.executable, str(REPO / "run.py"), "deform=flow", f"deform.path={flo}",
         "deform.direction=forward", "frames=2", "output.previews=false",
         "output.progress=false"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = (tmp_path / "outputs" / "run").iterdir()
    assert "deform.path=" + str(flo).replace("/", "%2F") in run_dir.name
    assert (run_dir / "noise.h5").is_file() and (run_dir / ".hydra").is_dir()


def test_run_folder_names_never_collide_and_fit_the_file_system():
    from noisewarp.config import run_dirname

    assert run_dirname("deform.path=a/b_c.npy") != run_dirname("deform.path=a_b/c.npy")
    assert run_dirname("x=a%2Fb") != run_dirname("x=a/b")
    long = ",".join(f"deform.params.p{i}={i * 1000.5}" for i in range(20))
    name = run_dirname(long)
    assert len(name.encode()) <= 200 and "/" not in name
    assert name != run_dirname(long + "1") and name == run_dirname(long)


def test_a_refused_rerun_keeps_the_folders_record(run_py, tmp_path):
    """Another config pointed at a finished run is refused without touching it: status.json
    says so and keeps the earlier record, and collect still sees the earlier run complete."""
    import json

    from noisewarp.collect import collect

    target = tmp_path / "run"
    run_py(*SMALL, f"output.dir={target}")
    refused = run_py(*SMALL, "seed=1", f"output.dir={target}", check=False)
    assert refused.returncode == 2 and "was not modified" in refused.stderr
    record = json.loads((target / "status.json").read_text())
    assert record["status"] == "refused" and record["previous"]["status"] == "complete"
    _, records = collect(tmp_path, quiet=True)
    assert [r.status for r in records] == ["complete"]


def test_a_nan_in_a_flow_file_is_one_line_naming_file_and_frame(run_py, tmp_path):
    """The frames before the bad field are written and the rerun resumes after them."""
    import numpy as np

    from noisewarp.io import stack_attrs

    flows = np.zeros((4, 16, 20, 2), np.float32)
    flows[2, 3, 4, 0] = np.nan
    np.save(tmp_path / "nan.npy", flows)
    args = ("deform=flow", f"deform.path={tmp_path / 'nan.npy'}", "frames=5",
            "output.previews=false", f"output.dir={tmp_path / 'run'}")  # fmt: skip
    result = run_py(*args, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("noisewarp: error: flow ") and "nan.npy', frame 2" in line
    assert stack_attrs(tmp_path / "run" / "noise.h5")["frames_written"] == 3
