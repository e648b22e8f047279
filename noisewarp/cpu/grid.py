"""Grid-based integral noise warping on the CPU (Deng et al. 2025, Algorithm 2).

Target pixel p's warped region R_p is the quadrilateral of its four mapped
corners T(i, j), T(i, j+1), T(i+1, j+1), T(i+1, j). Its exact overlap
a_pq = |R_p ∩ Omega_q| with every source cell q it touches
(``noisewarp.core.area``, float64) forms the partition record; each source
splits x_q into Brownian-bridge increments of lengths a_pq (docs/methods.md),

    I = (a / t)(x_q - b) + sqrt(a (t - a) / t) g,  g ~ N(0, 1),

piece by piece, with b the part of x_q drawn so far and t the bridge time left
(1 at the start, minus the pieces drawn; the unclaimed remainder 1 - S_q is the
last stretch, never drawn),

and a target sums its increments with fresh noise for the part of R_p outside
the frame: Y_p = (sum_q I_pq + sqrt(A_out) xi_p) / sqrt(A_in + A_out).

Non-injective maps (fold-over, occlusion) claim some sources more than once
(S_q > 1 + 1e-9): those sources' areas are scaled to sum to 1 and counted as
over-claimed. Self-intersecting quads are split into their two lobes
(``quad_lobes``), so no area is negative and nothing is NaN.

Driver (every pass parallel over rows, no atomics, every sum in a fixed order,
so the output is bit-identical for any number of threads):

1. ``_bounds`` (per target): the cells of its bounding box inside the frame
   (plus one slot for A_out if the box leaves the frame), counted in a loop
   that vectorises; per-row running sums, then the rows' bases
   (``_add_row_bases``), give every target a private slice of the record.
2. ``_fill`` (per chunk of target rows): the exact areas, slab row by slab row,
   of the cells between the columns the quad spans there; entries above
   ``AREA_EPS`` are written as (source, area), unused slots are marked -1, and
   a quad leaving the frame stores A_out = |R_p| - A_in in its first slot
   (source ``OUT_SLOT``). A quad far outside costs nothing: its cell range is
   clamped to the frame before any loop. Quads inside the frame, strictly
   convex and within 2 x 2 cells (most of a smooth map's near identity or
   zooming in) get the same areas from a branch-free loop over the row that
   vectorises (``_small_quads``); the others take the general slab loop.
   While a target row's entries are still in cache, ``_fill`` also counts them
   by source row for the sort (one histogram per chunk, ``_count_rows``) and
   records the row's span of source rows, which gives each chunk of the walk
   its source rows without another pass over the record.
3. ``_row_sort``: a stable counting sort of the entries by source row, from
   those histograms (scan, then one placing pass).
4. ``_warp_chunks`` (per chunk of target rows): walk the bridge of every source
   in the source rows the chunk's quads touch, sequentially in entry order
   (``_walk_row``), keeping the increments of the chunk's own entries, then
   gather Y_p for its targets. A covered source (S_q >= 1 - 1e-12, or
   over-claimed and rescaled) closes its bridge with its last piece, k - 1
   normals per channel for k pieces; a partly claimed one leaves the
   remainder as the undrawn last stretch, k normals. A source row shared by
   two chunks is walked by both, each over the columns its own entries use,
   with identical results, so chunks never exchange data and the work arrays
   hold one chunk's increments, not the whole record's. The first chunk to
   walk a row (its owner) counts its over-claimed and unclaimed sources.

The record and the work arrays are kept between frames (``workspace.grow``).

The bridge normals of source row i are the counters i * E * C + n of the BRIDGE
stream (E the record size); fresh noise xi_p comes from counter (target,
channel) of the FRESH stream.

A source covered by a single target with all of its unit area (integer
translations) passes x_q through unchanged, so such maps reproduce the shifted
input bit for bit.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange

from noisewarp.core.bridge import bridge_split
from noisewarp.core.quad import (
    OUT_SLOT,
    OVERCLAIM_TOL,
    REST_EPS,
    box,
    cell_count,
    check_sizes,
    conditional_target,
    covered,
    gather_target,
    inside,
    overclaimed,
    quad_entries,
    small_entries,
    small_quad,
)
from noisewarp.core.rng import fill_normals
from noisewarp.cpu.diagnostics import conditional_buffers, target_summary
from noisewarp.cpu.sort import scan_offsets
from noisewarp.cpu.workspace import grow

__all__ = ["grid_warp", "grid_record", "OVERCLAIM_TOL", "REST_EPS"]

# Chunks of target rows per thread in the fused walk-and-gather pass.
CHUNKS_PER_THREAD = 8


@njit(cache=True)
def _row_corners(corners, i):
    """Rows and columns of target row i's upper and lower corners, as contiguous [W + 1]
    arrays ``(top_r, top_c, bottom_r, bottom_c)`` for the loops that vectorise."""
    return (
        np.ascontiguousarray(corners[i, :, 0]),
        np.ascontiguousarray(corners[i, :, 1]),
        np.ascontiguousarray(corners[i + 1, :, 0]),
        np.ascontiguousarray(corners[i + 1, :, 1]),
    )


@njit(inline="always", cache=True)
def _row_quad(top_r, top_c, bottom_r, bottom_c, j):
    """Corners (r0, c0, ..., r3, c3) of quad ``j`` (unsigned) of a row's ``_row_corners``."""
    one = np.uint64(1)
    return (
        top_r[j], top_c[j], top_r[j + one], top_c[j + one],
        bottom_r[j + one], bottom_c[j + one], bottom_r[j], bottom_c[j],
    )  # fmt: skip


