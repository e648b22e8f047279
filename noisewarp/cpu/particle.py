"""Particle-based integral noise warping on the CPU (Deng et al. 2025, Algorithm 3).

Every target pixel p is a particle at T(p). With u = T(p) - (0.5, 0.5), its four
grid neighbours floor(u) + {0, 1}^2 receive bilinear weights w_pq (in the frame
and > 0 only). Each source q normalises the weights of the particles that
request it, a_pq = w_pq / W_q with W_q = sum_p w_pq, and splits its noise x_q
into the increments I_pq of one Brownian bridge from 0 to x_q over consecutive
intervals of lengths a_pq (docs/methods.md). A target sums its increments and
divides by sqrt(A_p), A_p = sum_q a_pq; a target with no neighbour in the frame
gets fresh noise.

Driver (every pass parallel over rows, no atomics, no Python loop over pixels):

1. ``_bin_rows`` (per target): the row of its cell floor(u), as a bucket key;
   fresh noise for a particle with no neighbour in the frame.
2. ``counting_sort_into`` of the targets by that row. The requesters of source
   row i are exactly the targets in cell rows i - 1 and i, so two contiguous
   runs of the sorted order hold every piece of the row.
3. ``_warp_rows`` (per chunk of source rows, in order):
   Each bucket's cells (column of floor(u), fractional offsets) are decoded
   once, into compact arrays read in order by the four sweeps that use them.
   ``_claim_row`` sweeps those runs twice: the first sums W_q and counts the
   pieces of each source, the second meets the pieces again in the same order
   and walks the bridges piece by piece (nothing is stored in between; the
   weights are recomputed), the last increment of each source closing it
   exactly: given the part b drawn so far and the weight R still to hand out
   (this piece's w included), I = (w / R)(x_q - b) + sqrt(w (R - w) / (W_q R)) g.
   A source of k pieces needs k - 1 normals per channel, all of a row's drawn
   in one block. Each increment and a_pq go to the slot (target, k) of a
   bucket-local array, and ``_finish_bucket`` sums the slots of bucket i as
   soon as row i is done (its targets need only rows i - 1 and i), while they
   are still in cache.

Every sum runs in a fixed order, so the result is bit-identical for any number
of threads or chunks. A source with one piece passes x_q on whole, so an
integer translation reproduces the input bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from noisewarp.core.bridge import NEIGHBOURS, bilinear_weight, bridge_split, particle_in_reach
from noisewarp.core.particle import EVERY_NEIGHBOUR, conditional_target
from noisewarp.core.rng import fill_normals
from noisewarp.cpu.diagnostics import SUMS, ConditionalSums, conditional_buffers, target_summary
from noisewarp.cpu.sort import counting_sort_into
from noisewarp.cpu.workspace import workspace

__all__ = ["particle_warp", "particle_record"]


@njit(cache=True)
def _cells(points, order, lo, hi):
    """The cells of the particles ``order[lo:hi]`` (one bucket), in that order:
    the column of floor(u) and the fractional offsets (fr, fc).

    A bucket is swept four times (two rows, two sweeps each): reading these
    compact arrays in order is faster than gathering ``points[order[e]]`` each time.
    """
    col = np.empty(hi - lo, dtype=np.int64)
    frac = np.empty((hi - lo, 2))
    for e in range(lo, hi):
        p = order[e]
        ur = points[p, 0] - 0.5
        uc = points[p, 1] - 0.5
        fj = math.floor(uc)
        col[e - lo] = np.int64(fj)
        frac[e - lo, 0] = ur - math.floor(ur)
        frac[e - lo, 1] = uc - fj
    return col, frac


@njit(parallel=True, nogil=True, cache=True)
def _bin_rows(tmap, key, offset, gamma, out, cond_mean, cond_carried, row_stats):
    """Per target: floor(ur) + 1, the bucket of its cell row, or -1 and fresh noise
    from counter (p, c) for a particle with no neighbour in the frame (E[Y | X] = 0
    there, unless ``cond_carried`` is empty).

    ``row_stats[i]`` receives (fresh pixels, min A_p, sum A_p, max A_p) over those
    targets of row i (A_p = 0; min is +inf when there are none).
    """
    height, width = tmap.shape[0], tmap.shape[1]
    channels = out.shape[2]
    for i in prange(height):
        fresh = 0
        for j in range(width):
            p = i * width + j
            ur = tmap[i, j, 0] - 0.5
            uc = tmap[i, j, 1] - 0.5
            if particle_in_reach(ur, uc, height, width):
                key[p] = np.int32(math.floor(ur)) + 1
            else:
                key[p] = -1
                fresh += 1
                fill_normals(offset, gamma, np.uint64(p * channels), out[i, j])
                if cond_carried.size:
                    cond_mean[p] = 0.0
                    cond_carried[p] = 0.0
        row_stats[i, 0] = fresh
        row_stats[i, 1] = 0.0 if fresh else np.inf
        row_stats[i, 2] = 0.0
        row_stats[i, 3] = 0.0


@njit(inline="always")
def _bucket(i, di, start, upper, lower, upper_col, upper_frac, lower_col, lower_frac):
    """The requesters of source row ``i`` in bucket i + 1 (``di`` = 0) or i (1):
    their range of the sorted order, the bucket's slots and its cells. Both
    sweeps of ``_claim_row`` take them from here, so they meet pieces in the
    same order."""
    first = start[i + 1 - di]
    stop = start[i + 2 - di]
    if di:
        return first, stop, lower, lower_col, lower_frac
    return first, stop, upper, upper_col, upper_frac


@njit(cache=True)
def _claim_row(i, noise, start, offset, gamma, upper, lower, upper_col, upper_frac, lower_col,
               lower_frac, channels):  # fmt: skip
    """The increments of every piece of source row ``i``, into the slots of its targets.

    ``upper`` holds bucket i + 1 (targets in cell row i, neighbours k = 0, 1) and
    ``lower`` bucket i (cell row i - 1, k = 2, 3): row ``e - start[b]`` of a
    bucket's array, column block k, receives (I_pq for each channel, a_pq).
    ``upper_col``, ``upper_frac`` and ``lower_col``, ``lower_frac`` are the
    buckets' ``_cells``.
    Pieces are met in bucket order (upper, then lower; targets in index order;
    neighbours k in order), and each source walks its bridge in that order.
    ``channels`` is a tuple of length C: its length is a compile-time constant,
    so the loops over channels unroll. Returns the number of the row's sources
    that no particle requests.
    """
    height, width = noise.shape[0], noise.shape[1]
    nc = len(channels)
    stride = nc + 1
    # Sweep 1: W_q and the number of pieces of each source. A neighbour that is
    # no piece (zero weight, outside the frame) gets a zero slot here, so the
    # bucket arrays need no zero fill.
    total = np.zeros(width)
    count = np.zeros(width, dtype=np.int64)
    for di in range(2):
        first, stop, dest, cols, fracs = _bucket(i, di, start, upper, lower, upper_col,
                                                 upper_frac, lower_col, lower_frac)  # fmt: skip
        for e in range(first, stop):
            cj = cols[e - first]
            fr = fracs[e - first, 0]
            fc = fracs[e - first, 1]
            for dj in range(2):
                j = cj + dj
                k = 2 * di + dj
                w = bilinear_weight(fr, fc, k)
                if w > 0.0 and j >= 0 and j < width:
                    total[j] += w
                    count[j] += 1
                else:
                    for c in range(stride):
                        dest[e - first, k * stride + c] = 0.0
    # k - 1 normals per channel for a source of k pieces, in one block, from
    # counters i * 2 H W C + n (a row has at most 2 H W pieces).
    cursor = np.empty(width, dtype=np.int64)
    ndraw = 0
    unclaimed = 0
    for j in range(width):
        cursor[j] = ndraw
        unclaimed += count[j] == 0
        if count[j] > 1:
            ndraw += (count[j] - 1) * nc
    g = np.empty(ndraw, dtype=np.float32)
    fill_normals(offset, gamma, np.uint64(i) * np.uint64(2 * height * width * nc), g)
    # Sweep 2, in the same order: each source's bridge, resid = x_q - (drawn so
    # far), remaining = R; ``count`` now counts the pieces still to come.
    resid = np.empty((width, nc))
    for j in range(width):
        for c in range(nc):
            resid[j, c] = noise[i, j, c]
    remaining = total.copy()
    inv_total = np.empty(width)
    for j in range(width):
        inv_total[j] = 1.0 / total[j] if count[j] > 0 else 0.0
    for di in range(2):
        first, stop, dest, cols, fracs = _bucket(i, di, start, upper, lower, upper_col,
                                                 upper_frac, lower_col, lower_frac)  # fmt: skip
        for e in range(first, stop):
            row = e - first
            cj = cols[row]
            fr = fracs[row, 0]
            fc = fracs[row, 1]
            for dj in range(2):
                j = cj + dj
                k = 2 * di + dj
                w = bilinear_weight(fr, fc, k)
                if not (w > 0.0 and j >= 0 and j < width):
                    continue
                base = k * stride
                count[j] -= 1
                if count[j] == 0:
                    # The last piece closes the bridge: the increments sum to x_q.
                    # A source's only piece is x_q itself, with a_pq = 1 exactly.
                    dest[row, base + nc] = 1.0 if w == total[j] else w * inv_total[j]
                    for c in range(nc):
                        dest[row, base + c] = resid[j, c]
                else:
                    dest[row, base + nc] = w * inv_total[j]
                    frac, sd, left = bridge_split(w, remaining[j], inv_total[j])
                    gbase = cursor[j]
                    for c in range(nc):
                        inc = frac * resid[j, c] + sd * g[gbase + c]
                        resid[j, c] -= inc
                        dest[row, base + c] = inc
                    cursor[j] = gbase + nc
                    remaining[j] = left
    return unclaimed


@njit(inline="always")
def _four_channel_mean(cell_row, cell_col, slots, local, noise):
    """``core.particle.conditional_target`` for C = 4 before its 1 / sqrt(A_p): the sums
    sum_q a_pq x_q per channel and sum_q a_pq^2, in the same order."""
    g0 = g1 = g2 = g3 = square = 0.0
    for k in range(NEIGHBOURS):
        area = np.float64(slots[local, k * 5 + 4])
        if area > 0.0:
            row = cell_row + (k >> 1)
            col = cell_col + (k & 1)
            square += area * area
            g0 += area * noise[row, col, 0]
            g1 += area * noise[row, col, 1]
            g2 += area * noise[row, col, 2]
            g3 += area * noise[row, col, 3]
    return g0, g1, g2, g3, square


@njit(inline="always")
def _add_mean(totals, mean, value):
    """(sum m, sum m^2, sum y m) with one more channel's m = E[Y | X] and y = Y."""
    return totals[0] + mean, totals[1] + mean * mean, totals[2] + np.float64(value) * mean


