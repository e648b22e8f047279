"""The particle method's per-target code that takes arrays, shared by the CPU and CUDA
drivers: one definition, two targets (as ``core/quad.py`` for grid).

Target p's pieces come from the neighbours k of its cell floor(u), at floor(u) +
(k >> 1, k & 1); a slot row holds, per neighbour k, the increment of each of the C
channels and then a_pq (stride C + 1). The functions here call no other function that
takes an array, so their ``py_func`` also serves as a ``cuda.jit(device=True)`` function
(which numba's CUDA simulator runs as Python).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from noisewarp.core.bridge import NEIGHBOURS

__all__ = ["conditional_target", "EVERY_NEIGHBOUR"]

# ``pieces`` with a bit for every neighbour: for slots that hold a_pq = 0 where a
# neighbour is no piece (the CPU's), whose own test then skips it.
EVERY_NEIGHBOUR = (1 << NEIGHBOURS) - 1


@njit(inline="always")
def conditional_target(p, cell_row, cell_col, pieces, slots, local, noise, inv, cond_mean,
                       cond_carried, mean, nc):  # fmt: skip
    """E[Y_p | X] = sum_q a_pq x_q / sqrt(A_p) and sum_q a_pq^2 / A_p of one finished
    target into ``cond_mean[p]`` and ``cond_carried[p]``, summed in neighbour order over
    its slot row ``slots[local]``: the neighbours k with bit k of ``pieces`` set and
    a_pq > 0. ``cell_row``, ``cell_col``: its cell in ``noise`` [H, W, C]; ``inv`` =
    1 / sqrt(A_p); ``mean``: scratch of ``nc`` = C values."""
    stride = nc + 1
    for c in range(nc):
        mean[c] = 0.0
    square = 0.0
    for k in range(NEIGHBOURS):
        if (pieces >> k) & 1:
            area = np.float64(slots[local, k * stride + nc])
            if area > 0.0:
                row = cell_row + (k >> 1)
                col = cell_col + (k & 1)
                square += area * area
                for c in range(nc):
                    mean[c] += area * noise[row, col, c]
    for c in range(nc):
        cond_mean[p, c] = mean[c] * inv
    cond_carried[p] = square * inv * inv