@njit(parallel=True, nogil=True, cache=True)
def _bounds(corners, height, width, bound, row_total):
    """The slots each target needs: the cells of its bounding box inside the frame,
    plus one for A_out if the box leaves the frame.

    ``bound[i * W + j + 1]`` receives the running sum of the slots of targets
    (i, 0) .. (i, j) (its row's share of the offsets) and ``row_total[i]`` the
    row's total; ``_add_row_bases`` turns them into the offsets. The count runs
    in floats, without branches, so that it vectorises.
    """
    fheight = float(height)
    fwidth = float(width)
    for i in prange(height):
        # int64 as in _fill: one compiled _row_corners (a prange index is uint64).
        top_r, top_c, bottom_r, bottom_c = _row_corners(corners, np.int64(i))
        slots = np.empty(width)
        for j in range(np.uint64(width)):
            r0, c0, r1, c1, r2, c2, r3, c3 = _row_quad(top_r, top_c, bottom_r, bottom_c, j)
            rmin, rmax, cmin, cmax = box(r0, c0, r1, c1, r2, c2, r3, c3)
            within = inside(rmin, rmax, cmin, cmax, fheight, fwidth)
            cells = cell_count(rmin, rmax, fheight) * cell_count(cmin, cmax, fwidth)
            slots[j] = cells + (0.0 if within else 1.0)
        run = 0
        base = i * width + 1
        for j in range(width):
            run += np.int64(slots[j])
            bound[base + j] = run
        row_total[i] = run


@njit(parallel=True, nogil=True, cache=True)
def _add_row_bases(bound, row_total, width):
    """Offsets from ``_bounds``' per-row running sums: add the slots of the rows above."""
    height = row_total.size
    base = np.empty(height, dtype=np.int64)
    run = 0
    for i in range(height):
        base[i] = run
        run += row_total[i]
    bound[0] = 0
    for i in prange(height):
        shift = base[i]
        for p in range(i * width + 1, (i + 1) * width + 1):
            bound[p] += shift


# Rows of ``_small_quads``' output.
_FAST, _ROW0, _COL0, _X0, _A00, _A01, _X1, _A10, _A11 = range(9)


