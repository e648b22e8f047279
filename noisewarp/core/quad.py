"""The grid method's scalar code, shared by the CPU and CUDA drivers: one definition, two
targets (README, "GPU (numba.cuda)"; as ``core/bridge.py`` for particle).

Target pixel p's quad is T at its four corners; these functions give its bounding box,
its slot count in the partition record, its entries (source cell, exact area
a_pq > ``AREA_EPS``) from ``noisewarp.core.area``, and, once the bridges are walked,
its gathered increments and E[Y_p | X]:

- ``small_quad``: the branch-free areas of a quad inside the frame, strictly convex and
  within 2 x 2 cells (the CPU runs it over a row in a loop that vectorises);
- ``quad_entries``: the general slab loop, any quad;
- ``gather_target``, ``conditional_target``: a target's sums over its entries, in
  entry order.

The CPU picks ``small_quad``'s areas when its ``fast`` flag is set and the slab loop
otherwise; the GPU makes the same choice per quad, so both write the same doubles.

Scalar functions are ``njit(inline="always")`` (a CUDA kernel compiles the same
Python). The functions that take arrays (``small_entries``, ``quad_entries``,
``gather_target``, ``conditional_target``) call no other function that takes one, so
their ``py_func`` also serves as a ``cuda.jit(device=True)`` function (which numba's
CUDA simulator runs as Python: it cannot pass its arrays to compiled functions).
Floors and ceilings of floats stay floats (``floor``, ``ceil``: ``llvm.floor.f64``
and ``llvm.ceil.f64``, as ``np.floor`` on the CPU; numba.cuda has no ``np.floor``).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from noisewarp.core.area import (
    AREA_EPS,
    edge_piece,
    edge_setup,
    lobe_edges,
    lobe_pieces,
    orientation,
    pieces_ramp,
    polygon_signed_area,
    quad_lobes,
    ramp,
    strictly_convex,
)

__all__ = [
    "OVERCLAIM_TOL",
    "REST_EPS",
    "OUT_EPS",
    "OUT_SLOT",
    "floor",
    "ceil",
    "box",
    "inside",
    "cell_count",
    "clamped_range",
    "small_quad",
    "small_entries",
    "quad_entries",
    "covered",
    "overclaimed",
    "check_sizes",
    "gather_target",
    "conditional_target",
]

# S_q above 1 + OVERCLAIM_TOL is a fold-over (rounding of an exact tiling stays ~1e-15).
OVERCLAIM_TOL = 1e-9
# Unclaimed remainders 1 - S_q at or below this are rounding, not area: no z_rest drawn.
REST_EPS = 1e-12
# Out-of-frame area at or below this fraction of |R_p| is rounding of A_in = |R_p|.
OUT_EPS = 1e-12
# Source id of the record slot that holds a target's out-of-frame area A_out.
OUT_SLOT = -2


def check_sizes(height: int, width: int, entries: int = 0) -> None:
    """Refuse a frame, or a record of ``entries`` slots, too large for int32 indices."""
    if height * width >= 2**31:
        raise ValueError(f"a {height} x {width} frame has too many pixels for int32 source ids")
    if entries >= 2**31:
        raise ValueError(
            f"the map's quads overlap {entries} source cells in total (more than 2**31): "
            "it stretches pixels over far too much of the frame to warp with grid"
        )


@njit(inline="always")
def covered(claimed):
    """Whether a source's pieces cover it, S_q >= 1 - ``REST_EPS`` (its last piece closes
    its bridge); otherwise the unclaimed remainder is the bridge's undrawn last stretch."""
    return claimed >= 1.0 - REST_EPS


@njit(inline="always")
def overclaimed(claimed):
    """Whether a source is claimed more than once, S_q > 1 + ``OVERCLAIM_TOL`` (fold-over):
    its areas are rescaled to sum to 1."""
    return claimed > 1.0 + OVERCLAIM_TOL


def _llvm_rounding(name: str):
    """An intrinsic calling LLVM's ``name`` on a float64 (lowered on CPU and GPU alike)."""

    @intrinsic
    def call(typingctx, x):
        if x != types.float64:
            return None

        def codegen(context, builder, signature, args):
            double = ir.DoubleType()
            fnty = ir.FunctionType(double, [double])
            return builder.call(builder.module.declare_intrinsic(name, [double], fnty), args)

        return types.float64(types.float64), codegen

    return call


