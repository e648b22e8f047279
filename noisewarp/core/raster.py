"""HIWYN's scalar code, shared by the CPU and CUDA drivers (as ``core/quad.py`` for grid):
the scan conversion of a target's quad into sub-pixel spans, and the counters of the
fresh draws for what lies outside the frame.

A quad's sub-pixel row s is cut by its four edges at the row's centre line
y = (s + 0.5) / n (``crossing``); sorted (``sort4``), the crossings give one or two spans
by the even-odd rule, and ``column`` turns a span's ends into sub-pixel columns.
Functions are ``njit(inline="always")``; a CUDA kernel compiles their Python.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from noisewarp.core.rng import mix64

__all__ = ["crossing", "sort4", "column", "outside_counter", "target_counter"]


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
