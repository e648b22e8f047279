"""A real SLURM run: a single-node cluster on localhost, a sweep through submitit_slurm.

.ci/start-slurm.sh starts munged, slurmctld and slurmd (Debian's slurm-wlm and munge).
Where the cluster cannot start, the test is skipped with the script's exact reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from noisewarp.collect import collect
from noisewarp.io import read_frames, stack_attrs

REPO = Path(__file__).resolve().parents[1]
START = REPO / ".ci" / "start-slurm.sh"


@pytest.fixture(scope="module")
def slurm_env():
    pytest.importorskip(
        "hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[experiments]'"
    )
    if shutil.which("sbatch") is None or shutil.which("slurmctld") is None:
        pytest.skip(
            "SLURM is not installed: apt-get update && apt-get install -y slurm-wlm munge"
            " (then .ci/start-slurm.sh starts a single-node cluster)"
        )
    if os.geteuid() != 0:
        pytest.skip("starting a single-node SLURM cluster needs root (munged, slurmd)")
    result = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=180)
    if result.returncode != 0:
        reason = (result.stderr.strip() or result.stdout.strip()).replace("\n", " | ")
        print(f"single-node SLURM could not start: {reason}")
        pytest.skip(f"single-node SLURM could not start: {reason[-1500:]}")
    exports = [line for line in result.stdout.splitlines() if line.startswith("export SLURM_CONF=")]
    assert exports, result.stdout
    return {"SLURM_CONF": exports[-1].split("=", 1)[1]}


@pytest.mark.slow
def test_sweep_on_slurm(slurm_env, run_py, tmp_path):
    sweep = tmp_path / "slurm"
    result = run_py(
        "-m",
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.timeout_min=10",
        "hydra.launcher.partition=debug",
        "hydra.launcher.cpus_per_task=1",
        "res=32,48",
        "frames=4",
        "deform=translate,rotate",
        "output.previews=false",
        f"hydra.sweep.dir={sweep}",
        env=slurm_env,
        timeout=600,
    )
    assert "submitit" in result.stdout + result.stderr or (sweep / ".submitit").exists()
    # Every job ran under SLURM (submitit's job folders carry SLURM job ids) ...
    jobs = [p for p in (sweep / ".submitit").iterdir() if p.name[0].isdigit()]
    assert jobs, "no SLURM job folders"
    logs = "".join(p.read_text() for p in (sweep / ".submitit").glob("*/*_log.out"))
    assert "SLURM" in logs or list((sweep / ".submitit").glob("*/*_result.pkl"))
    # ... and left a complete stack and metrics.
    merged, records = collect(sweep, sweep / "collected.nc")
    assert len(records) == 4 and all(r.status == "complete" for r in records), [
        (r.path.name, r.status, r.error) for r in records
    ]
    for record in records:
        stack = record.path / "noise.h5"
        assert stack_attrs(stack)["complete"] == 1
        assert read_frames(stack).shape[0] == 4
        with xr.open_dataset(record.path / "metrics.nc", engine="h5netcdf") as metrics:
            assert metrics.sizes["frame"] == 4
            assert np.isfinite(metrics["noise_std"].values).all()
    assert merged.sizes["res"] == 2 and merged.sizes["deform"] == 2