_floor = _llvm_rounding("llvm.floor")
_ceil = _llvm_rounding("llvm.ceil")


@njit(inline="always")
def floor(x):
    """floor(x) as a float (``np.floor`` of a float64 scalar, also on the GPU)."""
    return _floor(x)


@njit(inline="always")
def ceil(x):
    """ceil(x) as a float (``np.ceil`` of a float64 scalar, also on the GPU)."""
    return _ceil(x)


@njit(inline="always")
def quad_corners(corners, i, j):
    """Corners (r0, c0, ..., r3, c3) of target (i, j)'s quad from the [H+1, W+1, 2] corner
    map, in boundary order: (i, j), (i, j+1), (i+1, j+1), (i+1, j)."""
    return (
        corners[i, j, 0], corners[i, j, 1], corners[i, j + 1, 0], corners[i, j + 1, 1],
        corners[i + 1, j + 1, 0], corners[i + 1, j + 1, 1], corners[i + 1, j, 0],
        corners[i + 1, j, 1],
    )  # fmt: skip


@njit(inline="always")
def box(r0, c0, r1, c1, r2, c2, r3, c3):
    """Bounding box (rmin, rmax, cmin, cmax) of the quad v0 v1 v2 v3 (selects only)."""
    return (
        min(min(r0, r1), min(r2, r3)),
        max(max(r0, r1), max(r2, r3)),
        min(min(c0, c1), min(c2, c3)),
        max(max(c0, c1), max(c2, c3)),
    )


@njit(inline="always")
def clamped_range(lo, hi, size):
    """Integer cells [floor(lo), ceil(hi)) clamped to [0, size); clamps as floats first,
    so a map far outside the frame cannot overflow an int."""
    first = max(math.floor(lo), 0.0)
    last = min(math.ceil(hi), float(size))
    if last <= first:
        return 0, 0
    return np.int64(first), np.int64(last)


@njit(inline="always")
def inside(rmin, rmax, cmin, cmax, height, width):
    """Whether the bounding box lies in the frame (then A_out = 0 without computing it).
    A select, not branches, for the loops that vectorise."""
    return (rmin >= 0.0) & (rmax <= height) & (cmin >= 0.0) & (cmax <= width)


@njit(inline="always")
def cell_count(lo, hi, size):
    """``clamped_range``'s number of cells as a float, branch-free (for vectorised loops)."""
    return max(min(ceil(hi), size) - max(floor(lo), 0.0), 0.0)


@njit(inline="always")
def _slab_2(e0, e1, e2, e3, row, col0, width):
    """The quad's (lobe A's) cells in the slab [row, row+1]: ``(fits, x, left, right)``,
    whether it spans at most two columns there (rounding can stretch a piece a
    hair past the bounding box), the first column (relative to col0) and the
    areas of cells x and x + 1 before the orientation sign; 0 where the quad has
    no width in the slab. The same arithmetic as ``quad_entries``' slab loop (floors
    stay floats: no conversion of a far-off coordinate to an integer)."""
    l0, lo0, hi0 = edge_piece(e0[0], e0[1], e0[2], e0[3], e0[5], row)
    l1, lo1, hi1 = edge_piece(e1[0], e1[1], e1[2], e1[3], e1[5], row)
    l2, lo2, hi2 = edge_piece(e2[0], e2[1], e2[2], e2[3], e2[5], row)
    l3, lo3, hi3 = edge_piece(e3[0], e3[1], e3[2], e3[3], e3[5], row)
    big = 1.0e308
    span_lo = min(
        min(lo0 if l0 != 0.0 else big, lo1 if l1 != 0.0 else big),
        min(lo2 if l2 != 0.0 else big, lo3 if l3 != 0.0 else big),
    )
    span_hi = max(
        max(hi0 if l0 != 0.0 else -big, hi1 if l1 != 0.0 else -big),
        max(hi2 if l2 != 0.0 else -big, hi3 if l3 != 0.0 else -big),
    )
    first = max(floor(span_lo + col0), 0.0)
    last = min(ceil(span_hi + col0), float(width))
    some = (span_hi > span_lo) & (last > first)
    fits = (last - first <= 2.0) | ~some
    x = first - col0 if some else 0.0
    here = (
        ramp(l0, lo0, hi0, e0[4], x)
        + ramp(l1, lo1, hi1, e1[4], x)
        + ramp(l2, lo2, hi2, e2[4], x)
        + ramp(l3, lo3, hi3, e3[4], x)
    )
    x1 = x + 1.0
    right = (
        ramp(l0, lo0, hi0, e0[4], x1)
        + ramp(l1, lo1, hi1, e1[4], x1)
        + ramp(l2, lo2, hi2, e2[4], x1)
        + ramp(l3, lo3, hi3, e3[4], x1)
    )
    right = right if x1 < span_hi else 0.0
    left = here - right
    return fits, x, left if some else 0.0, right if some else 0.0