@njit(cache=True)
def _finish_bucket(b, start, order, slots, cell_cols, noise, offset, gamma, out, cond_mean,
                   cond_carried, sums, stats, channels):  # fmt: skip
    """Y_p = sum_q I_pq / sqrt(A_p) for the targets of bucket ``b`` (fresh noise
    from counter (p, c) where A_p = 0). ``out`` is the output as [H*W, C];
    ``stats`` receives the bucket's (fresh, min, sum, max A_p). Unless they are empty,
    ``cond_mean`` [H*W, C] and ``cond_carried`` [H*W] receive E[Y_p | X] =
    sum_q a_pq x_q / sqrt(A_p) and sum_q a_pq^2 / A_p, from the same slots: the
    sources are the neighbours of the target's cell (row b - 1, column ``cell_cols``
    in bucket order, from ``_cells``) in ``noise`` (``core.particle.conditional_target``,
    the GPU's own; a zero slot is no piece).
    Else, unless it is empty, ``sums`` receives the bucket's ``ConditionalSums`` terms
    (fresh targets add nothing: their E[Y | X] is 0)."""
    nc = len(channels)
    stride = nc + 1
    wanted = cond_carried.size > 0
    summed = not wanted and sums.size > 0
    # The sums in locals (scalars stay in registers; array elements would not).
    sum_mean = sum_mean_sq = sum_cross = sum_carried = 0.0
    target_mean = np.empty((1, nc))
    target_carried = np.empty(1)
    fresh = 0.0
    area_min = np.inf
    area_sum = 0.0
    area_max = 0.0
    acc = np.empty(nc)
    first = start[b]
    for e in range(first, start[b + 1]):
        p = order[e]
        local = e - first
        area = 0.0
        for c in range(nc):
            acc[c] = 0.0
        for k in range(NEIGHBOURS):
            base = k * stride
            area += slots[local, base + nc]
            for c in range(nc):
                acc[c] += slots[local, base + c]
        if area > 0.0:
            inv = 1.0 / math.sqrt(area)
            for c in range(nc):
                out[p, c] = acc[c] * inv
            if wanted:
                conditional_target(p, b - 1, cell_cols[local], EVERY_NEIGHBOUR, slots, local,
                                   noise, inv, cond_mean, cond_carried, acc, nc)  # fmt: skip
            elif summed and nc == 4:
                # Four channels (latent noise): the target's E[Y | X] in scalars, summed in
                # the general path's order (registers instead of a scratch row).
                g0, g1, g2, g3, square = _four_channel_mean(b - 1, cell_cols[local], slots,
                                                            local, noise)  # fmt: skip
                totals = (sum_mean, sum_mean_sq, sum_cross)
                totals = _add_mean(totals, g0 * inv, out[p, 0])
                totals = _add_mean(totals, g1 * inv, out[p, 1])
                totals = _add_mean(totals, g2 * inv, out[p, 2])
                sum_mean, sum_mean_sq, sum_cross = _add_mean(totals, g3 * inv, out[p, 3])
                sum_carried += square * inv * inv
            elif summed:
                conditional_target(0, b - 1, cell_cols[local], EVERY_NEIGHBOUR, slots, local,
                                   noise, inv, target_mean, target_carried, acc, nc)  # fmt: skip
                for c in range(nc):
                    m = target_mean[0, c]
                    sum_mean += m
                    sum_mean_sq += m * m
                    sum_cross += np.float64(out[p, c]) * m
                sum_carried += target_carried[0]
        else:
            fresh += 1.0
            fill_normals(offset, gamma, np.uint64(p * nc), out[p])
            if wanted:
                cond_mean[p] = 0.0
                cond_carried[p] = 0.0
        area_min = min(area_min, area)
        area_sum += area
        area_max = max(area_max, area)
    stats[0] = fresh
    stats[1] = area_min
    stats[2] = area_sum
    stats[3] = area_max
    if summed:
        sums[0] = sum_mean
        sums[1] = sum_mean_sq
        sums[2] = sum_cross
        sums[3] = sum_carried


