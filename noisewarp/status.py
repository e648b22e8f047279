"""``status.json``: how each run of a sweep ended (complete, failed, cancelled,
interrupted), for ``noisewarp.collect``; and the sweep's report when it ends.

``cancelled`` covers every way SLURM stops a job: ``scancel`` (running or still
pending), its time limit and preemption; ``error`` says which (``noisewarp.slurm`` writes
the record of a job that never ran our code)."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

from hydra.experimental.callback import Callback

__all__ = [
    "Cancelled",
    "SweepReport",
    "cancelled_on_sigterm",
    "in_multirun",
    "recorded_status",
    "resume_hint",
    "write_status",
]

log = logging.getLogger(__name__)


def in_multirun() -> bool:
    """Whether this process runs a job of a Hydra multirun (sweep)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:
        return False


def resume_hint(sweep_dir: str | Path | None = None) -> str:
    """How to resume: "rerun the same command", naming the sweep's folder (``sweep_dir``, or
    this job's): the default one has the time in its name, which a rerun would change."""
    if sweep_dir is None and in_multirun():
        try:
            from hydra.core.hydra_config import HydraConfig

            hydra = HydraConfig.get()
            sweep_dir = Path(hydra.runtime.cwd) / str(hydra.sweep.dir)
        except Exception:
            sweep_dir = None
    if sweep_dir is None:
        return "rerun the same command to resume"
    value = str(sweep_dir)
    if not re.fullmatch(r"[\w./:@+-]+", value):  # Hydra's quoting, then the shell's
        value = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return f"rerun the same command with {shlex.quote('hydra.sweep.dir=' + value)} to resume"


def _run_directory(cfg, directory: Path | None = None) -> Path:
    if directory is None:
        try:
            directory = Path(cfg.output.dir)
        except Exception:
            from hydra.core.hydra_config import HydraConfig

            directory = Path(HydraConfig.get().runtime.output_dir)
    return Path(directory)


def recorded_status(cfg) -> str | None:
    """The status the run's folder records from an earlier run (None: none, unreadable)."""
    try:
        record = json.loads((_run_directory(cfg) / "status.json").read_text())
        return record.get("status") if isinstance(record, dict) else None
    except Exception:
        return None


