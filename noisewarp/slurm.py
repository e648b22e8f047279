"""The submitting side of a SLURM sweep (``hydra/launcher=noisewarp_slurm``): wait for the
jobs, and report those that ended without running to completion.

submitit learns a job's state from ``sacct``. Without SLURM accounting, or for a job
cancelled while still pending (which never runs our code, so writes no ``status.json``),
it cannot tell that the job has ended and waits forever. Here the jobs are also followed
with ``squeue``: a job that has left the queue without submitit's result file (after
15 s for the file to appear on a shared filesystem, once for the whole sweep) has ended,
and its run gets a ``status.json`` written by the submitting process: ``cancelled`` when
SLURM says so or when it never started, else ``failed`` with what SLURM and the job's log
say. sacct's state is used wherever it has one. A job whose run ended ``cancelled`` but
that SLURM queued again (``scontrol requeue``, preemption with requeue) is waited for.

The launcher class itself lives in ``hydra_plugins/noisewarp_launcher`` (Hydra finds
launchers only there); the work is here. See ``docs/cluster.md``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import time
from pathlib import Path

from hydra.errors import HydraException
from submitit.core.utils import FailedJobError, UncompletedJobError
from submitit.slurm.slurm import SlurmInfoWatcher

from noisewarp.status import resume_hint

__all__ = ["QueueWatcher", "SlurmError", "launch", "outcome"]

log = logging.getLogger(__name__)

# The state given to a job that neither sacct nor squeue knows any more.
NOT_IN_QUEUE = "NOT_IN_QUEUE"
# squeue states of a job that has not ended (besides those submitit already waits on).
# PREEMPTED is not among them: a preempted job that SLURM requeues is listed by squeue as
# pending or requeued again, which is asked when sacct says PREEMPTED.
_ACTIVE = {"READY", "PENDING", "RUNNING", "UNKNOWN", "REQUEUED", "COMPLETING", "CONFIGURING",
           "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING", "REQUEUE_FED",
           "REQUEUE_HOLD", "SPECIAL_EXIT"}  # fmt: skip
# How often the watcher asks SLURM at most, in seconds (submitit's SLURM default is 600).
POLL_S = 60
# How long an ended job's result file may take to appear (submitit waits as long per job).
RESULT_GRACE_S = 15


class QueueWatcher(SlurmInfoWatcher):
    """submitit's sacct watcher, plus ``squeue`` for the jobs sacct says nothing about in
    this poll (or fails to), and for those it says were preempted (maybe requeued)."""

    def __init__(self, delay_s: int = POLL_S) -> None:
        super().__init__(delay_s=delay_s)
        self._sacct_failed = False
        self._unconfirmed: set[str] = set()  # PREEMPTED by sacct, squeue not answering

    def is_done(self, job_id: str, mode: str = "standard") -> bool:
        state = self.get_state(job_id, mode=mode).upper()
        return state not in _ACTIVE and job_id not in self._unconfirmed

    def update(self) -> None:
        """sacct first (as submitit does), then squeue for the rest."""
        command = self._make_command()
        if command is None:
            return
        self._num_calls += 1
        result = _call(command)
        sacct = {}  # this poll's answer only: an earlier one may be stale now
        if result.returncode == 0:
            sacct = self.read_info(result.stdout)
            self._info_dict.update(sacct)
        elif not self._sacct_failed:  # no accounting: said once, not at every poll
            self._sacct_failed = True
            said = (result.stderr or "").strip().splitlines() or [f"status {result.returncode}"]
            log.info("sacct failed (%s): following the jobs with squeue", said[-1])
        waiting = self._registered - self._finished
        preempted = {j for j in waiting if sacct.get(j, {}).get("State", "") == "PREEMPTED"}
        ask = sorted(j for j in waiting if j not in sacct or j in preempted)
        queue = queue_states(ask) if ask else {}
        for job_id in ask:
            info = queue.get(job_id)
            if job_id in preempted:  # squeue says whether it is queued again
                if info is None:
                    self._unconfirmed.add(job_id)
                    continue
                self._unconfirmed.discard(job_id)
            if info is None:
                continue
            known = self._info_dict.get(job_id, {}).get("State", "").upper()
            if info["State"] == NOT_IN_QUEUE and known and known not in _ACTIVE:
                continue  # squeue forgot it: how it ended (sacct's, squeue's before) stays
            self._info_dict[job_id] = info
        self._last_status_check = time.time()
        for job_id in waiting:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)

    def recheck(self, job_id: str) -> None:
        """Follow ``job_id`` again though it was seen ending (SLURM may requeue it)."""
        self._finished.discard(job_id)
        self.register_job(job_id)  # polls again at once, then less and less often


def _call(command: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as error:
        return subprocess.CompletedProcess(command, 1, "", str(error))


def queue_states(job_ids: list[str]) -> dict[str, dict[str, str]]:
    """``{job_id: {"State": ..., "Reason": ...}}`` from ``squeue`` (which also lists jobs
    ended less than ``MinJobAge`` ago); ``NOT_IN_QUEUE`` for the jobs it does not list.
    Empty when squeue cannot answer (nothing is concluded then)."""
    mains = sorted({j.split("_")[0] for j in job_ids})
    command = ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T|%r",
               f"--jobs={','.join(mains)}"]  # fmt: skip
    result = _call(command)
    if result.returncode != 0 and "Invalid job id" not in (result.stderr or ""):
        log.warning("squeue failed, job states unknown for now: %s", (result.stderr or "").strip())
        return {}
    listed = {}
    if result.returncode == 0:  # else: none of the ids is known any more
        for line in result.stdout.splitlines():
            fields = line.strip().split("|")
            if len(fields) == 3:
                listed[fields[0]] = {"State": fields[1], "Reason": fields[2]}
    return {j: listed.get(j, {"State": NOT_IN_QUEUE, "Reason": ""}) for j in job_ids}


def outcome(state: str, started: bool, reason: str = "") -> tuple[str, str]:
    """``(status, why)`` for a job that ended without a result, from its last known SLURM
    state (sacct's or squeue's; ``NOT_IN_QUEUE`` when neither knows it) and whether it
    started (its log exists): ``cancelled`` for ``scancel``, a time limit or preemption,
    and for a job that left the queue before it started; else ``failed``."""
    state = (state or "").upper()
    because = f", reason {reason}" if reason and reason != "None" else ""
    if state.startswith("CANCELLED"):
        if started:
            return "cancelled", f"cancelled while running (scancel{because})"
        # squeue's reason for a job cancelled while pending is why it was pending.
        waited = f"; was pending: {reason}" if reason and reason != "None" else ""
        return "cancelled", f"cancelled before it started (scancel{waited})"
    if state in ("TIMEOUT", "DEADLINE"):
        return "cancelled", f"time limit: SLURM stopped the job ({state}{because})"
    if state == "PREEMPTED":
        return "cancelled", f"preempted{because}"
    if state == NOT_IN_QUEUE and not started:
        return "cancelled", "left the queue before it started (cancelled while pending)"
    if state == NOT_IN_QUEUE:
        return "failed", ("ended without a result, and SLURM no longer knows how (killed: "
                          "memory, node failure or SIGKILL?)")  # fmt: skip
    return "failed", f"SLURM state {state or 'unknown'}{because}"


class SlurmError(HydraException):
    """SLURM could not take the sweep (its commands missing, ``sbatch`` refusing the jobs):
    one line on stderr and exit status 2, like a config error (``noisewarp.cli``)."""


def launch(launcher, job_overrides, initial_job_idx: int):
    """hydra-submitit-launcher's ``SlurmLauncher.launch`` (the same executor and
    parameters), waiting with :class:`QueueWatcher` and reporting, instead of raising,
    each job that ended without a result."""
    import submitit
    from hydra.core.singleton import Singleton
    from hydra.core.utils import filter_overrides
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    params = dict(launcher.params)
    init_keys = {"submitit_folder", "max_num_timeout"}
    try:
        executor = submitit.AutoExecutor(
            cluster="slurm",
            folder=params["submitit_folder"],
            slurm_max_num_timeout=params.get("max_num_timeout", 0),
        )
    except RuntimeError as error:  # submitit: 'Could not detect "srun", are you indeed ...'
        raise SlurmError(f"hydra/launcher=noisewarp_slurm: SLURM's commands (srun, sbatch) are "
                         f"not on PATH here ({error}): run from a SLURM login node, or use "
                         "hydra/launcher=submitit_local to try the sweep") from None  # fmt: skip
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(
        **{k if k in base else f"slurm_{k}": v for k, v in params.items() if k not in init_keys}
    )
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    log.info(f"Submitit 'slurm' sweep output dir : {sweep_dir}")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if "mode" in launcher.config.hydra.sweep:
        os.chmod(sweep_dir, mode=int(str(launcher.config.hydra.sweep.mode), 8))
    job_params = []
    for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
        log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        job_params.append(
            (list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state())
        )
    submitted = time.time()
    try:
        jobs = executor.map_array(launcher, *zip(*job_params, strict=True))
    except (FailedJobError, OSError) as error:  # sbatch's error (a bad partition, account)
        said = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
        raise SlurmError(f"hydra/launcher=noisewarp_slurm: sbatch refused the sweep's jobs: "
                         f"{said or type(error).__name__}") from None  # fmt: skip
    watcher = QueueWatcher()
    for job in jobs:
        job.watcher = watcher  # this sweep's jobs only; submitit's shared watcher is untouched
        watcher.register_job(job.job_id)
    for job in jobs:
        job.wait()  # until its result file appears, or SLURM says it has ended
    # One grace period for the whole sweep (not one per job, as job.results() would wait):
    # result files written just now may take a moment to show on a shared filesystem.
    grace = time.time() + RESULT_GRACE_S
    while time.time() < grace and not all(_has_result(job) for job in jobs):
        time.sleep(1)
    hint = resume_hint(sweep_dir.absolute())
    returns = []
    for job, (overrides, _, idx, _, _) in zip(jobs, job_params, strict=True):
        since, error = submitted, None
        if _has_result(job):
            try:
                ret = job.results()[0]
            except (UncompletedJobError, FailedJobError) as e:  # it raised outside our app
                error = e
            else:
                requeued = None
                if ret.return_value is None:  # did not complete: cancelled, and requeued?
                    run_dir = _run_dir(launcher, job, overrides, idx)[0]
                    requeued = _wait_if_requeued(job, run_dir, submitted)
                if requeued is None:
                    returns.append(ret)
                    continue
                since = requeued
                if _has_result(job, newer_than=requeued):
                    returns.append(job.results()[0])
                    continue
                error = (f"the result file {job.paths.result_pickle} is from before SLURM "
                         "requeued the job; the new run left none")  # fmt: skip
        if error is None:
            state = job.watcher.get_state(job.job_id, mode="cache")
            error = f"no result file {job.paths.result_pickle} (SLURM state {state})"
        returns.append(_ended_without_result(launcher, job, overrides, idx, error, since, hint))
    return returns


def _has_result(job, newer_than: float | None = None) -> bool:
    """Whether every task of ``job`` left submitit's result file (written after
    ``newer_than``, if given; its folder touched first, as submitit does, so that NFS shows
    new files)."""
    for task in (job.task(i) for i in range(job.num_tasks)):
        folder = task.paths.folder
        try:
            folder.chmod(folder.stat().st_mode)
        except OSError:
            pass
        try:
            written = task.paths.result_pickle.stat().st_mtime
        except OSError:
            return False
        if newer_than is not None and written < newer_than:
            return False
    return True


# squeue/sacct states of a job that SLURM has queued again after it ended a run.
_REQUEUED = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "SUSPENDED"}


def _wait_if_requeued(job, run_dir: Path, submitted: float) -> float | None:
    """For a job whose result says ``cancelled`` (its ``status.json``, written since
    ``submitted``): wait while SLURM still has it (``scontrol requeue``, or preemption
    with requeue, give it SIGTERM, then queue it again), so that a cancelled run is not
    reported while a new one is coming. Return when the job was seen queued again, after
    waiting for it to end; ``None`` if it was not requeued."""
    status_file = run_dir / "status.json"
    try:
        if status_file.stat().st_mtime < submitted - 1.0:
            return None
        if json.loads(status_file.read_text()).get("status") != "cancelled":
            return None
    except (OSError, ValueError):
        return None
    watcher = job.watcher
    watcher.recheck(job.job_id)
    requeued = None
    while not watcher.is_done(job.job_id):  # polls at 0, 2, 4, 8 ... s, then every POLL_S
        state = watcher.get_state(job.job_id, mode="cache").upper()
        if requeued is None and state in _REQUEUED:
            requeued = time.time()
            log.warning("job %s was cancelled, and SLURM has queued it again (%s): waiting "
                        "for its new run", job.job_id, state)  # fmt: skip
        time.sleep(1)
    return requeued


def _run_dir(launcher, job, overrides, idx):
    """``(run_dir, config, task)``: where job ``idx``'s run writes, its config with
    ``hydra`` and without (the task's)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict, read_write

    config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, overrides)
    with open_dict(config.hydra.job):
        config.hydra.job.id = job.job_id
        config.hydra.job.num = idx
    previous = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(config)  # as hydra's run_job: the dirs may use ${hydra:}
    try:
        run_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
        task = copy.deepcopy(config)
        with read_write(task), open_dict(task):
            del task["hydra"]
        if OmegaConf.select(task, "output.dir"):
            run_dir = Path(str(task.output.dir))
    finally:
        if previous is not None:
            HydraConfig.instance().set_config(previous)
    return run_dir, config, task


