"""Grid-based integral noise warping on the CPU (Deng et al. 2025, Algorithm 2).

Target pixel p's warped region R_p is the quadrilateral of its four mapped
corners T(i, j), T(i, j+1), T(i+1, j+1), T(i+1, j). Its exact overlap
a_pq = |R_p ∩ Omega_q| with every source cell q it touches
(``noisewarp.core.area``, float64) forms the partition record; each source
splits x_q into Brownian-bridge increments of lengths a_pq (DESIGN section 3),

    I_pq = z_pq + a_pq (x_q - sum_p' z_p'q - z_rest),  z_pq ~ N(0, a_pq),
    z_rest ~ N(0, 1 - S_q),  S_q = sum_p a_pq,

and a target sums its increments with fresh noise for the part of R_p outside
the frame: Y_p = (sum_q I_pq + sqrt(A_out) xi_p) / sqrt(A_in + A_out).

Non-injective maps (fold-over, occlusion) claim some sources more than once
(S_q > 1 + 1e-9): those sources' areas are scaled to sum to 1 and counted as
over-claimed. Self-intersecting quads are split into their two lobes
(``quad_lobes``), so no area is negative and nothing is NaN.

Driver (every pass parallel over rows, no atomics, every sum in a fixed order,
so the output is bit-identical for any number of threads):

1. ``_bounds`` (per target): the cells of its bounding box inside the frame
   (plus one slot for A_out if the box leaves the frame). An inclusive scan
   gives every target a private slice of the record.
2. ``_fill`` (per target): the exact areas, slab row by slab row, of the cells
   between the columns the quad spans there; entries above ``AREA_EPS`` are
   written as (source, area), unused slots are marked -1, and a quad leaving
   the frame stores A_out = |R_p| - A_in in its first slot (source
   ``OUT_SLOT``). A quad far outside costs nothing: its cell range is clamped
   to the frame before any loop.
3. ``counting_sort`` of the entries by source (negative ids skipped).
4. ``_sources`` (per source, one sweep over its entries): S_q, the over-claim
   scaling (written back into the record), and corr_q = x_q - sum_p z_pq -
   z_rest. z_pq = sqrt(a_pq) g with g drawn from counter (record slot,
   channel); the gather draws the same g again. That costs one more normal per
   entry but keeps the record at 16 bytes per entry (area, source, sort index)
   instead of adding a per-entry, per-channel buffer of increments.
5. ``_gather`` (per target): Y_p from its entries, corr and fresh noise.

Fresh noise xi_p comes from counter (target, channel) of the FRESH stream, z_rest
from (source, channel) of the REST stream.

A source covered by a single target with all of its unit area (integer
translations) passes x_q through unchanged, so such maps reproduce the shifted
input bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from noisewarp.core.area import (
    AREA_EPS,
    lobe_edges,
    lobe_pieces,
    orientation,
    pieces_ramp,
    quad_lobes,
)
from noisewarp.core.rng import fill_normals
from noisewarp.cpu.diagnostics import target_summary
from noisewarp.cpu.sort import counting_sort

__all__ = ["grid_warp", "grid_record", "OVERCLAIM_TOL", "REST_EPS"]

# S_q above 1 + OVERCLAIM_TOL is a fold-over (rounding of an exact tiling stays ~1e-15).
OVERCLAIM_TOL = 1e-9
# Unclaimed remainders 1 - S_q at or below this are rounding, not area: no z_rest drawn.
REST_EPS = 1e-12
# Out-of-frame area at or below this fraction of |R_p| is rounding of A_in = |R_p|.
OUT_EPS = 1e-12
# Source id of the record slot that holds a target's out-of-frame area A_out.
OUT_SLOT = -2
# At most this many chunks (histogram rows) for the counting sort of the record.
SORT_CHUNKS = 4


@njit(inline="always", cache=True)
def _extent(corners, i, j):
    """Bounding box (rmin, rmax, cmin, cmax) of target (i, j)'s quad."""
    r0, r1 = corners[i, j, 0], corners[i, j + 1, 0]
    r2, r3 = corners[i + 1, j + 1, 0], corners[i + 1, j, 0]
    c0, c1 = corners[i, j, 1], corners[i, j + 1, 1]
    c2, c3 = corners[i + 1, j + 1, 1], corners[i + 1, j, 1]
    return (
        min(min(r0, r1), min(r2, r3)),
        max(max(r0, r1), max(r2, r3)),
        min(min(c0, c1), min(c2, c3)),
        max(max(c0, c1), max(c2, c3)),
    )


