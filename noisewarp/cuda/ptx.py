"""Compile a CUDA kernel to PTX without a GPU (``numba.cuda.compile_ptx``), for checks
in CI: the simulator runs kernels as Python, so only a real compile catches type errors.
"""

from __future__ import annotations

import contextlib

__all__ = ["compile_kernel"]


class _TargetDevice:
    """Stands in for the current device while device functions compile: numba-cuda asks
    the current device's compute capability even when the kernel names one."""

    def __init__(self, cc: tuple[int, int]) -> None:
        self.compute_capability = cc


@contextlib.contextmanager
def _compiling_for(cc: tuple[int, int]):
    from numba.cuda import dispatcher

    real = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: _TargetDevice(cc)
    try:
        yield
    finally:
        dispatcher.get_current_device = real


def compile_kernel(kernel, signature: str, cc: tuple[int, int]) -> str:
    """The PTX of ``kernel`` (a ``cuda.jit`` kernel or a plain function) for ``signature``
    on compute capability ``cc``; raises the compiler's error if it does not compile."""
    from numba import cuda

    function = getattr(kernel, "py_func", kernel)
    with _compiling_for(cc):
        ptx, _ = cuda.compile_ptx(function, signature, cc=cc)
    return ptx
