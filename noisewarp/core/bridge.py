"""Scalar math shared by the CPU and CUDA drivers: one definition, two targets.

Each function is a plain ``numba.njit(inline="always")`` function of scalars.
CPU drivers inline it; a ``numba.cuda`` kernel that calls it compiles the same
Python for the device, so both backends run the same arithmetic in the same order
(docs/methods.md, "Backends").
"""

from __future__ import annotations

import math

from numba import njit

__all__ = ["bilinear_weight", "bridge_split", "particle_in_reach", "NEIGHBOURS"]

# Neighbour k of a particle's cell floor(u) is floor(u) + (k >> 1, k & 1).
NEIGHBOURS = 4


@njit(inline="always")
def bilinear_weight(fr, fc, k):
    """Bilinear weight of neighbour k of a particle at fractional offset (fr, fc)."""
    wr = fr if (k >> 1) else 1.0 - fr
    wc = fc if (k & 1) else 1.0 - fc
    return wr * wc


@njit(inline="always")
def particle_in_reach(ur, uc, height, width):
    """Whether a particle at u = T(p) - 0.5 has a neighbour in the frame.

    Compared as floats before any conversion: maps far outside the frame are valid.
    """
    return ur >= -1.0 and ur < height and uc >= -1.0 and uc < width


@njit(inline="always")
def bridge_split(length, left, scale):
    """One non-final piece of a Brownian bridge from 0 to x_q.

    With ``left`` the bridge time still to hand out (this piece's ``length``
    included) and ``resid`` = x_q minus what was drawn so far, the piece's increment
    is I = frac * resid + sd * g, g ~ N(0, 1). ``scale`` is 1 / (total time) when
    the times are unnormalised weights (particle), 1.0 when they are areas (grid).
    Returns ``(frac, sd, left after this piece)``; ``left`` is clamped to at least
    ``length`` (equal up to rounding), which keeps frac <= 1 and the variance >= 0.
    """
    r = max(left, length)
    frac = length / r
    return frac, math.sqrt(frac * (r - length) * scale), r - length