@njit(inline="always", cache=True)
def _clamped_range(lo, hi, size):
    """Integer cells [floor(lo), ceil(hi)) clamped to [0, size); clamps as floats first,
    so a map far outside the frame cannot overflow an int."""
    first = max(math.floor(lo), 0.0)
    last = min(math.ceil(hi), float(size))
    if last <= first:
        return 0, 0
    return np.int64(first), np.int64(last)


@njit(inline="always", cache=True)
def _inside(rmin, rmax, cmin, cmax, height, width):
    """Whether the bounding box lies in the frame (then A_out = 0 without computing it)."""
    return rmin >= 0.0 and rmax <= height and cmin >= 0.0 and cmax <= width


@njit(parallel=True, cache=True)
def _bounds(corners, height, width, bound):
    """``bound[p + 1]`` = the slots target p needs: the cells of its bounding box inside
    the frame, plus one for A_out if the box leaves the frame."""
    bound[0] = 0
    for i in prange(height):
        for j in range(width):
            rmin, rmax, cmin, cmax = _extent(corners, i, j)
            row_lo, row_hi = _clamped_range(rmin, rmax, height)
            col_lo, col_hi = _clamped_range(cmin, cmax, width)
            extra = 0 if _inside(rmin, rmax, cmin, cmax, height, width) else 1
            bound[i * width + j + 1] = (row_hi - row_lo) * (col_hi - col_lo) + extra


@njit(inline="always", cache=True)
def _local_lobes(corners, i, j, row0, col0):
    """``quad_lobes`` of target (i, j) with the origin moved to the integer point
    (row0, col0) near the quad (exact), so that the area arithmetic runs on
    numbers of order one whatever the frame size."""
    return quad_lobes(
        corners[i, j, 0] - row0, corners[i, j, 1] - col0,
        corners[i, j + 1, 0] - row0, corners[i, j + 1, 1] - col0,
        corners[i + 1, j + 1, 0] - row0, corners[i + 1, j + 1, 1] - col0,
        corners[i + 1, j, 0] - row0, corners[i + 1, j, 1] - col0,
    )  # fmt: skip


@njit(parallel=True, cache=True)
def _fill(corners, height, width, offsets, sources, areas):
    """Write target p's entries into ``sources``/``areas`` [offsets[p], offsets[p+1]).

    A target whose box leaves the frame keeps A_out in its first slot, marked
    with source ``OUT_SLOT`` (negative, so the sort skips it); unused slots are -1.

    Slab by slab: the cells between the columns the quad spans in the slab get
    ramp(x) - ramp(x + 1) (``noisewarp.core.area``), one ramp per cell boundary.
    """
    for i in prange(height):
        for j in range(width):
            p = i * width + j
            slot = offsets[p]
            rmin, rmax, cmin, cmax = _extent(corners, i, j)
            inside = _inside(rmin, rmax, cmin, cmax, height, width)
            if not inside:
                slot += 1
            row0 = math.floor(rmin)
            col0 = math.floor(cmin)
            q = _local_lobes(corners, i, j, row0, col0)
            sign_a = orientation(q[16])
            sign_b = orientation(q[17])
            total = abs(q[16]) + abs(q[17])
            ea = lobe_edges(q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7])
            eb = ea
            if sign_b != 0.0:
                eb = lobe_edges(q[8], q[9], q[10], q[11], q[12], q[13], q[14], q[15])
            row_lo, row_hi = _clamped_range(rmin, rmax, height)
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
                    first, last = _clamped_range(span_lo + col0, span_hi + col0, width)
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
            for e in range(slot, offsets[p + 1]):
                sources[e] = -1
                areas[e] = 0.0
            if not inside:
                # Out-of-frame area: whatever of |R_p| the frame's cells did not account for.
                outside = total - area_in
                sources[offsets[p]] = OUT_SLOT
                areas[offsets[p]] = outside if outside > OUT_EPS * total else 0.0