@njit(inline="always")
def small_quad(r0, c0, r1, c1, r2, c2, r3, c3, height, width):
    """The exact areas of the quad v0 v1 v2 v3 if its bounding box is at most 2 x 2
    cells, inside the frame, and it is strictly convex; without branches (a loop of
    these vectorises). Returns ``(fast, row0, col0, x0, a00, a01, x1, a10, a11)``:
    whether it qualifies (else take ``quad_entries``), its box's first cell, and per
    slab the first column relative to col0 and its two cells' areas: the doubles the
    slab loop would give."""
    rmin, rmax, cmin, cmax = box(r0, c0, r1, c1, r2, c2, r3, c3)
    row0 = floor(rmin)
    col0 = floor(cmin)
    within = inside(rmin, rmax, cmin, cmax, height, width)
    small = (ceil(rmax) - row0 <= 2.0) & (ceil(cmax) - col0 <= 2.0)
    r0 -= row0
    r1 -= row0
    r2 -= row0
    r3 -= row0
    c0 -= col0
    c1 -= col0
    c2 -= col0
    c3 -= col0
    convex = strictly_convex(r0, c0, r1, c1, r2, c2, r3, c3)
    e0 = edge_setup(r0, c0, r1, c1)
    e1 = edge_setup(r1, c1, r2, c2)
    e2 = edge_setup(r2, c2, r3, c3)
    e3 = edge_setup(r3, c3, r0, c0)
    sign = orientation(polygon_signed_area(r0, c0, r1, c1, r2, c2, r3, c3))
    fits0, x, left, right = _slab_2(e0, e1, e2, e3, 0.0, col0, width)
    fits1, x1, left1, right1 = _slab_2(e0, e1, e2, e3, 1.0, col0, width)
    fast = within & small & convex & fits0 & fits1
    return fast, row0, col0, x, sign * left, sign * right, x1, sign * left1, sign * right1


@njit(inline="always")
def small_entries(sources, areas, slot, width, row0, col0, x0, a00, a01, x1, a10, a11):
    """Write a ``small_quad``'s entries above ``AREA_EPS`` from ``slot`` on, cells in slab
    then column order; returns the next slot."""
    for slab, x, left, right in ((0, x0, a00, a01), (1, x1, a10, a11)):
        row = (np.int64(row0) + slab) * width
        col = np.int64(col0 + x)
        for source, area in ((row + col, left), (row + col + 1, right)):
            if area > AREA_EPS:
                sources[slot] = source
                areas[slot] = area
                slot += 1
    return slot


