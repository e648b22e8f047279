"""The command line: ``noisewarp-run method=particle res=1024`` (also ``python -m noisewarp``
and, in a checkout, ``python run.py``).

A Hydra app on the configs shipped in ``noisewarp/conf``; ``--config-dir DIR`` adds a
directory of your own groups (``DIR/method/mine.yaml``), ``-m`` sweeps. Bad values are
one-line errors (the traceback with ``HYDRA_FULL_ERROR=1``), and a sweep exits with
status 1 when any of its jobs did not complete (``docs/cluster.md``).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from noisewarp import experiment
from noisewarp.config import ConfigError
from noisewarp.diffusion.errors import DeviceError, ModelError, NoiseStackError
from noisewarp.io import StackError, StackMismatchError
from noisewarp.motion import FlowFileError
from noisewarp.opticalflow import FlowCacheError
from noisewarp.status import (
    Cancelled,
    SweepReport,
    cancelled_on_sigterm,
    recorded_status,
    write_status,
)
from noisewarp.video import VideoError

__all__ = ["CONFIG_DIR", "main"]

CONFIG_DIR = Path(__file__).resolve().parent / "conf"
# Errors in the user's config or inputs whose message says everything: one line, not a
# traceback.
USER_ERRORS = (
    ConfigError,
    StackError,
    StackMismatchError,
    FlowFileError,
    FlowCacheError,
    VideoError,
    ModelError,
    DeviceError,
    NoiseStackError,
)

# Errors raised before a run writes anything: a folder's earlier run stays its record
# (status.json: "refused", the earlier record under "previous"); in a new folder, "failed".
REFUSALS = (
    ConfigError, StackError, StackMismatchError, FileExistsError, ModelError, DeviceError
)  # fmt: skip

log = logging.getLogger("run")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def _app(cfg: DictConfig) -> dict | None:
    status, error = "interrupted", None
    # A finished run resubmitted and cancelled while it replays keeps its record (collect
    # then still counts it; its stack check catches an overwrite cut short).
    was_complete = recorded_status(cfg) == "complete"
    try:
        with cancelled_on_sigterm():
            if cfg.get("diffusion") is not None:  # stage=diffuse: noise, then the model
                from noisewarp.diffusion.stage import run as diffuse

                summary = diffuse(cfg)
            else:
                summary = experiment.run(cfg)
        status = "complete"
        return summary
    except Exception as exc:
        # A SIGTERM that a library wrapped in its own error (numba's compiler) is still one.
        error = _cancellation(exc) or exc
        status = getattr(error, "status", "failed")
        if not experiment.in_multirun():
            if isinstance(exc, USER_ERRORS) and not _full_error():
                print(f"noisewarp: error: {exc}", file=sys.stderr)
                raise SystemExit(2) from None
            raise
        # One failing job must not stop a sweep: status.json records it for collect.
        log.exception("run %s", status)
        return None
    finally:
        refused = isinstance(error, REFUSALS) or (status == "cancelled" and was_complete)
        write_status(cfg, status, error, refused=refused)


def _cancellation(exc: BaseException) -> Cancelled | None:
    """The :class:`Cancelled` in ``exc``'s chain of causes, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, Cancelled):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


_USER_FULL_ERROR: bool | None = None  # HYDRA_FULL_ERROR as the user set it (main)


def _full_error() -> bool:
    """Whether the user asked for tracebacks (``HYDRA_FULL_ERROR=1``)."""
    if _USER_FULL_ERROR is not None:
        return _USER_FULL_ERROR
    return bool(os.environ.get("HYDRA_FULL_ERROR"))


def main() -> None:
    """The console script: run (or sweep), then exit 1 if any job of a sweep failed.

    Hydra's own errors (a mistyped key, an override it cannot parse, an interpolation
    that does not resolve) are one line and exit 2 like the config errors of the run.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    global _USER_FULL_ERROR
    _USER_FULL_ERROR = _full_error()
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing and exiting 1
    try:
        _app()
    except (HydraException, OmegaConfBaseException) as exc:
        if _USER_FULL_ERROR:
            raise
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        text = " ".join(lines)
        print(f"noisewarp: error: {text if len(text) < 400 else text[:397] + '...'}",
              file=sys.stderr)  # fmt: skip
        raise SystemExit(2) from None
    finally:
        if not _USER_FULL_ERROR:
            os.environ.pop("HYDRA_FULL_ERROR", None)
    if SweepReport.not_complete:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