@njit(parallel=True, cache=True)
def _sources(noise, start, order, areas, bridge_offset, bridge_gamma, rest_offset, rest_gamma,
             corr, single, row_stats):  # fmt: skip
    """Per source: S_q, over-claim scaling (in place), corr_q and the single-piece flag.

    ``row_stats[i]`` = (over-claimed, unclaimed) sources of row i.
    """
    height, width, channels = noise.shape
    for i in prange(height):
        zsum = np.empty(channels)
        g = np.empty(channels)
        overclaimed = 0
        unclaimed = 0
        for j in range(width):
            q = i * width + j
            first = start[q]
            last = start[q + 1]
            if last == first:
                unclaimed += 1
                single[q] = 0
                for c in range(channels):
                    corr[q, c] = 0.0
                continue
            # One sweep for S_q and sum_p z_pq; a fold's over-claimed source (rare)
            # is rescaled and swept again.
            for c in range(channels):
                zsum[c] = 0.0
            claimed = 0.0
            for t in range(first, last):
                e = order[t]
                a = areas[e]
                claimed += a
                root = math.sqrt(a)
                fill_normals(bridge_offset, bridge_gamma, np.uint64(e) * np.uint64(channels), g)
                for c in range(channels):
                    zsum[c] += root * g[c]
            if claimed > 1.0 + OVERCLAIM_TOL:
                overclaimed += 1
                scale = 1.0 / claimed
                for c in range(channels):
                    zsum[c] = 0.0
                for t in range(first, last):
                    e = order[t]
                    areas[e] *= scale
                    root = math.sqrt(areas[e])
                    fill_normals(bridge_offset, bridge_gamma, np.uint64(e) * np.uint64(channels), g)
                    for c in range(channels):
                        zsum[c] += root * g[c]
                claimed = 1.0
            if last - first == 1 and claimed >= 1.0 - REST_EPS:
                # The whole of x_q goes to one target: pass it through exactly.
                single[q] = 1
                for c in range(channels):
                    corr[q, c] = noise[i, j, c]
                continue
            single[q] = 0
            rest = 1.0 - claimed
            if rest > REST_EPS:
                root = math.sqrt(rest)
                fill_normals(rest_offset, rest_gamma, np.uint64(q) * np.uint64(channels), g)
                for c in range(channels):
                    zsum[c] += root * g[c]
            for c in range(channels):
                corr[q, c] = noise[i, j, c] - zsum[c]
        row_stats[i, 0] = overclaimed
        row_stats[i, 1] = unclaimed


@njit(parallel=True, cache=True)
def _gather(offsets, sources, areas, corr, single, bridge_offset, bridge_gamma,
            fresh_offset, fresh_gamma, out, row_stats):  # fmt: skip
    """Y_p = (sum_q I_pq + sqrt(A_out) xi_p) / sqrt(A_in + A_out); xi_p where A_in = 0.

    ``row_stats[i]`` = (fresh pixels, min A_p, sum A_p, max A_p) of row i.
    """
    height, width, channels = out.shape
    for i in prange(height):
        acc = np.empty(channels)
        g = np.empty(channels)
        fresh = 0
        amin = np.inf
        amax = 0.0
        asum = 0.0
        for j in range(width):
            p = i * width + j
            for c in range(channels):
                acc[c] = 0.0
            area_in = 0.0
            outside = 0.0
            for e in range(offsets[p], offsets[p + 1]):
                q = sources[e]
                if q < 0:
                    if q == OUT_SLOT:
                        outside = areas[e]
                    continue
                a = areas[e]
                area_in += a
                if single[q]:
                    for c in range(channels):
                        acc[c] += corr[q, c]
                else:
                    root = math.sqrt(a)
                    fill_normals(bridge_offset, bridge_gamma, np.uint64(e) * np.uint64(channels), g)
                    for c in range(channels):
                        acc[c] += root * g[c] + a * corr[q, c]
            total = area_in + outside
            base = np.uint64(p) * np.uint64(channels)
            if area_in > 0.0:
                if outside > 0.0:
                    root = math.sqrt(outside)
                    fill_normals(fresh_offset, fresh_gamma, base, g)
                    for c in range(channels):
                        acc[c] += root * g[c]
                inv = 1.0 / math.sqrt(total)
                for c in range(channels):
                    out[i, j, c] = acc[c] * inv
            else:
                fresh += 1
                fill_normals(fresh_offset, fresh_gamma, base, g)
                for c in range(channels):
                    out[i, j, c] = g[c]
            amin = min(amin, total)
            amax = max(amax, total)
            asum += total
        row_stats[i, 0] = fresh
        row_stats[i, 1] = amin
        row_stats[i, 2] = asum
        row_stats[i, 3] = amax


