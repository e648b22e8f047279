"""Shared fixtures: composing the Hydra config and running ``run.py`` as a subprocess."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "noisewarp" / "conf"


# The user's own numba cache directory, if any (kept as it is).
USER_JIT_CACHE = os.environ.get("NUMBA_CACHE_DIR")


def _use_keyed_jit_cache() -> None:
    """Compiled kernels cached under a digest of the package's sources (see
    ``noisewarp/jitcache.py``), so the tests never run a kernel compiled before an
    edit to a module it inlines. Loaded by path: importing the package would import
    numba first. A ``NUMBA_CACHE_DIR`` set by the user is left alone."""
    if USER_JIT_CACHE is not None:
        return
    spec = importlib.util.spec_from_file_location(
        "_noisewarp_jitcache", REPO / "noisewarp" / "jitcache.py"
    )
    jitcache = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(jitcache)
    jitcache.use_keyed_cache()


_use_keyed_jit_cache()


def compose_config(*overrides: str, output_dir: Path | str | None = None):
    """The run config for ``overrides`` (Hydra compose API), writing under ``output_dir``."""
    from hydra import compose, initialize_config_dir

    extra = ["output.progress=false"]
    if output_dir is not None:
        extra.append(f"output.dir='{output_dir}'")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[*extra, *overrides])


@pytest.fixture(scope="session")
def compose_any():
    """:func:`compose_config` for fixtures of any scope (module-scoped sweeps)."""
    return compose_config


@pytest.fixture
def compose(tmp_path):
    """``compose(*overrides)``: a config whose outputs go to ``tmp_path / "run"``."""

    def _compose(*overrides: str, output_dir: Path | str | None = None):
        return compose_config(*overrides, output_dir=output_dir or tmp_path / "run")

    return _compose


def _run_py(
    *args: str, timeout: float = 300, env: dict | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """``python run.py ARGS`` in the repository (progress bar off), output captured."""
    result = subprocess.run(
        [sys.executable, str(REPO / "run.py"), *args, "output.progress=false"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"run.py {' '.join(args)} exited with {result.returncode}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


@pytest.fixture(scope="session")
def run_py():
    """``run_py(*args, timeout=, env=, check=)``: ``python run.py ARGS`` as a subprocess."""
    return _run_py