@njit(cache=True)
def _small_quads(top_r, top_c, bottom_r, bottom_c, height, width, cells):
    """The exact areas of one row of quads whose bounding box is at most 2 x 2 cells,
    is inside the frame and which are strictly convex (``_FAST``): most quads of a
    smooth map near identity or zooming in. Written without branches and indexed
    with unsigned integers, so that the loop vectorises (8 quads per AVX-512
    instruction); ``_fill`` writes these quads' entries from ``cells`` and runs
    its general slab loop for the others (``core.quad.small_quad`` per quad, the same
    doubles as the slab loop).

    ``top_*``/``bottom_*`` [W + 1] are the rows and columns of the row's upper and
    lower corners; ``cells[:, j]`` = (fast, row0, col0, x0, a00, a01, x1, a10, a11),
    the slabs' first columns relative to col0 and their two cells' areas.
    """
    for j in range(np.uint64(width)):
        r0, c0, r1, c1, r2, c2, r3, c3 = _row_quad(top_r, top_c, bottom_r, bottom_c, j)
        fast, row0, col0, x, a00, a01, x1, a10, a11 = small_quad(r0, c0, r1, c1, r2, c2, r3, c3,
                                                                 height, width)  # fmt: skip
        cells[_FAST, j] = 1.0 if fast else 0.0
        cells[_ROW0, j] = row0
        cells[_COL0, j] = col0
        cells[_X0, j] = x
        cells[_A00, j] = a00
        cells[_A01, j] = a01
        cells[_X1, j] = x1
        cells[_A10, j] = a10
        cells[_A11, j] = a11


@njit(inline="always")
def _row_of(src, inv_width):
    """Source row of a flat source id: floor((q + 0.5) / W), exact for q < 2**31 and
    W < 2**16 (the product's error is far below the 0.5 / W margin), and no
    integer division in the hot loops."""
    return np.int64((src + 0.5) * inv_width)


# ``_count_rows`` counts a target row's entries in blocks of this many; a block of a
# smooth map spans fewer than ``_NEAR_ROWS`` source rows (a 1 degree rotation spreads
# a 1024-pixel row over 18 source rows, a block of 256 entries, 64 quads, over 2 or 3).
_COUNT_BLOCK = 256
_NEAR_ROWS = 4


@njit(cache=True)
def _count_scattered(ids, width, hist):
    """Add ``ids`` to ``hist`` by source row, one increment per entry (any span)."""
    inv_width = 1.0 / width
    for src in ids:
        if src >= 0:
            hist[_row_of(src, inv_width)] += 1


@njit(inline="always", cache=True)
def _count_block(ids, width, hist):
    """Add the source ids ``ids`` (negative: no source) to ``hist`` by source row;
    returns the lowest and highest row among them (lo > hi if none).

    Spans of up to ``_NEAR_ROWS`` rows are counted by comparing the ids with the
    rows' first ids (as unsigned numbers, so the negative markers compare above
    every row), in loops that vectorise (unsigned indices, 32-bit counters).
    Incrementing ``hist`` entry by entry would wait on the previous increment of
    the same row.
    """
    n = np.uint64(ids.size)
    none = np.int32(2**31 - 1)
    first = none
    last = np.int32(-1)
    for e in range(n):
        src = ids[e]
        first = min(first, src if src >= 0 else none)
        last = max(last, src)
    lo = np.int64(first) // width
    hi = np.int64(last) // width if last >= 0 else np.int64(-1)
    if hi - lo >= _NEAR_ROWS:
        _count_scattered(ids, width, hist)
    elif hi >= lo:
        bound1 = np.uint32((lo + 1) * width)
        bound2 = np.uint32((lo + 2) * width)
        bound3 = np.uint32((lo + 3) * width)
        below1 = np.uint32(0)
        below2 = np.uint32(0)
        below3 = np.uint32(0)
        valid = np.uint32(0)
        for e in range(n):
            key = np.uint32(ids[e])
            below1 += np.uint32(key < bound1)
            below2 += np.uint32(key < bound2)
            below3 += np.uint32(key < bound3)
            valid += np.uint32(key < np.uint32(2**31))
        hist[lo] += np.int64(below1)
        if hi > lo:
            hist[lo + 1] += np.int64(below2 - below1)
        if hi > lo + 1:
            hist[lo + 2] += np.int64(below3 - below2)
        if hi > lo + 2:
            hist[lo + 3] += np.int64(valid - below3)
    return lo, hi


