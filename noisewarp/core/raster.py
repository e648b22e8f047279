"""HIWYN's scalar code, shared by the CPU and CUDA drivers (as ``core/quad.py`` for grid):
the scan conversion of a target's quad into sub-pixel spans, a target's output from its
sub-pixels, and the counters of the fresh draws for what lies outside the frame.

A quad's sub-pixel row s is cut by its four edges at the row's centre line
y = (s + 0.5) / n (``crossing``); sorted (``sort4``), the crossings give one or two spans
by the even-odd rule, and ``column`` turns a span's ends into sub-pixel columns.
Functions are ``njit(inline="always")``; a CUDA kernel compiles their Python (those
taking arrays through ``cuda.jit(device=True)(f.py_func)``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from noisewarp.core.rng import mix64

__all__ = [
    "crossing",
    "sort4",
    "column",
    "scale_target",
    "centre_subpixel",
    "outside_counter",
    "target_counter",
]


@njit(inline="always")
def crossing(r0, c0, r1, c1, y):
    """Column where the edge crosses the line r = y (half-open rule), or inf if it does not.

    The edge counts when exactly one endpoint is above y (r > y); interpolating from
    the endpoint with the smaller r makes the result independent of direction.
    """
    if (r0 > y) == (r1 > y):
        return math.inf
    if r0 < r1:
        return c0 + (y - r0) * (c1 - c0) / (r1 - r0)
    return c1 + (y - r1) * (c0 - c1) / (r0 - r1)


@njit(inline="always")
def sort4(a, b, c, d):
    """The four values in ascending order (a sorting network)."""
    if a > b:
        a, b = b, a
    if c > d:
        c, d = d, c
    if a > c:
        a, c = c, a
    if b > d:
        b, d = d, b
    if b > c:
        b, c = c, b
    return a, b, c, d


@njit(inline="always")
def column(x, n):
    """The first sub-pixel column whose centre (k + 0.5) / n is >= x (x within a quad)."""
    return np.int64(math.ceil(x * n - 0.5))


@njit(inline="always")
def scale_target(acc, mean, count, n, i, j, p, out, cond_mean, wanted):
    """Y_p = sum_{K_p} s / sqrt(|K_p|) from the sums ``acc`` of its ``count`` sub-pixels,
    and E[Y_p | X] = sum_q |K_pq| x_q / (n sqrt(|K_p|)) from ``mean`` if ``wanted``."""
    inv = 1.0 / math.sqrt(count)
    for c in range(out.shape[2]):
        out[i, j, c] = acc[c] * inv
        if wanted:
            cond_mean[p, c] = mean[c] * inv / n


@njit(inline="always")
def centre_subpixel(field, noise, centres, n, i, j, p, out, cond_mean, cond_carried, wanted):
    """A target with no sub-pixel centre in its quad takes the sub-pixel containing T(p)
    (E[Y_p | X] = x_q / n, carried 1 / n^2); False when T(p) is outside the field, which
    the caller then draws fresh. The float64 cast keeps the simulator's NumPy 2 scalars
    in float64, as compiled code is."""
    tr = centres[i, j, 0] * n
    tc = centres[i, j, 1] * n
    if not (tr >= 0.0 and tr < field.shape[0] and tc >= 0.0 and tc < field.shape[1]):
        return False
    sr = np.int64(tr)
    sc = np.int64(tc)
    for c in range(out.shape[2]):
        out[i, j, c] = field[sr, sc, c]
        if wanted:
            cond_mean[p, c] = np.float64(noise[sr // n, sc // n, c]) / n
    if wanted:
        cond_carried[p] = 1.0 / (n * n)
    return True


@njit(inline="always")
def outside_counter(sub_row, sub_col, channel):
    """The counter of the fresh N(0, 1) of a sub-pixel outside the frame (any integer
    coordinates), in the sub-pixel stream's fresh key space."""
    key = (np.uint64(sub_row & 0xFFFFFFFF) << np.uint64(32)) | np.uint64(sub_col & 0xFFFFFFFF)
    return mix64(key) + np.uint64(channel)


@njit(inline="always")
def target_counter(p, channel):
    """The counter of a whole target's fresh N(0, 1); the top key bit keeps it apart from
    the sub-pixels'."""
    key = np.uint64(p) | (np.uint64(1) << np.uint64(63))
    return mix64(key) + np.uint64(channel)
