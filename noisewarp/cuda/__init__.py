"""The numba.cuda backend: device drivers paired with the CPU ones in ``noisewarp.cpu``.

Importing this package does not touch the GPU; :func:`usable` says whether one is
there (it imports ``numba.cuda`` on first call, which costs about 0.4 s).
"""

from __future__ import annotations

import functools
import os

__all__ = ["usable", "unusable_reason"]


@functools.cache
def unusable_reason() -> str | None:
    """Why the CUDA backend cannot run here, or None when it can (a GPU that numba.cuda
    can open, or the CUDA simulator under ``NUMBA_ENABLE_CUDASIM=1``)."""
    try:
        from numba import cuda
    except Exception as exc:  # numba-cuda missing or broken
        return f"numba.cuda cannot be imported ({exc}); install noisewarp[cuda]"
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return None
    try:
        if not cuda.is_available():
            return "numba.cuda finds no usable CUDA GPU and driver on this machine"
        cuda.get_current_device()
    except Exception as exc:
        return f"the CUDA GPU cannot be opened ({exc})"
    return None


def usable() -> bool:
    """Whether the CUDA kernels can run in this process."""
    return unusable_reason() is None
