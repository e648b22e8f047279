"""``status.json``: how each run of a sweep ended (complete, failed, interrupted), for
``noisewarp.collect``."""

from __future__ import annotations

import json
import logging
import time
import traceback
from pathlib import Path

__all__ = ["in_multirun", "write_status"]

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