@njit(parallel=True, nogil=True, cache=True)
def _warp_rows(noise, points, start, order, bridge_offset, bridge_gamma, fresh_offset,
               fresh_gamma, out, cond_mean, cond_carried, cond_sums, bucket_stats,
               chunk_unclaimed, ctuple):  # fmt: skip
    """Passes 3 and 4 fused, per chunk of source rows.

    Bucket b (cell row b - 1) is complete once source rows b - 1 and b are done,
    so a chunk walks its rows in order and finishes bucket i right after row i,
    while its slots are still in cache. A chunk starting at r0 > 0 first redoes
    row r0 - 1 (owned by the previous chunk) for the pieces it hands bucket r0:
    the same counters and order give the same values, so chunks never exchange
    data. ``bucket_stats[b]`` = (fresh, min, sum, max A_p) of bucket b (per bucket,
    not per chunk, so that the frame's sums do not depend on the chunking);
    ``chunk_unclaimed[t]`` (zero on entry) gains the sources of its rows that
    no particle requests; ``ctuple`` is ``(0,) * C`` (see ``_claim_row``);
    ``cond_mean`` and ``cond_carried`` (a ``Conditional``'s flat arrays, empty if not
    asked) receive E[Y | X]. They are separate arguments: a NamedTuple of arrays
    passed into a prange loop loses its writes in numba 0.68. Else ``cond_sums[b]``
    ([H + 1, SUMS], or [H + 1, 0] if not asked) receives bucket b's ConditionalSums terms.
    """
    height, width, channels = noise.shape
    stride = channels + 1
    nchunks = chunk_unclaimed.shape[0]
    flat = out.reshape(-1, channels)
    for t in prange(nchunks):
        r0 = t * height // nchunks
        r1 = (t + 1) * height // nchunks
        first = max(r0 - 1, 0)
        # Slots are written by the two rows that share them, except k = 0, 1 of
        # bucket 0 and k = 2, 3 of bucket H (rows -1 and H do not exist).
        shape = (start[first + 1] - start[first], NEIGHBOURS * stride)
        if first == 0:
            lower = np.zeros(shape, dtype=np.float32)
        else:
            lower = np.empty(shape, dtype=np.float32)  # row r0 - 1 is redone, not finished
        lower_col, lower_frac = _cells(points, order, start[first], start[first + 1])
        for i in range(first, r1):
            shape = (start[i + 2] - start[i + 1], NEIGHBOURS * stride)
            if i + 1 == height:
                upper = np.zeros(shape, dtype=np.float32)
            else:
                upper = np.empty(shape, dtype=np.float32)
            upper_col, upper_frac = _cells(points, order, start[i + 1], start[i + 2])
            own = i >= r0
            unclaimed = _claim_row(i, noise, start, bridge_offset, bridge_gamma, upper, lower,
                                   upper_col, upper_frac, lower_col, lower_frac,
                                   ctuple)  # fmt: skip
            if own:
                chunk_unclaimed[t] += unclaimed
                _finish_bucket(i, start, order, lower, lower_col, noise, fresh_offset,
                               fresh_gamma, flat, cond_mean, cond_carried, cond_sums[i],
                               bucket_stats[i], ctuple)  # fmt: skip
                if i == height - 1:
                    _finish_bucket(height, start, order, upper, upper_col, noise, fresh_offset,
                                   fresh_gamma, flat, cond_mean, cond_carried,
                                   cond_sums[height], bucket_stats[height],
                                   ctuple)  # fmt: skip
            lower = upper
            lower_col = upper_col
            lower_frac = upper_frac


