"""``status.json``: how each run of a sweep ended (complete, failed, cancelled,
interrupted), for ``noisewarp.collect``; and the sweep's report when it ends."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

from hydra.experimental.callback import Callback

__all__ = ["Cancelled", "SweepReport", "cancelled_on_sigterm", "in_multirun", "write_status"]

log = logging.getLogger(__name__)


def in_multirun() -> bool:
    """Whether this process runs a job of a Hydra multirun (sweep)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:
        return False


def write_status(cfg, status: str, error: BaseException | None = None) -> Path | None:
    """Write ``status.json`` (complete / failed / interrupted) in the run's output directory,
    so ``noisewarp.collect`` can report failed runs. Never raises."""
    try:
        try:
            directory = Path(cfg.output.dir)
        except Exception:
            from hydra.core.hydra_config import HydraConfig

            directory = Path(HydraConfig.get().runtime.output_dir)
        directory.mkdir(parents=True, exist_ok=True)
        record = {"status": status, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if error is not None:
            record["error"] = f"{type(error).__name__}: {error}"
            record["traceback"] = "".join(
                traceback.format_exception(type(error), error, error.__traceback__)
            )
        path = directory / "status.json"
        path.write_text(json.dumps(record, indent=2) + "\n")
        return path
    except Exception:  # pragma: no cover - reporting must never mask the real outcome
        log.exception("could not write status.json")
        return None


class Cancelled(Exception):
    """The job got SIGTERM: ``scancel``, a time limit or preemption."""

    status = "cancelled"


@contextmanager
def cancelled_on_sigterm():
    """Turn SIGTERM into :class:`Cancelled` while the block runs, so a cancelled SLURM job
    unwinds (the stack is flushed, frames so far stay resumable), writes ``status.json``
    and returns to submitit, whose submitting process then stops waiting for it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def cancel(signum, frame):
        raise Cancelled(f"stopped by {signal.Signals(signum).name} (scancel, a time limit "
                        "or preemption); rerun the same command to resume")  # fmt: skip

    previous = signal.signal(signal.SIGTERM, cancel)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class SweepReport(Callback):
    """Hydra callback (``hydra.callbacks`` in ``conf/config.yaml``): when a sweep ends,
    print the jobs that did not complete, from their ``status.json``, and remember them
    so ``noisewarp-run`` exits with status 1."""

    not_complete: list[str] = []  # read by noisewarp.cli.main in the submitting process

    def on_multirun_start(self, config, **kwargs) -> None:
        self.started = time.time() - 1.0  # mtimes have a coarse resolution on some disks

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