@njit(cache=True)
def _count_rows(sources, e0, e1, width, height, hist):
    """Add the entries ``e0:e1`` (one target row's, still in cache) to ``hist`` by source
    row, block by block (``_count_block``); returns the lowest and highest source
    row among them, (H, -1) if none."""
    lo = height
    hi = -1
    for b0 in range(e0, e1, _COUNT_BLOCK):
        block_lo, block_hi = _count_block(sources[b0 : min(b0 + _COUNT_BLOCK, e1)], width, hist)
        if block_hi >= block_lo:
            lo = min(lo, block_lo)
            hi = max(hi, block_hi)
    return lo, hi


@njit(parallel=True, nogil=True, cache=True)
def _fill(corners, height, width, offsets, sources, areas, chunk_rows, counts, spans):
    """Write target p's entries into ``sources``/``areas`` [offsets[p], offsets[p+1]).

    A target whose box leaves the frame keeps A_out in its first slot, marked
    with source ``OUT_SLOT`` (negative, so the sort skips it); unused slots are -1.
    Quads within 2 x 2 cells take their areas from the vectorised ``_small_quads``,
    the others from the general slab loop (``core.quad.quad_entries``): the same numbers.

    Works in chunks of target rows (``chunk_rows[t]`` to ``chunk_rows[t + 1]``)
    and, while each row's entries are in cache, counts them for the sort by
    source row: ``counts[t]`` [H] is chunk t's histogram, ``spans[i]`` the lowest
    and highest source row of target row i's entries ((H, -1) if none).
    """
    for t in prange(chunk_rows.size - 1):
        hist = counts[t]
        hist[:] = 0
        cells = np.empty((9, width))
        for i in range(chunk_rows[t], chunk_rows[t + 1]):
            top_r, top_c, bottom_r, bottom_c = _row_corners(corners, i)
            _small_quads(top_r, top_c, bottom_r, bottom_c, height, width, cells)
            for j in range(width):
                p = i * width + j
                slot = offsets[p]
                if cells[_FAST, j] != 0.0:
                    slot = small_entries(sources, areas, slot, width, cells[_ROW0, j],
                                         cells[_COL0, j], cells[_X0, j], cells[_A00, j],
                                         cells[_A01, j], cells[_X1, j], cells[_A10, j],
                                         cells[_A11, j])  # fmt: skip
                else:
                    slot = quad_entries(corners, i, j, height, width, sources, areas, slot)
                for e in range(slot, offsets[p + 1]):
                    sources[e] = -1
                    areas[e] = 0.0
            lo, hi = _count_rows(sources, offsets[i * width], offsets[(i + 1) * width], width,
                                 height, hist)  # fmt: skip
            spans[i, 0] = lo
            spans[i, 1] = hi


@njit(parallel=True, nogil=True, cache=True)
def _row_place(sources, inv_width, entry_chunks, cursor, order):
    """Place chunk t's entries (``entry_chunks[t]`` to ``entry_chunks[t + 1]``, in order)
    at ``cursor[t]``'s positions for their source rows."""
    for t in prange(cursor.shape[0]):
        row = cursor[t]
        for e in range(entry_chunks[t], entry_chunks[t + 1]):
            if sources[e] >= 0:
                r = _row_of(sources[e], inv_width)
                order[row[r]] = e
                row[r] += 1


