"""How a SLURM job that ended without a result is told apart, without a cluster: the
state mapping, the watcher's sacct-then-squeue rule (SLURM's commands faked), and the
time-limit signal turned into ``cancelled``. ``tests/test_slurm.py`` runs them for real."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

pytest.importorskip("submitit", reason="pip install -e '.[experiments]'")

from noisewarp import slurm  # noqa: E402
from noisewarp.status import Cancelled, cancelled_on_sigterm, resume_hint  # noqa: E402


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


def test_a_finished_run_cancelled_while_it_replays_keeps_its_record(compose, monkeypatch, tmp_path):
    """A resubmitted run that had completed, cancelled while it runs again, does not turn
    its folder's record into ``cancelled`` (collect would drop the intact outputs): the
    status is ``refused`` with the finished record under ``previous``."""
    import json

    from noisewarp import cli, experiment

    def cancelled(cfg):
        raise Cancelled("stopped by SIGTERM (scancel, a time limit or preemption)")

    monkeypatch.setattr(experiment, "run", cancelled)
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "status.json").write_text(json.dumps({"status": "complete"}))
    with pytest.raises(Cancelled):
        cli._app(compose("deform=translate", "res=16", "frames=2"))
    status = json.loads((folder / "status.json").read_text())
    assert status["status"] == "refused" and status["previous"] == {"status": "complete"}
    assert "SIGTERM" in status["error"]


def test_a_pending_reason_is_not_read_as_the_cause_of_a_cancellation():
    _, why = slurm.outcome("CANCELLED", False, "JobHeldUser")
    assert "was pending: JobHeldUser" in why and "reason JobHeldUser" not in why, why


def test_a_preempted_job_ends_unless_squeue_has_it_queued_again(monkeypatch):
    """sacct's PREEMPTED is final only once squeue does not list the job as queued again
    (preemption with requeue); without accounting, squeue's PREEMPTED is final."""
    sacct = "JobID|State|NodeList\n7_0|PREEMPTED|n1\n7_0.batch|CANCELLED|n1\n"
    forgotten = FakeSlurm(sacct, None, "slurm_load_jobs error: Invalid job id specified")
    watcher = watch(monkeypatch, forgotten, "7_0")
    assert watcher.is_done("7_0", mode="cache")
    assert watcher.get_state("7_0", mode="cache") == "PREEMPTED"
    assert slurm.outcome("PREEMPTED", True) == ("cancelled", "preempted")
    watcher = watch(monkeypatch, FakeSlurm(sacct, "7_0|PENDING|BeginTime\n"), "7_0")
    assert not watcher.is_done("7_0", mode="cache")  # requeued
    watcher = watch(monkeypatch, FakeSlurm(sacct, None, "slurm_load_jobs error: timeout"), "7_0")
    assert not watcher.is_done("7_0", mode="cache")  # nothing concluded
    watcher = watch(monkeypatch, FakeSlurm(None, "7_0|PREEMPTED|None\n"), "7_0")
    assert watcher.is_done("7_0", mode="cache")
    # Seen preempted, then forgotten (MinJobAge): still preempted, not "no longer knows".
    fake = FakeSlurm(None, "")
    watcher = watch(monkeypatch, fake, "7_1")
    watcher._info_dict["7_1"] = {"State": "PREEMPTED", "Reason": "None"}
    watcher.update()
    assert watcher.get_state("7_1", mode="cache") == "PREEMPTED"


def test_squeue_decides_when_sacct_stops_answering(monkeypatch):
    """A job sacct listed once is not left to that stale answer when sacct fails later."""
    fake = FakeSlurm("JobID|State|NodeList\n7_0|PENDING|None assigned\n", "7_0|CANCELLED|None\n")
    watcher = watch(monkeypatch, fake, "7_0")
    assert not watcher.is_done("7_0", mode="cache")
    fake.sacct = None  # "Problem talking to the database"
    watcher.update()
    assert watcher.is_done("7_0", mode="cache")
    assert watcher.get_state("7_0", mode="cache") == "CANCELLED"


class FakeJob:
    """What ``noisewarp.slurm`` reads of a submitit job with one task: its paths, its log
    (``stderr``; ``stdout`` too, else not started) and its watcher."""

    def __init__(self, folder, states=("",), reason="", stderr=None, stdout=None):
        folder.mkdir(parents=True, exist_ok=True)
        self.job_id, self.num_tasks = "7_0", 1
        self.paths = SimpleNamespace(folder=folder, stdout=folder / "7_0_0_log.out",
                                     result_pickle=folder / "7_0_0_result.pkl")  # fmt: skip
        if stdout is not None:
            self.paths.stdout.write_text(stdout)
        self._stderr = stderr
        self.watcher = FakeWatcher(states, reason)

    def task(self, i):
        return self

    def stdout(self):
        return self.paths.stdout.read_text() if self.paths.stdout.exists() else None

    def stderr(self):
        return self._stderr


class FakeWatcher:
    """A watcher whose job goes through ``states``, one per poll."""

    def __init__(self, states, reason=""):
        self.states, self.reason, self.rechecked = list(states), reason, False

    def recheck(self, job_id):
        self.rechecked = True

    def get_state(self, job_id, mode="standard"):
        return self.states[0]

    def get_info(self, job_id, mode="standard"):
        return {"State": self.states[0], "Reason": self.reason}

    def is_done(self, job_id, mode="standard"):
        if len(self.states) > 1 and mode != "cache":
            self.states.pop(0)
        return self.states[0].upper() not in slurm._ACTIVE


