"""A real SLURM run: a single-node cluster on localhost, a sweep through submitit_slurm.

.ci/start-slurm.sh starts munged, slurmctld and slurmd (Debian's slurm-wlm and munge).
Where the cluster cannot start, the test is skipped with the script's exact reason.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from noisewarp.collect import collect
from noisewarp.io import read_frames, stack_attrs

REPO = Path(__file__).resolve().parents[1]
START = REPO / ".ci" / "start-slurm.sh"
QUICK = ("frames=4", "output.previews=false")  # appended to the README's command


def readme_slurm_command() -> list[str]:
    """The README's SLURM example (the first ``bash`` block that launches submitit_slurm),
    as run.py arguments."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    block = next(b for b in blocks if "hydra/launcher=submitit_slurm" in b)
    words = shlex.split(block.replace("\\\n", " "), comments=True)
    assert words[:2] == ["python", "run.py"], words
    return words[2:]


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
def test_readme_sweep_on_slurm(slurm_env, run_py, tmp_path):
    """The README's example, as written (its sweep dir moved to tmp_path, frames cut)."""
    sweep = tmp_path / "slurm"
    args = [a for a in readme_slurm_command() if not a.startswith("hydra.sweep.dir=")]
    assert not any("gpus" in a or "partition=gpu" in a for a in args), args
    result = run_py(*args, *QUICK, f"hydra.sweep.dir={sweep}", env=slurm_env, timeout=900)
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
    assert merged.sizes["res"] == 2 and merged.sizes["warp_method"] == 2


@pytest.mark.slow
def test_a_cancelled_job_is_reported_and_the_sweep_exits_non_zero(slurm_env, tmp_path):
    """scancel one job of a sweep: it ends as cancelled in its status.json and in collect,
    the submitting process stops waiting, says so and exits 1; the other job completes."""
    sweep = tmp_path / "cancel"
    env = {**os.environ, **slurm_env}
    # The frames=1000000 job (no stack: nothing grows on disk) runs until cancelled.
    command = [sys.executable, str(REPO / "run.py"), "-m", "hydra/launcher=submitit_slurm",
               "hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1",
               "deform=translate", "res=32", "frames=3,1000000", "output.stack=null",
               "output.metrics_every=1000", "output.previews=false", "output.progress=false",
               f"hydra.sweep.dir={sweep}"]  # fmt: skip
    log = tmp_path / "sweep.log"  # a file, not a pipe: submitit polls and logs for minutes
    with log.open("w") as sink:
        sweeper = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        long_run = None
        deadline = time.monotonic() + 300
        while long_run is None and time.monotonic() < deadline:
            time.sleep(2)
            logs = list(sweep.glob("*frames=1000000*/run.log"))
            if logs and "1000000 frames" in logs[0].read_text():
                long_run = logs[0].parent
        assert long_run is not None, "the long job never started"
        time.sleep(3)  # well into its frames
        jobs = sorted(p.name for p in (sweep / ".submitit").iterdir() if p.name[0].isdigit())
        task = next(j for j in jobs if j.endswith("_1"))  # the second override: frames=1000000
        subprocess.run(["scancel", task], env=env, check=True, timeout=60)
        sweeper.wait(timeout=300)
    finally:
        if sweeper.poll() is None:
            sweeper.kill()
    output = log.read_text()
    assert sweeper.returncode == 1, output[-3000:]
    assert "1 of 2 jobs of the sweep" in output and "cancelled" in output
    status = json.loads((long_run / "status.json").read_text())
    assert status["status"] == "cancelled" and "SIGTERM" in status["error"]
    _, records = collect(sweep, quiet=True)
    statuses = sorted(r.status for r in records)
    assert statuses == ["cancelled", "complete"], [(r.path, r.status, r.error) for r in records]