@njit(nogil=True, cache=True)
def _row_sort(sources, width, entry_chunks, counts, start, order):
    """Stable counting sort of the record's entries by source row, into ``start`` [H + 1]
    and ``order`` [entries]: the entries of source row i are
    ``order[start[i]:start[i + 1]]``, in entry order. ``counts`` [chunks, H] holds
    ``_fill``'s histograms of the entry ranges ``entry_chunks`` and is used up."""
    scan_offsets(counts, start)
    _row_place(sources, 1.0 / width, entry_chunks, counts, order[: start[-1]])


@njit(nogil=True, cache=True)
def _chunk_spans(spans, chunk_rows, height, rows):
    """``rows[t]`` = (lowest, highest) source row that the entries of chunk t (target rows
    ``chunk_rows[t]`` to ``chunk_rows[t + 1]``) touch, (H, -1) if none."""
    for t in range(rows.shape[0]):
        lo = height
        hi = -1
        for i in range(chunk_rows[t], chunk_rows[t + 1]):
            lo = min(lo, spans[i, 0])
            hi = max(hi, spans[i, 1])
        rows[t, 0] = lo
        rows[t, 1] = hi


@njit(nogil=True, cache=True)
def _row_owners(rows, owner):
    """``owner[i]`` = the first chunk that walks source row i, -1 if none does (no entries)."""
    owner[:] = -1
    for t in range(rows.shape[0]):
        for i in range(rows[t, 0], rows[t, 1] + 1):
            if owner[i] < 0:
                owner[i] = t


@njit(cache=True)
def _walk_row(i, noise, sources, areas, start, order, offset, gamma, row_span, e0, e1, inc,
              scaled, owned, row_stats, channels):  # fmt: skip
    """Walk the bridges of source row ``i``; keep the increments of entries in [e0, e1).

    Entries of a source come in entry order (the sort is stable). A source whose
    pieces cover it (S_q >= 1 - REST_EPS, or over-claimed and rescaled to 1)
    closes its bridge with its last piece: k - 1 normals per channel. Otherwise
    the unclaimed remainder is the bridge's last stretch and every piece draws:
    k normals. With t the time left (1 at the start), a piece of length a gets
    I = (a / t) resid + sqrt(a (t - a) / t) g, resid = x_q - (drawn so far).
    ``inc[e - e0]`` receives I and ``scaled[e - e0]`` the (rescaled) a_pq.

    Only the columns holding one of the chunk's entries are walked (a row shared
    with a neighbouring chunk is mostly the neighbour's), and only their normals
    are drawn: the counters of every source are fixed by the whole row's piece
    counts, so the values do not depend on which chunk walks them. The row's
    owner (``owned``) also writes its (over-claimed, unclaimed) counts to
    ``row_stats[i]``.
    """
    width = noise.shape[1]
    nc = len(channels)
    first = start[i]
    n = start[i + 1] - first
    col = np.empty(n, dtype=np.int64)
    claimed = np.zeros(width)
    count = np.zeros(width, dtype=np.int64)
    base = i * width
    jlo = width
    jhi = -1
    for t in range(n):
        e = order[first + t]
        j = sources[e] - base
        col[t] = j
        claimed[j] += areas[e]
        count[j] += 1
        if e >= e0 and e < e1:
            jlo = min(jlo, j)
            jhi = max(jhi, j)
    if owned:
        over = 0
        empty = 0
        for j in range(width):
            over += overclaimed(claimed[j])
            empty += count[j] == 0
        row_stats[i, 0] = over
        row_stats[i, 1] = empty
    if jhi < jlo:
        return
    scale = np.empty(width)
    cursor = np.empty(width + 1, dtype=np.int64)
    ndraw = 0
    for j in range(width):
        cursor[j] = ndraw
        scale[j] = 1.0
        closed = covered(claimed[j])
        if overclaimed(claimed[j]):
            scale[j] = 1.0 / claimed[j]
        if count[j] > 0:
            ndraw += (count[j] - 1 if closed else count[j]) * nc
        if not closed:
            count[j] += 1  # the remainder, never reached: no piece closes the bridge
    cursor[width] = ndraw
    # The normals of columns jlo..jhi only: counters cursor[jlo] .. cursor[jhi + 1].
    g0 = cursor[jlo]
    g = np.empty(cursor[jhi + 1] - g0, dtype=np.float32)
    fill_normals(offset, gamma, np.uint64(i) * row_span + np.uint64(g0), g)
    resid = np.empty((width, nc))
    for j in range(jlo, jhi + 1):
        for c in range(nc):
            resid[j, c] = noise[i, j, c]
    left = np.ones(width)
    for t in range(n):
        j = col[t]
        if j < jlo or j > jhi:
            continue
        e = order[first + t]
        a = areas[e] * scale[j]
        own = e >= e0 and e < e1
        count[j] -= 1
        if count[j] == 0:
            # The last piece closes the bridge: the increments sum to x_q.
            if own:
                for c in range(nc):
                    inc[e - e0, c] = resid[j, c]
        else:
            frac, sd, rest = bridge_split(a, left[j], 1.0)
            gbase = cursor[j] - g0
            for c in range(nc):
                step = frac * resid[j, c] + sd * g[gbase + c]
                resid[j, c] -= step
                if own:
                    inc[e - e0, c] = step
            cursor[j] += nc
            left[j] = rest
        if own:
            scaled[e - e0] = a