def _ended_without_result(launcher, job, overrides, idx, error, since: float, hint: str):
    """Write ``status.json`` (and the job's config, so collect can place it) for a job that
    ended without submitit's result, unless the job wrote its own since ``since`` (its
    submission, or its requeue); return a JobReturn like that of a job that failed inside
    (the sweep goes on, its report lists the run and the command exits 1). A job that
    never started leaves the folder's earlier record (a finished run of an earlier
    submission) in place, under ``previous`` (``refused``, as the job does)."""
    from hydra.core.utils import JobReturn, JobStatus
    from omegaconf import OmegaConf

    from noisewarp.status import write_status

    run_dir, config, task = _run_dir(launcher, job, overrides, idx)
    status_file = run_dir / "status.json"
    if status_file.exists() and status_file.stat().st_mtime >= since - 1.0:
        log.warning("job %s ended without a result; its status.json says how", job.job_id)
    else:
        info = job.watcher.get_info(job.job_id, mode="cache")
        state, reason = info.get("State", ""), info.get("Reason", "")
        started = job.task(0).paths.stdout.exists()
        if isinstance(error, FailedJobError):
            status, why = "failed", "the job raised outside the run: " + _last_line(error)
        else:
            status, why = outcome(state, started, reason)
        why = f"SLURM job {job.job_id}: {why}"
        if status == "cancelled":
            why += f"; {hint}"
        hydra_dir = run_dir / ".hydra"
        if not (hydra_dir / "config.yaml").exists():
            hydra_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(task, hydra_dir / "config.yaml")
            OmegaConf.save(OmegaConf.create(list(overrides)), hydra_dir / "overrides.yaml")
        extra = {"slurm_job_id": job.job_id, "slurm_state": state, "submitit": str(error)}
        # The end of the job's log, what killed it often (stderr_to_stdout: all in stdout).
        stderr = (job.task(0).stderr() or job.task(0).stdout() or "").strip().splitlines()
        if stderr:
            extra["log"] = "\n".join(stderr[-20:])
        write_status(None, status, why, directory=run_dir, refused=not started, **extra)
        log.warning("%s %s: %s", status, run_dir, why)
    ret = JobReturn(overrides=list(overrides), cfg=task, hydra_cfg=config,
                    working_dir=str(run_dir), task_name=str(config.hydra.job.name),
                    status=JobStatus.COMPLETED)  # fmt: skip
    ret.return_value = None
    return ret


def _last_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "Exception" in line]
    return (errors or lines or [type(error).__name__])[-1]
