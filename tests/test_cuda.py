"""The CUDA backend without a GPU: backend resolution, the simulator tests (in their own
process) and real compilation of every kernel to PTX for the GPUs the project targets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import noisewarp as nw
from noisewarp.cuda import unusable_reason

ROOT = Path(__file__).resolve().parents[1]
NO_GPU = unusable_reason() is not None


@pytest.mark.skipif(not NO_GPU, reason="a GPU is usable here")
def test_backends_without_a_gpu():
    assert nw.resolve_backend("auto") == "cpu"
    assert nw.resolve_backend("cpu", "hiwyn") == "cpu"
    with pytest.raises(RuntimeError, match="no usable CUDA GPU.*use backend='cpu'"):
        nw.resolve_backend("cuda")
    with pytest.raises(RuntimeError, match="no usable CUDA GPU"):
        nw.NoiseWarper(8, 8, 4, backend="cuda")


def test_backend_axis_in_the_registry():
    assert nw.METHODS["particle"].backends == ("cpu", "cuda")
    assert nw.METHODS["grid"].backends == ("cpu", "cuda")
    assert nw.METHODS["hiwyn"].backends == ("cpu", "cuda")
    assert nw.METHODS["nearest"].backends == ("cpu",)
    with pytest.raises(ValueError, match="'nearest' has no CUDA kernel.*particle, grid, hiwyn"):
        nw.resolve_backend("cuda", "nearest")
    assert nw.resolve_backend("auto", "nearest") == "cpu"


@pytest.mark.slow
def test_cuda_kernels_under_the_simulator():
    """``tests/cuda_sim`` in a process of its own with ``NUMBA_ENABLE_CUDASIM=1``."""
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/cuda_sim"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    # Everything runs; only the torch test needs a real GPU.
    skips = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert " passed" in result.stdout and all("real CUDA device" in line for line in skips)


def _kernels():
    from noisewarp.cuda import arrays, grid, hiwyn, particle, primitives

    found = dict(particle.KERNELS)
    found.update({f"grid.{name}": entry for name, entry in grid.KERNELS.items()})
    found.update({f"hiwyn.{name}": entry for name, entry in hiwyn.KERNELS.items()})
    found.update({f"arrays.{name}": entry for name, entry in arrays.KERNELS.items()})
    found.update({f"primitives.{name}": entry for name, entry in primitives.KERNELS.items()})
    return found


@pytest.mark.parametrize("cc", [(8, 0), (9, 0)], ids=["sm_80", "sm_90"])
def test_every_kernel_compiles_to_ptx(cc):
    """The simulator runs Python and checks no types: compile each kernel for real."""
    pytest.importorskip("numba_cuda", reason="numba-cuda is not installed (noisewarp[cuda])")
    from noisewarp.cuda.ptx import compile_kernel

    for name, (kernel, signature) in _kernels().items():
        ptx = compile_kernel(kernel, signature, cc)
        assert f".target sm_{cc[0]}{cc[1]}" in ptx, name
        assert ".entry" in ptx, name
        # Atomics only where the design allows them: integer counts and positions.
        for line in ptx.splitlines():
            if "atom." in line:
                assert ".f32" not in line and ".f64" not in line, (name, line)


def test_ptx_compilation_catches_type_errors():
    """The PTX check can fail: a kernel that stores a float into an integer array by
    mistake is rejected at compile time, which the simulator would let pass."""
    pytest.importorskip("numba_cuda")
    from numba import cuda

    from noisewarp.cuda.ptx import compile_kernel

    def broken(out, values):
        i = cuda.grid(1)
        out[i] = values  # a tuple into an array element: no such store

    with pytest.raises(Exception, match="(?i)cannot|invalid|no (conversion|implementation)"):
        compile_kernel(broken, "(float32[::1], UniTuple(float32, 2))", (9, 0))