@njit(cache=True)
def quad_entries(corners, i, j, height, width, sources, areas, slot):
    """Write target (i, j)'s entries from ``slot`` on, slab by slab, any quad: the cells
    between the columns the quad spans in the slab get ramp(x) - ramp(x + 1)
    (``noisewarp.core.area``), one ramp per cell boundary. A quad leaving the frame
    keeps A_out in ``slot`` itself, marked ``OUT_SLOT``. Returns the next slot.

    The origin moves to the integer point (row0, col0) near the quad (exact), so the
    area arithmetic runs on numbers of order one whatever the frame size."""
    first_slot = slot
    # Read here, not through ``quad_corners``: the CUDA simulator cannot pass an array
    # from a device function into a CPU-jitted one.
    r0 = corners[i, j, 0]
    c0 = corners[i, j, 1]
    r1 = corners[i, j + 1, 0]
    c1 = corners[i, j + 1, 1]
    r2 = corners[i + 1, j + 1, 0]
    c2 = corners[i + 1, j + 1, 1]
    r3 = corners[i + 1, j, 0]
    c3 = corners[i + 1, j, 1]
    rmin, rmax, cmin, cmax = box(r0, c0, r1, c1, r2, c2, r3, c3)
    within = inside(rmin, rmax, cmin, cmax, height, width)
    if not within:
        slot += 1
    row0 = floor(rmin)
    col0 = floor(cmin)
    q = quad_lobes(r0 - row0, c0 - col0, r1 - row0, c1 - col0,
                   r2 - row0, c2 - col0, r3 - row0, c3 - col0)  # fmt: skip
    sign_a = orientation(q[16])
    sign_b = orientation(q[17])
    total = abs(q[16]) + abs(q[17])
    ea = lobe_edges(q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7])
    eb = ea
    if sign_b != 0.0:
        eb = lobe_edges(q[8], q[9], q[10], q[11], q[12], q[13], q[14], q[15])
    row_lo, row_hi = clamped_range(rmin, rmax, height)
    area_in = 0.0
    if sign_a != 0.0:
        for row in range(row_lo, row_hi):
            local_row = row - row0
            sa = lobe_pieces(ea, local_row)
            sb = sa
            span_lo = sa[12]
            span_hi = sa[13]
            if sign_b != 0.0:
                sb = lobe_pieces(eb, local_row)
                span_lo = min(span_lo, sb[12])
                span_hi = max(span_hi, sb[13])
            if not span_hi > span_lo:
                continue
            first, last = clamped_range(span_lo + col0, span_hi + col0, width)
            # Coverage of the column strip [x, x+1) = ramp(x) - ramp(x + 1);
            # ramp is 0 right of the span.
            x = first - col0
            ramp_a = pieces_ramp(ea, sa, x)
            ramp_b = pieces_ramp(eb, sb, x) if sign_b != 0.0 else 0.0
            for col in range(first, last):
                x += 1.0
                next_a = pieces_ramp(ea, sa, x) if x < span_hi else 0.0
                area = sign_a * (ramp_a - next_a)
                ramp_a = next_a
                if sign_b != 0.0:
                    next_b = pieces_ramp(eb, sb, x) if x < span_hi else 0.0
                    area = max(area, 0.0) + max(sign_b * (ramp_b - next_b), 0.0)
                    ramp_b = next_b
                if area > AREA_EPS:
                    sources[slot] = row * width + col
                    areas[slot] = area
                    area_in += area
                    slot += 1
    if not within:
        # Out-of-frame area: whatever of |R_p| the frame's cells did not account for.
        outside = total - area_in
        sources[first_slot] = OUT_SLOT
        areas[first_slot] = outside if outside > OUT_EPS * total else 0.0
    return slot


@njit(inline="always")
def gather_target(p, offsets, sources, areas, scaled, inc, e0, acc, nc):
    """Sum target p's increments ``inc[e - e0]`` in entry order into ``acc[:nc]`` (``nc``
    channels: a compile-time constant on the CPU, so the channel loops unroll); returns
    (A_in, A_out): the sum of its (rescaled) areas ``scaled[e - e0]`` and its
    out-of-frame area (slot ``OUT_SLOT``)."""
    for c in range(nc):
        acc[c] = 0.0
    area_in = 0.0
    outside = 0.0
    for e in range(offsets[p], offsets[p + 1]):
        q = sources[e]
        if q < 0:
            if q == OUT_SLOT:
                outside = areas[e]
            continue
        area_in += scaled[e - e0]
        for c in range(nc):
            acc[c] += inc[e - e0, c]
    return area_in, outside


@njit(cache=True)
def conditional_target(p, offsets, sources, scaled, e0, source_flat, inv, cond_mean,
                       cond_carried, mean):  # fmt: skip
    """E[Y_p | X] and sum_q a_pq^2 / A_p of one gathered target from its entries
    (``mean`` is scratch of at least C = ``source_flat.shape[1]``; A_out adds to A_p
    only, through ``inv`` = 1 / sqrt(A_p))."""
    nc = source_flat.shape[1]
    for c in range(nc):
        mean[c] = 0.0
    square = 0.0
    for e in range(offsets[p], offsets[p + 1]):
        q = sources[e]
        if q >= 0:
            area = scaled[e - e0]
            square += area * area
            for c in range(nc):
                mean[c] += area * source_flat[q, c]
    for c in range(nc):
        cond_mean[p, c] = mean[c] * inv
    cond_carried[p] = square * inv * inv