def _buffers(height, width, channels, nchunks):
    npix = height * width
    return {
        "key": np.empty(npix, dtype=np.int32),
        "counts": np.empty((nchunks, height + 1), dtype=np.int64),
        "start": np.empty(height + 2, dtype=np.int64),
        "order": np.empty(npix, dtype=np.int32),
        "row_stats": np.empty((height, 4), dtype=np.float64),
    }


# Chunks of source rows per thread in the fused pass: each chunk redoes one row
# of its neighbour's, and more chunks balance uneven maps.
_CHUNKS_PER_THREAD = 4


def particle_warp(noise, tmap, bridge_stream, fresh_stream, nchunks, conditional=False):
    """Warp one frame. ``noise`` float32 [H, W, C], ``tmap`` float64 [H, W, 2].

    ``bridge_stream`` and ``fresh_stream`` are ``(offset, gamma)`` pairs from
    ``Key.stream``. Inputs must already be validated and C-contiguous. ``nchunks``
    splits the work (the result does not depend on it). Returns ``(out, stats)``:
    float32 [H, W, C] and a dict of diagnostics; with ``conditional`` true (or a
    ``Conditional`` of flat buffers to fill), ``(out, stats, Conditional)`` with
    E[Y | X] of this warp's own areas; with ``conditional="sums"``, ``(out, stats,
    ConditionalSums)`` from the same areas, without the arrays.
    """
    height, width, channels = noise.shape
    buf = workspace(
        "particle",
        (height, width, channels, nchunks),
        lambda: _buffers(height, width, channels, nchunks),
    )
    out = np.empty((height, width, channels), dtype=np.float32)
    summed = isinstance(conditional, str) and conditional == "sums"
    cond = conditional_buffers(height * width, channels, False if summed else conditional)
    cond_sums = np.empty((height + 1, SUMS if summed else 0))
    _bin_rows(tmap, buf["key"], *fresh_stream, out, *cond, buf["row_stats"])
    counting_sort_into(buf["key"], buf["counts"], buf["start"], buf["order"])
    chunks = min(height, _CHUNKS_PER_THREAD * nchunks)
    bucket_stats = np.empty((height + 1, 4))
    chunk_unclaimed = np.zeros(chunks, dtype=np.int64)
    _warp_rows(noise, tmap.reshape(-1, 2), buf["start"], buf["order"], *bridge_stream,
               *fresh_stream, out, *cond, cond_sums, bucket_stats, chunk_unclaimed,
               (0,) * channels)  # fmt: skip
    stats = {
        **target_summary(np.concatenate([buf["row_stats"], bucket_stats]), height * width),
        "overclaimed_sources": 0,
        "unclaimed_sources": int(chunk_unclaimed.sum()),
    }
    if summed:
        return out, stats, ConditionalSums.from_rows(cond_sums)
    if conditional:
        return out, stats, cond.frame(height, width)
    return out, stats


