"""``python -m noisewarp.precompile`` fills the numba cache: a later process compiles nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# A cheap method: its kernels compile in seconds.
METHOD = "nearest"

RUN = f"""
import json
import noisewarp as nw
from noisewarp.precompile import compiled_kernels
noise = nw.initial_noise(16, 24, 4, seed=3)
nw.warp(noise, nw.deform.get_deformation("swirl"), method="{METHOD}", key=nw.Key(1, 2))
print(json.dumps(compiled_kernels()))
"""


def _env(cache: Path) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": path}


def _python(args: list[str], cache: Path) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=_env(cache), capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_precompiled_method_loads_without_compiling(tmp_path):
    cache = tmp_path / "numba"
    report = _python(["-m", "noisewarp.precompile", "--methods", METHOD], cache)
    assert f"{METHOD}:" in report and "compiled noisewarp.cpu.baselines._nearest" in report
    assert any(cache.rglob("*.nbi")), "precompile wrote no numba index files"

    kernels = json.loads(_python(["-c", RUN], cache).strip().splitlines()[-1])
    nearest = kernels["noisewarp.cpu.baselines._nearest"]
    assert nearest[0] >= 1, f"the kernel was not loaded from the cache: {nearest}"
    compiled = {name: misses for name, (hits, misses) in kernels.items() if misses}
    assert not compiled, f"compiled after precompile: {compiled}"


def test_an_unwritable_cache_folder_is_an_error(tmp_path):
    """numba would silently cache beside the sources instead: a cluster cache stays empty."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "noisewarp.precompile", "--methods", METHOD], cwd=REPO,
        env=_env(blocker / "cache"), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 2 and "is not a writable folder" in done.stderr, done.stderr