@njit(parallel=True, nogil=True, cache=True)
def _warp_chunks(noise, offsets, sources, areas, start, order, bridge_offset, bridge_gamma,
                 fresh_offset, fresh_gamma, chunk_pixels, rows, owner, inc_buf, scaled_buf, out,
                 cond_mean, cond_carried, target_stats, row_stats, channels):  # fmt: skip
    """Per chunk of target rows (targets ``chunk_pixels[t]`` to ``chunk_pixels[t + 1]``):
    walk every source row its quads touch, then gather.

    A chunk keeps the increments of its own entries only (a contiguous range of
    the target-major record) in its thread's work arrays (``inc_buf[thread]``,
    ``scaled_buf[thread]``), so these hold one chunk's increments, not the whole
    record's. A source row shared with another chunk is walked by both, each
    over the columns its own entries use, with the same counters in the same
    order and so the same values. ``target_stats[i]`` = (fresh pixels, min, sum,
    max A_p) of target row i, so that the frame's sums do not depend on the
    chunking; ``row_stats[i]`` = (over-claimed, unclaimed) sources of source row i,
    written by the row's owner (rows nobody walks have no entries: written here).

    Y_p = (sum_q I_pq + sqrt(A_out) xi_p) / sqrt(A_in + A_out); xi_p where A_in = 0.
    Unless they are empty, ``cond_mean`` [H*W, C] and ``cond_carried`` [H*W] receive
    E[Y_p | X] = sum_q a_pq x_q / sqrt(A_p) and sum_q a_pq^2 / A_p with the (rescaled)
    areas the bridges used.
    """
    height, width = noise.shape[0], noise.shape[1]
    nc = len(channels)
    nchunks = rows.shape[0]
    row_span = np.uint64(sources.size * nc)  # more than any source row draws
    wanted = cond_carried.size > 0
    source_flat = noise.reshape(-1, nc)
    for i in prange(height):
        if owner[i] < 0:
            row_stats[i, 0] = 0
            row_stats[i, 1] = width
    for t in prange(nchunks):
        p0 = chunk_pixels[t]
        p1 = chunk_pixels[t + 1]
        e0 = offsets[p0]
        e1 = offsets[p1]
        thread = numba.get_thread_id()
        inc = inc_buf[thread]
        scaled = scaled_buf[thread]
        for i in range(rows[t, 0], rows[t, 1] + 1):
            _walk_row(i, noise, sources, areas, start, order, bridge_offset, bridge_gamma,
                      row_span, e0, e1, inc, scaled, owner[i] == t, row_stats,
                      channels)  # fmt: skip
        acc = np.empty(nc)
        g = np.empty(nc)
        flat = out.reshape(-1, nc)
        for i in range(p0 // width, p1 // width):  # chunks hold whole target rows
            stats = target_stats[i]
            stats[0] = 0.0
            stats[1] = np.inf
            stats[2] = 0.0
            stats[3] = 0.0
            for p in range(i * width, (i + 1) * width):
                area_in, outside = gather_target(p, offsets, sources, areas, scaled, inc, e0,
                                                 acc, nc)  # fmt: skip
                total = area_in + outside
                fresh_base = np.uint64(p) * np.uint64(nc)
                if area_in > 0.0:
                    if outside > 0.0:
                        root = math.sqrt(outside)
                        fill_normals(fresh_offset, fresh_gamma, fresh_base, g)
                        for c in range(nc):
                            acc[c] += root * g[c]
                    inv = 1.0 / math.sqrt(total)
                    for c in range(nc):
                        flat[p, c] = acc[c] * inv
                    if wanted:
                        conditional_target(p, offsets, sources, scaled, e0, source_flat, inv,
                                            cond_mean, cond_carried, acc)  # fmt: skip
                else:
                    stats[0] += 1.0
                    fill_normals(fresh_offset, fresh_gamma, fresh_base, flat[p])
                    if wanted:
                        cond_mean[p] = 0.0
                        cond_carried[p] = 0.0
                stats[1] = min(stats[1], total)
                stats[2] += total
                stats[3] = max(stats[3], total)


def _check_corners(corners: np.ndarray, height: int, width: int) -> np.ndarray:
    if corners.shape != (height + 1, width + 1, 2):
        raise ValueError(
            f"corner map must have shape {(height + 1, width + 1, 2)} for a {height} x {width} "
            f"frame, got {corners.shape}"
        )
    return np.ascontiguousarray(corners, dtype=np.float64)


class _Record(NamedTuple):
    """The target-major partition record and what ``_fill`` counted for the sort."""

    offsets: np.ndarray  # int32 [H*W + 1]: target p's entries are offsets[p]:offsets[p + 1]
    sources: np.ndarray  # int32 [E]: source id, -1 unused, OUT_SLOT for A_out
    areas: np.ndarray  # float64 [E]
    chunk_rows: np.ndarray  # int64 [chunks + 1]: target rows of the fill chunks
    counts: np.ndarray  # int64 [chunks, H]: entries of each chunk per source row
    spans: np.ndarray  # int64 [H, 2]: lowest, highest source row of each target row


def _partition(corners: np.ndarray, height: int, width: int, chunks: int, buffer=None):
    """Steps 1-2: the target-major record (``_Record``), built in ``chunks`` chunks of
    target rows.

    ``buffer(name, size, dtype)`` supplies the arrays (``noisewarp.cpu.workspace.grow``
    in the warp, fresh arrays by default).
    """
    if buffer is None:
        buffer = _fresh
    check_sizes(height, width)
    # int32 offsets: the record is indexed by int32 anyway (the sort's order).
    offsets = buffer("offsets", height * width + 1, np.int32)
    row_total = buffer("row_total", height, np.int64)
    _bounds(corners, height, width, offsets, row_total)
    entries = int(row_total.sum())
    check_sizes(height, width, entries)
    _add_row_bases(offsets, row_total, width)  # no overflow: the total fits in int32
    sources = buffer("sources", entries, np.int32)
    areas = buffer("areas", entries, np.float64)
    chunk_rows = np.arange(chunks + 1) * height // chunks
    counts = buffer("counts", chunks * height, np.int64).reshape(chunks, height)
    spans = buffer("spans", 2 * height, np.int64).reshape(height, 2)
    _fill(corners, height, width, offsets, sources, areas, chunk_rows, counts, spans)
    return _Record(offsets, sources, areas, chunk_rows, counts, spans)


def _fresh(name: str, size: int, dtype) -> np.ndarray:
    return np.empty(size, dtype=dtype)


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
    chunks = min(height, CHUNKS_PER_THREAD * numba.get_num_threads())
    offsets, sources, areas = _partition(corners, height, width, chunks)[:3]
    targets = np.repeat(np.arange(height * width, dtype=np.int64), np.diff(offsets))
    area_out = np.zeros(height * width)
    out_slots = sources == OUT_SLOT
    area_out[targets[out_slots]] = areas[out_slots]
    valid = sources >= 0
    return targets[valid], sources[valid].astype(np.int64), areas[valid], area_out


def grid_warp(noise, corners, bridge_stream, fresh_stream, nchunks, conditional=False):
    """Warp one frame. ``noise`` float32 [H, W, C], ``corners`` float64 [H+1, W+1, 2].

    The streams are ``(offset, gamma)`` pairs (``Key.stream``) for the bridge
    normals (counter: source row, then position in that row's draws) and the
    fresh out-of-frame noise (target, channel); the unclaimed remainder is the
    bridge's undrawn last stretch, so it needs no stream. ``nchunks`` splits
    the work (the result does not depend on it). Returns ``(out, stats)``: ``out``
    float32 [H, W, C] and a dict of diagnostics, the common keys plus ``entries``
    (size of the partition record). With ``conditional=True`` it returns
    ``(out, stats, Conditional)``: E[Y | X] of this warp's own exact areas.

    The record and the work arrays are kept between frames (``workspace.grow``):
    a video's frames reuse them instead of faulting in fresh pages every frame.
    """
    height, width, channels = noise.shape
    corners = _check_corners(corners, height, width)
    nchunks = max(1, nchunks)
    threads = numba.get_num_threads()  # numba.get_thread_id() is below this in prange

    def buffer(name, size, dtype):
        return grow("grid", name, size, dtype)

    # Chunks of target rows: more than threads to balance uneven maps; in the walk,
    # each chunk re-walks the parts of the source rows it shares with its neighbours.
    chunks = min(height, CHUNKS_PER_THREAD * nchunks)
    record = _partition(corners, height, width, chunks, buffer)
    offsets, sources, areas = record.offsets, record.sources, record.areas
    chunk_pixels = record.chunk_rows * width
    entry_chunks = offsets[chunk_pixels]
    start = buffer("start", height + 1, np.int64)
    order = buffer("order", sources.size, np.int32)
    _row_sort(sources, width, entry_chunks, record.counts, start, order)
    rows = np.empty((chunks, 2), dtype=np.int64)
    _chunk_spans(record.spans, record.chunk_rows, height, rows)
    owner = buffer("owner", height, np.int64)
    _row_owners(rows, owner)
    longest = int(np.diff(entry_chunks).max())
    inc = buffer("inc", threads * longest * channels, np.float32).reshape(
        threads, longest, channels
    )
    scaled = buffer("scaled", threads * longest, np.float64).reshape(threads, longest)
    row_stats = buffer("row_stats", 2 * height, np.int64).reshape(height, 2)
    out = np.empty_like(noise, dtype=np.float32)
    target_stats = np.empty((height, 4), dtype=np.float64)
    cond = conditional_buffers(height * width, channels, conditional)
    _warp_chunks(noise, offsets, sources, areas, start, order, *bridge_stream, *fresh_stream,
                 chunk_pixels, rows, owner, inc, scaled, out, *cond, target_stats, row_stats,
                 (0,) * channels)  # fmt: skip
    stats = {
        **target_summary(target_stats, height * width),
        "overclaimed_sources": int(row_stats[:, 0].sum()),
        "unclaimed_sources": int(row_stats[:, 1].sum()),
        "entries": int(start[-1]),
    }
    if conditional:
        return out, stats, cond.frame(height, width)
    return out, stats