def _weight_np(fr, fc, k):
    """``bilinear_weight`` on arrays (same arithmetic, so the same doubles)."""
    wr = fr if (k >> 1) else 1.0 - fr
    wc = fc if (k & 1) else 1.0 - fc
    return wr * wc


def particle_record(tmap: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The partition record of the particle method: ``(target, source, area)``.

    Flat pixel indices and a_pq = w_pq / W_q for every piece, with the kernel's
    weights and tests (W_q may differ from the kernel's in the last bits: numpy
    sums in another order). For analysis and tests; ``tmap`` is a validated
    float64 [H, W, 2] map.
    """
    height, width = tmap.shape[:2]
    u = np.ascontiguousarray(tmap, dtype=np.float64).reshape(-1, 2) - 0.5
    reach = (u[:, 0] >= -1.0) & (u[:, 0] < height) & (u[:, 1] >= -1.0) & (u[:, 1] < width)
    u = np.where(reach[:, None], u, 0.0)
    corner = np.floor(u)
    frac = u - corner
    weights = np.stack([_weight_np(frac[:, 0], frac[:, 1], k) for k in range(NEIGHBOURS)], axis=1)
    rows = corner[:, :1].astype(np.int64) + np.array([0, 0, 1, 1])
    cols = corner[:, 1:].astype(np.int64) + np.array([0, 1, 0, 1])
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    target, slot = np.nonzero((weights > 0.0) & inside & reach[:, None])
    source = rows[target, slot] * width + cols[target, slot]
    w = weights[target, slot]
    total = np.bincount(source, weights=w, minlength=height * width)
    return target.astype(np.int64), source, w / total[source]
