"""A real SLURM run: a single-node cluster on localhost, sweeps through noisewarp_slurm
(and submitit_slurm); jobs cancelled while running or pending, and at their time limit.

.ci/start-slurm.sh starts munged, slurmctld and slurmd (Debian's slurm-wlm and munge).
The cluster has no accounting (sacct fails), as many small clusters. Where it cannot
start, the tests are skipped with the script's exact reason.
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
    """The README's SLURM example (the first ``bash`` block that launches noisewarp_slurm),
    as run.py arguments."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    block = next(b for b in blocks if "hydra/launcher=noisewarp_slurm" in b)
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
    """scancel one running job of a sweep: it ends as cancelled in its status.json and in
    collect, the submitting process stops waiting, says so and exits 1; the other job
    completes. The job does this itself, so submitit's own launcher suffices."""
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
    assert status["status"] == "cancelled" and "SIGTERM" in status["error"], status
    _, records = collect(sweep, quiet=True)
    statuses = sorted(r.status for r in records)
    assert statuses == ["cancelled", "complete"], [(r.path, r.status, r.error) for r in records]


def _squeue(env, job_id: str) -> dict[str, str]:
    """{array task id: state} of a job, from squeue."""
    out = subprocess.run(
        ["squeue", "--noheader", "--array", f"--jobs={job_id}", "--format=%i|%T"],
        env=env, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    return dict(line.split("|", 1) for line in out.split())


@pytest.mark.slow
def test_a_job_cancelled_while_pending_is_reported_and_the_sweep_exits_non_zero(
    slurm_env, tmp_path
):
    """Both jobs are submitted held; one is scancel'ed while still pending (it never runs,
    and sacct cannot say what became of it), the other is released. The submitting
    process finds the cancelled one with squeue, writes its status.json, lists it and
    exits 1, within a bounded time; collect reports it as cancelled."""
    sweep = tmp_path / "pending"
    env = {**os.environ, **slurm_env}
    command = [sys.executable, str(REPO / "run.py"), "-m", "hydra/launcher=noisewarp_slurm",
               "+hydra.launcher.additional_parameters.hold=true",
               "hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1",
               "deform=translate", "res=32", "frames=3,4", "output.previews=false",
               "output.progress=false", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    log = tmp_path / "sweep.log"
    with log.open("w") as sink:
        sweeper = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    array = None
    try:
        tasks, deadline = [], time.monotonic() + 180
        while len(tasks) < 2 and time.monotonic() < deadline and sweeper.poll() is None:
            time.sleep(1)
            if (sweep / ".submitit").is_dir():  # submitit's job folders: <array>_<task>
                tasks = sorted(p.name for p in (sweep / ".submitit").iterdir()
                               if re.fullmatch(r"\d+_\d+", p.name))  # fmt: skip
        assert len(tasks) == 2, log.read_text()[-3000:]
        array = tasks[0].split("_")[0]
        assert set(_squeue(env, array).values()) == {"PENDING"}, _squeue(env, array)
        subprocess.run(["scancel", f"{array}_1"], env=env, check=True, timeout=60)  # frames=4
        subprocess.run(["scontrol", "release", f"{array}_0"], env=env, check=True, timeout=60)
        sweeper.wait(timeout=240)  # squeue polls (<= 60 s apart) + 15 s for a result file
    finally:
        if sweeper.poll() is None:
            sweeper.kill()
        if array is not None:  # nothing of this test stays held in the queue
            subprocess.run(["scancel", array], env=env, timeout=60)
    output = log.read_text()
    assert sweeper.returncode == 1, output[-3000:]
    assert "1 of 2 jobs of the sweep" in output and "before it started" in output, output[-3000:]
    (cancelled,) = sweep.glob("*frames=4*")
    status = json.loads((cancelled / "status.json").read_text())
    assert status["status"] == "cancelled" and status["slurm_job_id"] == f"{array}_1", status
    _, records = collect(sweep, quiet=True)
    by_status = {r.status: r for r in records}
    assert sorted(by_status) == ["cancelled", "complete"], [(r.path, r.status) for r in records]
    assert by_status["cancelled"].coords["warp_method"] == "particle"  # placed from .hydra/
    assert "before it started" in by_status["cancelled"].error


@pytest.mark.slow
def test_a_job_at_its_time_limit_ends_cancelled_with_the_reason(slurm_env, run_py, tmp_path):
    """A 2-minute limit and signal_delay_s=30: slurmctld sends submitit's USR2 30 to 90 s
    into the job (up to a minute early), well after the run has started and before the
    limit's SIGTERM; submitit does not requeue it (max_num_timeout=0), and the job ends
    as cancelled, with the reason "time limit"."""
    sweep = tmp_path / "limit"
    result = run_py(
        "-m", "hydra/launcher=noisewarp_slurm", "hydra.launcher.timeout_min=2",
        "hydra.launcher.signal_delay_s=30", "hydra.launcher.cpus_per_task=1",
        "deform=translate", "res=32", "frames=1000000", "output.stack=null",
        "output.metrics_every=1000", "output.previews=false", f"hydra.sweep.dir={sweep}",
        env=slurm_env, timeout=400, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "1 of 1 jobs of the sweep" in output and "time limit" in output, output[-3000:]
    (record,) = collect(sweep, quiet=True)[1]
    # USR2's path, not the limit's SIGTERM ("stopped by SIGTERM (scancel, a time limit ...").
    assert record.status == "cancelled" and "Cancelled: time limit:" in record.error, record.error


def _fake_slurm_bin(folder: Path, sbatch_error: str | None) -> str:
    """A PATH with a ``srun`` and, if ``sbatch_error``, an ``sbatch`` that refuses."""
    folder.mkdir()
    (folder / "srun").write_text("#!/bin/sh\nexit 0\n")
    if sbatch_error is not None:
        (folder / "sbatch").write_text(f"#!/bin/sh\necho '{sbatch_error}' >&2\nexit 1\n")
    for tool in folder.iterdir():
        tool.chmod(0o755)
    return str(folder)


@pytest.mark.parametrize("where", ["no SLURM here", "a bad partition"])
def test_slurm_refusing_the_sweep_is_one_line_and_status_2(where, run_py, tmp_path):
    """No ``srun``/``sbatch`` on PATH, or ``sbatch`` refusing the jobs: a config error, not
    a traceback."""
    pytest.importorskip(
        "hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[experiments]'"
    )
    refusal = "sbatch: error: invalid partition specified: nosuch"
    path = _fake_slurm_bin(tmp_path / "bin", refusal if where == "a bad partition" else None)
    if where == "no SLURM here":
        (tmp_path / "bin" / "srun").unlink()
    result = run_py(
        "-m", "hydra/launcher=noisewarp_slurm", "hydra.launcher.partition=nosuch",
        "deform=translate", "res=16", "frames=2", f"hydra.sweep.dir={tmp_path / 'sweep'}",
        env={"PATH": path, "SLURM_CONF": "/nonexistent"}, check=False, timeout=120,
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[-1].startswith("noisewarp: error: hydra/launcher=noisewarp_slurm"), lines
    assert ("invalid partition" if where == "a bad partition" else "srun") in lines[-1], lines


def test_noisewarp_slurm_without_its_launcher_says_what_to_install(run_py, tmp_path):
    """Without hydra-submitit-launcher (an import that fails, here), the launcher's name
    is still known and says which extra installs it."""
    fake = tmp_path / "fake" / "hydra_plugins" / "hydra_submitit_launcher"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("simulated: not installed")\n')
    pythonpath = os.pathsep.join(filter(None, [str(tmp_path / "fake"),
                                               os.environ.get("PYTHONPATH")]))  # fmt: skip
    result = run_py(
        "-m", "hydra/launcher=noisewarp_slurm", "hydra.launcher.timeout_min=60",
        "deform=translate", "res=16", "frames=2", f"hydra.sweep.dir={tmp_path / 'sweep'}",
        env={"PYTHONPATH": pythonpath}, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("noisewarp: error:") and "noisewarp[experiments]" in last, last
    assert not (tmp_path / "sweep").exists()