def _check_corners(corners: np.ndarray, height: int, width: int) -> np.ndarray:
    if corners.shape != (height + 1, width + 1, 2):
        raise ValueError(
            f"corner map must have shape {(height + 1, width + 1, 2)} for a {height} x {width} "
            f"frame, got {corners.shape}"
        )
    return np.ascontiguousarray(corners, dtype=np.float64)


def _partition(corners: np.ndarray, height: int, width: int):
    """Steps 1-2: ``(offsets, sources, areas)``, the target-major record."""
    if height * width >= 2**31:
        raise ValueError(f"a {height} x {width} frame has too many pixels for int32 source ids")
    bound = np.empty(height * width + 1, dtype=np.int64)
    _bounds(corners, height, width, bound)
    np.cumsum(bound, out=bound)
    entries = int(bound[-1])
    if entries >= 2**31:
        raise ValueError(
            f"the map's quads overlap {entries} source cells in total (more than 2**31): "
            "it stretches pixels over far too much of the frame to warp with grid"
        )
    # int32 offsets: the record is indexed by int32 anyway (counting_sort's order).
    offsets = bound.astype(np.int32)
    del bound
    sources = np.empty(entries, dtype=np.int32)
    areas = np.empty(entries, dtype=np.float64)
    _fill(corners, height, width, offsets, sources, areas)
    return offsets, sources, areas


def grid_record(corners: np.ndarray, height: int, width: int):
    """The grid partition record from the fast kernel, before over-claim scaling.

    Parameters
    ----------
    corners : ndarray [H+1, W+1, 2]
        T at the pixel corners, (row, col).
    height, width : int
        The frame size.

    Returns
    -------
    targets, sources : ndarray int64 [E]
        Flat pixel indices (i * W + j) of each entry's target p and source q.
    areas : ndarray float64 [E]
        a_pq = |R_p ∩ Omega_q| > ``AREA_EPS``.
    area_out : ndarray float64 [H*W]
        A_out of every target: the area of R_p outside the frame.
    """
    corners = _check_corners(corners, height, width)
    offsets, sources, areas = _partition(corners, height, width)
    targets = np.repeat(np.arange(height * width, dtype=np.int64), np.diff(offsets))
    area_out = np.zeros(height * width)
    out_slots = sources == OUT_SLOT
    area_out[targets[out_slots]] = areas[out_slots]
    valid = sources >= 0
    return targets[valid], sources[valid].astype(np.int64), areas[valid], area_out


def grid_warp(noise, corners, bridge_stream, rest_stream, fresh_stream, nchunks):
    """Warp one frame. ``noise`` float32 [H, W, C], ``corners`` float64 [H+1, W+1, 2].

    The streams are ``(offset, gamma)`` pairs (``Key.stream``) for the bridge
    normals (counter: record slot, channel), the unclaimed remainders (source,
    channel) and the fresh out-of-frame noise (target, channel). Returns
    ``(out, stats)``: ``out`` float32 [H, W, C] and a dict of diagnostics, the
    common keys plus ``entries`` (size of the partition record).
    """
    height, width, channels = noise.shape
    corners = _check_corners(corners, height, width)
    offsets, sources, areas = _partition(corners, height, width)
    # The sort keeps one int64 histogram row per chunk (8 bytes per source each): a
    # few chunks parallelise it well enough without making it the largest array.
    start, order = counting_sort(sources, height * width, min(nchunks, SORT_CHUNKS))
    corr = np.empty((height * width, channels), dtype=np.float64)
    single = np.empty(height * width, dtype=np.uint8)
    source_stats = np.empty((height, 2), dtype=np.int64)
    _sources(noise, start, order, areas, *bridge_stream, *rest_stream, corr, single, source_stats)
    entries = int(start[-1])
    del start, order
    out = np.empty_like(noise, dtype=np.float32)
    target_stats = np.empty((height, 4), dtype=np.float64)
    _gather(offsets, sources, areas, corr, single, *bridge_stream, *fresh_stream, out,
            target_stats)  # fmt: skip
    stats = {
        **target_summary(target_stats, height * width),
        "overclaimed_sources": int(source_stats[:, 0].sum()),
        "unclaimed_sources": int(source_stats[:, 1].sum()),
        "entries": entries,
    }
    return out, stats
