"""How a SLURM job that ended without a result is told apart, without a cluster: the
state mapping, the watcher's sacct-then-squeue rule (SLURM's commands faked), and the
time-limit signal turned into ``cancelled``. ``tests/test_slurm.py`` runs them for real."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

pytest.importorskip("submitit", reason="pip install -e '.[experiments]'")

from noisewarp import slurm  # noqa: E402
from noisewarp.status import Cancelled, cancelled_on_sigterm  # noqa: E402


@pytest.mark.parametrize(
    ("state", "started", "status", "words"),
    [
        ("CANCELLED by 0", False, "cancelled", "before it started"),
        ("CANCELLED", True, "cancelled", "while running"),
        ("TIMEOUT", True, "cancelled", "time limit"),
        ("DEADLINE", False, "cancelled", "time limit"),
        ("PREEMPTED", True, "cancelled", "preempted"),
        (slurm.NOT_IN_QUEUE, False, "cancelled", "before it started"),
        (slurm.NOT_IN_QUEUE, True, "failed", "no longer knows"),
        ("OUT_OF_MEMORY", True, "failed", "OUT_OF_MEMORY"),
        ("NODE_FAIL", True, "failed", "NODE_FAIL"),
        ("COMPLETED", True, "failed", "COMPLETED"),  # ended, yet no result file
    ],
)
def test_the_status_of_a_job_that_ended_without_a_result(state, started, status, words):
    got, why = slurm.outcome(state, started)
    assert got == status and words in why, (got, why)


class FakeSlurm:
    """Answers sacct and squeue like SLURM would, and records what was asked."""

    def __init__(self, sacct: str | None, squeue: str | None, squeue_error: str = ""):
        self.sacct, self.squeue, self.squeue_error, self.calls = sacct, squeue, squeue_error, []

    def __call__(self, command):
        self.calls.append(command)
        if command[0] == "sacct":
            if self.sacct is None:
                return subprocess.CompletedProcess(command, 1, "", "accounting storage is disabled")
            return subprocess.CompletedProcess(command, 0, self.sacct, "")
        if self.squeue is None:
            return subprocess.CompletedProcess(command, 1, "", self.squeue_error)
        return subprocess.CompletedProcess(command, 0, self.squeue, "")


def watch(monkeypatch, fake, *job_ids):
    monkeypatch.setattr(slurm, "_call", fake)
    watcher = slurm.QueueWatcher()
    for job_id in job_ids:
        watcher.register_job(job_id)
    watcher.update()
    return watcher


def test_sacct_is_used_where_it_knows_and_squeue_for_the_rest(monkeypatch):
    sacct = "JobID|State|NodeList\n7_0|TIMEOUT|n1\n7_0.batch|CANCELLED|n1\n"
    # squeue disagrees about 7_0 (it is not asked about it), pends 7_1, forgot 7_2.
    fake = FakeSlurm(sacct, "7_0|COMPLETED|None\n7_1|PENDING|JobHeldUser\n")
    watcher = watch(monkeypatch, fake, "7_0", "7_1", "7_2")
    assert watcher.get_state("7_0", mode="cache") == "TIMEOUT"
    assert watcher.get_state("7_1", mode="cache") == "PENDING"
    assert watcher.get_state("7_2", mode="cache") == slurm.NOT_IN_QUEUE
    assert [watcher.is_done(j, mode="cache") for j in ("7_0", "7_1", "7_2")] == [True, False, True]
    squeue = [c for c in fake.calls if c[0] == "squeue"]
    assert len(squeue) == 1 and "--jobs=7" in squeue[0] and "--states=all" in squeue[0]


def test_without_sacct_squeue_alone_decides(monkeypatch):
    fake = FakeSlurm(None, "8_0|RUNNING|None\n8_1|CANCELLED|None\n9|SUSPENDED|None\n")
    watcher = watch(monkeypatch, fake, "8_0", "8_1", "9")
    assert [watcher.is_done(j, mode="cache") for j in ("8_0", "8_1", "9")] == [False, True, False]
    # The next poll asks again about the jobs still going, not about the ended one.
    fake.squeue = "8_0|COMPLETING|None\n9|RUNNING|None\n"
    watcher.update()
    assert watcher.get_state("8_0", mode="cache") == "COMPLETING"
    assert watcher.get_state("8_1", mode="cache") == "CANCELLED"


def test_when_squeue_cannot_answer_nothing_is_concluded(monkeypatch):
    watcher = watch(monkeypatch, FakeSlurm(None, None, "slurm_load_jobs error: timeout"), "5_0")
    assert watcher.get_state("5_0", mode="cache") == "UNKNOWN"
    assert not watcher.is_done("5_0", mode="cache")
    # ... but "Invalid job id": SLURM has forgotten every job asked about.
    fake = FakeSlurm(None, None, "slurm_load_jobs error: Invalid job id specified")
    watcher = watch(monkeypatch, fake, "6_0")
    assert watcher.get_state("6_0", mode="cache") == slurm.NOT_IN_QUEUE


def _fake_submitit_handler(raises):
    def handler(signum, frame):
        raise raises

    handler.__module__ = "submitit.core.job_environment"  # how submitit's handler is found
    return handler


def test_submitits_time_limit_signal_ends_the_run_cancelled():
    """submitit raises in its USR2 handler when it does not requeue a timed-out job."""
    handler = _fake_submitit_handler(RuntimeError("Job not requeued because: timed-out"))
    previous = signal.signal(signal.SIGUSR2, handler)
    try:
        with pytest.raises(Cancelled, match="time limit") as caught:
            with cancelled_on_sigterm():
                os.kill(os.getpid(), signal.SIGUSR2)
                time.sleep(5)  # the handler runs before this ends
        assert caught.value.status == "cancelled" and "timed-out" in str(caught.value)
        assert signal.getsignal(signal.SIGUSR2) is handler  # restored
        # A requeue (preemption) exits the process: that passes through unchanged.
        signal.signal(signal.SIGUSR2, _fake_submitit_handler(SystemExit(-1)))
        with pytest.raises(SystemExit):
            with cancelled_on_sigterm():
                os.kill(os.getpid(), signal.SIGUSR2)
                time.sleep(5)
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_a_sigterm_that_a_library_wrapped_still_ends_the_run_cancelled(
    compose, monkeypatch, tmp_path
):
    """SIGTERM raises ``Cancelled`` wherever the run is; a library that catches it and
    raises its own error (numba's compiler, when the job is cancelled while kernels
    compile) must not turn the cancellation into a failure in ``status.json``."""
    import json

    from noisewarp import cli, experiment

    def compiling(cfg):
        try:
            raise Cancelled("stopped by SIGTERM (scancel, a time limit or preemption)")
        except Cancelled as exc:
            raise RuntimeError("Failed in nopython mode pipeline") from exc

    monkeypatch.setattr(experiment, "run", compiling)
    with pytest.raises(RuntimeError, match="nopython"):
        cli._app(compose("deform=translate", "res=16", "frames=2"))
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "cancelled" and "SIGTERM" in status["error"], status