def ended(monkeypatch, tmp_path, job, since):
    """``status.json`` as the submitting side writes it for ``job`` (no result file)."""
    run = tmp_path / "sweep" / "run"
    config = OmegaConf.create({"hydra": {"job": {"name": "app"}}, "res": 16})
    task = OmegaConf.create({"res": 16})
    monkeypatch.setattr(slurm, "_run_dir", lambda *args: (run, config, task))
    hint = resume_hint(tmp_path / "sweep")
    slurm._ended_without_result(None, job, ["res=16"], 0, "no result file", since, hint)
    return json.loads((run / "status.json").read_text())


def test_a_resubmitted_job_cancelled_before_it_started_keeps_the_finished_run(
    monkeypatch, tmp_path
):
    """Rerunning a sweep resubmits its finished runs too; one cancelled while pending
    never touched its folder, whose earlier record (complete) stays, for collect."""
    run = tmp_path / "sweep" / "run"
    run.mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"status": "complete"}))
    os.utime(run / "status.json", (time.time() - 600, time.time() - 600))
    job = FakeJob(tmp_path / "sweep" / ".submitit" / "7_0", ["CANCELLED"], "JobHeldUser")
    status = ended(monkeypatch, tmp_path, job, since=time.time() - 10)
    assert status["status"] == "refused" and status["previous"] == {"status": "complete"}
    assert "before it started" in status["error"] and "was pending: JobHeldUser" in status["error"]
    assert f"hydra.sweep.dir={tmp_path / 'sweep'}" in status["error"], status["error"]
    # In a new folder, it is the run's record.
    status = ended(monkeypatch, tmp_path / "new", job, since=time.time() - 10)
    assert status["status"] == "cancelled", status


def test_the_log_of_a_killed_job_is_kept_when_it_has_stderr_in_stdout(monkeypatch, tmp_path):
    """``stderr_to_stdout=true``: no stderr file; the end of the log is then stdout's."""
    job = FakeJob(tmp_path / "sweep" / ".submitit" / "7_0", [slurm.NOT_IN_QUEUE],
                  stdout="frame 3\nslurmstepd: error: Detected 1 oom_kill event\n")  # fmt: skip
    status = ended(monkeypatch, tmp_path, job, since=time.time() - 10)
    assert status["status"] == "failed" and "oom_kill" in status["log"], status


def test_a_requeued_job_is_waited_for_not_reported_cancelled(monkeypatch, tmp_path):
    """``scontrol requeue`` or preemption with requeue: SIGTERM, the job writes cancelled
    and its result, then SLURM queues it again. The launcher waits for the new run."""
    monkeypatch.setattr(slurm.time, "sleep", lambda s: None)
    run = tmp_path / "run"
    run.mkdir()
    (run / "status.json").write_text(json.dumps({"status": "cancelled"}))
    job = FakeJob(tmp_path / ".submitit", ["COMPLETING", "PENDING", "RUNNING", "COMPLETED"])
    before = time.time()
    requeued = slurm._wait_if_requeued(job, run, submitted=before - 60)
    assert job.watcher.rechecked and requeued is not None and requeued >= before
    assert job.watcher.states == ["COMPLETED"]  # waited until the new run ended
    # A plain scancel while running: the job ends; nothing is waited for.
    job = FakeJob(tmp_path / ".submitit", ["COMPLETING", "CANCELLED"])
    assert slurm._wait_if_requeued(job, run, submitted=before - 60) is None
    # The result file of the cancelled run does not count as the new run's.
    job.paths.result_pickle.write_bytes(b"")
    os.utime(job.paths.result_pickle, (before - 30, before - 30))
    assert slurm._has_result(job) and not slurm._has_result(job, newer_than=before)


def test_the_resume_hint_names_the_sweep_folder():
    """A default sweep folder has the time in its name: "the same command" would not
    resume it."""
    assert resume_hint() == "rerun the same command to resume"
    hint = resume_hint("/shared/multirun/2026-12-01/10-59-46")
    assert "hydra.sweep.dir=/shared/multirun/2026-12-01/10-59-46" in hint, hint
    words = shlex.split(resume_hint("/tmp/sp ace, it's"))
    assert "hydra.sweep.dir='/tmp/sp ace, it\\'s'" in words, words


def test_a_job_of_a_sweep_names_its_sweep_folder_when_cancelled(tmp_path):
    """The job's own ``cancelled`` record says where to resume, not "the same command"."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from noisewarp.cli import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra.sweep.dir=multirun/10-59-46"],
                      return_hydra_config=True)  # fmt: skip
    cfg.hydra.mode = RunMode.MULTIRUN
    cfg.hydra.runtime.cwd = str(tmp_path)
    previous = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)
    try:
        with pytest.raises(Cancelled) as caught:
            with cancelled_on_sigterm():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
    finally:
        HydraConfig.instance().cfg = previous
    assert f"hydra.sweep.dir={tmp_path}/multirun/10-59-46 to resume" in str(caught.value)