def write_status(
    cfg,
    status: str,
    error: BaseException | str | None = None,
    directory: Path | None = None,
    refused: bool = False,
    **extra,
) -> Path | None:
    """Write ``status.json`` (complete / failed / cancelled / interrupted / refused) in the
    run's output directory (``directory`` if given), so ``noisewarp.collect`` can report
    failed runs. ``error`` is the exception (its traceback is kept) or a one-line reason;
    ``extra`` adds fields (the submitting side adds ``slurm_job_id`` and ``slurm_state``).
    ``refused``: the run stopped before writing anything; if the folder holds an earlier
    record, the status is ``refused`` and that record is kept under ``previous`` (the
    outputs are still that run's). Never raises."""
    try:
        directory = _run_directory(cfg, directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "status.json"
        earlier = None
        if refused and path.exists():
            try:
                earlier = json.loads(path.read_text())
            except ValueError:
                pass
        if isinstance(earlier, dict):
            status = "refused"
        record = {"status": status, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if isinstance(error, BaseException):
            record["error"] = f"{type(error).__name__}: {error}"
            record["traceback"] = "".join(
                traceback.format_exception(type(error), error, error.__traceback__)
            )
        elif error:
            record["error"] = str(error)
        record.update(extra)
        if isinstance(earlier, dict):
            record["previous"] = (
                earlier.get("previous") if earlier.get("status") == "refused" else earlier
            )
        # Replaced, not rewritten in place: the run directory's mtime then says the record
        # is new, which is how SweepReport tells this sweep's runs from older ones.
        partial = directory / ".status.json.tmp"
        partial.write_text(json.dumps(record, indent=2) + "\n")
        partial.replace(path)
        return path
    except Exception:  # pragma: no cover - reporting must never mask the real outcome
        log.exception("could not write status.json")
        return None


class Cancelled(Exception):
    """The job was stopped by SLURM: ``scancel``, its time limit or preemption."""

    status = "cancelled"


def _submitit_time_limit_handler():
    """``(signal, handler)``: submitit's handler of the signal SLURM sends before the time
    limit (``SUBMITIT_PREEMPT_SIGNAL``, USR2 by default), when one is installed; else
    ``(None, None)``."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    signum = getattr(signal, f"SIG{name}", None)
    if signum is None:
        return None, None
    handler = signal.getsignal(signum)
    if callable(handler) and str(getattr(handler, "__module__", "")).startswith("submitit."):
        return signum, handler
    return None, None


@contextmanager
def cancelled_on_sigterm():
    """Turn SIGTERM into :class:`Cancelled` while the block runs, so a cancelled SLURM job
    unwinds (the stack is flushed, frames so far stay resumable), writes ``status.json``
    and returns to submitit, whose submitting process then stops waiting for it.

    Under submitit, its time-limit signal is also watched: submitit either requeues the
    job (preemption, or ``max_num_timeout`` left) or raises, which here becomes
    :class:`Cancelled` with the reason "time limit" instead of a failure."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    hint = resume_hint()  # now: a handler should not have to ask Hydra

    def cancel(signum, frame):
        raise Cancelled(f"stopped by {signal.Signals(signum).name} (scancel, a time limit "
                        f"or preemption); {hint}")  # fmt: skip

    usr_signal, submitit_handler = _submitit_time_limit_handler()

    def time_limit(signum, frame):
        try:
            submitit_handler(signum, frame)  # requeues and exits, or raises: not requeued
        except Exception as exc:
            raise Cancelled(f"time limit: SLURM sent {signal.Signals(signum).name} before the "
                            f"job's time limit and submitit did not requeue it ({exc}); "
                            f"{hint}") from exc  # fmt: skip

    previous = signal.signal(signal.SIGTERM, cancel)
    if usr_signal is not None:
        signal.signal(usr_signal, time_limit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if usr_signal is not None:
            signal.signal(usr_signal, submitit_handler)


class SweepReport(Callback):
    """Hydra callback (``hydra.callbacks`` in ``conf/config.yaml``): when a sweep ends,
    print the jobs that did not complete, from their ``status.json``, and remember them
    so ``noisewarp-run`` exits with status 1."""

    not_complete: list[str] = []  # read by noisewarp.cli.main in the submitting process

    def on_multirun_start(self, config, **kwargs) -> None:
        self.started = time.time() - 1.0  # mtimes have a coarse resolution on some disks
        target = str(config.hydra.launcher.get("_target_", ""))
        if target.endswith("hydra_submitit_launcher.submitit_launcher.SlurmLauncher"):
            log.info("hydra/launcher=noisewarp_slurm takes the same settings and also reports "
                     "jobs cancelled before they started (submitit_slurm can wait for them "
                     "forever): docs/cluster.md")  # fmt: skip

    def on_multirun_end(self, config, **kwargs) -> None:
        from noisewarp.collect import find_runs

        sweep = Path(config.hydra.sweep.dir)
        started = getattr(self, "started", 0.0)
        runs = [r for r in find_runs(sweep) if r.stat().st_mtime >= started]
        lines = []
        for run in runs:
            path = run / "status.json"
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                record = {"status": "unknown", "error": "no status.json (killed, or never started)"}
            if record.get("status") != "complete":
                lines.append(f"  {record.get('status', '?'):<10} {run}: {record.get('error', '')}")
        SweepReport.not_complete = lines
        if lines:
            print(f"noisewarp: {len(lines)} of {len(runs)} jobs of the sweep {sweep} did not "
                  "complete:\n" + "\n".join(lines), file=sys.stderr, flush=True)  # fmt: skip
