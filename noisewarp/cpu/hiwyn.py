"""HIWYN noise warping on the CPU (Chang et al., "How I Warped Your Noise", ICLR 2024).

The baseline that integral warping makes unnecessary, implemented honestly so
that speed and memory comparisons mean something:

1. Conditional upsampling (``_upsample``): every source pixel q becomes N x N
   sub-pixels s = x_q / N + (z - mean(z)), z ~ N(0, I_{N^2}) drawn from counter
   (q, channel, sub-pixel), so each s ~ N(0, 1) and sum(s) / N = x_q. The field
   is materialised, float32 [H*N, W*N, C], as the original does (once here,
   where tensor implementations hold several field-sized temporaries); its
   memory and the work to fill it grow as N^2.
2. Rasterisation (``_rasterise``, per target): K_p is the set of sub-pixels whose
   centres lie inside the target's quadrilateral R_p (the same quad as grid, from
   the mapped pixel corners). Each sub-pixel row is scan-converted: the quad's
   edges crossing the row's centre line, sorted, give spans by the even-odd rule
   (a point inside either lobe of a folded "bow tie" counts once). Crossings are
   interpolated from each edge's lower end, so quads that share an edge agree on
   its crossings bit for bit and split the sub-pixels between them without gaps
   or double counting. Sub-pixels outside the frame are fresh N(0, 1), a pure
   function of their sub-pixel coordinates. A quad entirely outside the frame
   draws one fresh N(0, 1) for the target (the law of a normalised sum of fresh
   sub-pixels) and reports |K_p| = 0, instead of drawing |K_p| of them.
3. Y_p = sum_{K_p} s / sqrt(|K_p|); where K_p is empty, the sub-pixel containing
   T(p) (the centre map).

As N grows, |K_p ∩ q| / N^2 -> a_pq and the conditional mean E[Y | X] converges
to grid's (Deng et al. 2025, the equivalence result).
"""

from __future__ import annotations

import math
import os

import numpy as np
from numba import njit, prange

from noisewarp.core.quad import box, quad_corners
from noisewarp.core.raster import (
    centre_subpixel,
    column,
    crossing,
    outside_counter,
    scale_target,
    sort4,
    target_counter,
)
from noisewarp.core.rng import fill_normals, normal
from noisewarp.cpu.diagnostics import conditional_buffers
from noisewarp.cpu.workspace import workspace

__all__ = ["hiwyn_warp", "hiwyn_conditional_mean"]


@njit(parallel=True, nogil=True, cache=True)
def _upsample(noise, n, offset, gamma, field):
    """field[i*n + a, j*n + b, c] = x[i, j, c] / n + z_abc - mean(z), z from counter (q, c, k)."""
    height, width, channels = noise.shape
    nsub = n * n
    inv_n = 1.0 / n
    inv_nsub = 1.0 / nsub
    for i in prange(height):
        # A source's C * n^2 counters are consecutive: one fill per source.
        draws = np.empty(channels * nsub)
        for j in range(width):
            q = i * width + j
            fill_normals(offset, gamma, np.uint64(q * channels * nsub), draws)
            for c in range(channels):
                z = draws[c * nsub : (c + 1) * nsub]
                total = 0.0
                for k in range(nsub):
                    total += z[k]
                shift = noise[i, j, c] * inv_n - total * inv_nsub
                for a in range(n):
                    row = field[i * n + a]
                    for b in range(n):
                        row[j * n + b, c] = z[a * n + b] + shift


@njit(inline="always", cache=True)
def _outside(sub_row, sub_col, channel, offset, gamma):
    """Fresh N(0, 1) for a sub-pixel outside the frame (any integer coordinates)."""
    return normal(offset, gamma, outside_counter(sub_row, sub_col, channel))


@njit(cache=True)
def _fresh_target(p, channel, offset, gamma):
    """Fresh N(0, 1) for a whole target."""
    return normal(offset, gamma, target_counter(p, channel))


@njit(cache=True)
def _add_span(field, sub_row, k_lo, k_hi, acc, offset, gamma):
    """Add sub-pixels [k_lo, k_hi) of ``sub_row`` to ``acc`` (fresh ones outside the frame).

    Returns (sub-pixels added, how many of them were in the frame).
    """
    channels = acc.size
    if k_hi <= k_lo:
        return 0, 0
    in_lo = k_lo
    in_hi = k_lo
    if sub_row >= 0 and sub_row < field.shape[0]:
        in_lo = min(max(k_lo, 0), field.shape[1])
        in_hi = max(min(k_hi, field.shape[1]), in_lo)
        row = field[sub_row]
        for k in range(in_lo, in_hi):
            for c in range(channels):
                acc[c] += row[k, c]
    for k in range(k_lo, in_lo):
        for c in range(channels):
            acc[c] += _outside(sub_row, k, c, offset, gamma)
    for k in range(in_hi, k_hi):
        for c in range(channels):
            acc[c] += _outside(sub_row, k, c, offset, gamma)
    return k_hi - k_lo, in_hi - in_lo


@njit(cache=True)
def _span_sources(noise, n, sub_row, k_lo, k_hi, n_cols, mean, column_count):
    """Add the in-frame sub-pixels [k_lo, k_hi) of ``sub_row`` to E[Y | X]: each
    contributes x_q / n of its source q (``mean``, per channel) and counts towards
    |K_pq| (``column_count`` over the source columns of that source row)."""
    lo = min(max(k_lo, 0), n_cols)
    hi = max(min(k_hi, n_cols), lo)
    if hi == lo:
        return
    row = sub_row // n
    for col in range(lo // n, (hi - 1) // n + 1):
        count = min(hi, (col + 1) * n) - max(lo, col * n)
        column_count[col] += count
        for c in range(mean.size):
            mean[c] += count * noise[row, col, c]


@njit(cache=True)
def _flush_counts(column_count):
    """sum_q |K_pq|^2 over the source row just finished; clears the counts."""
    square = 0.0
    for col in range(column_count.size):
        count = column_count[col]
        if count:
            square += count * count
            column_count[col] = 0
    return square


@njit(parallel=True, nogil=True, cache=True)
def _rasterise(field, corners, centres, n, offset, gamma, out, counts, row_stats,
               noise, cond_mean, cond_carried):  # fmt: skip
    """Y_p = sum_{K_p} s / sqrt(|K_p|), or the sub-pixel containing T(p) when K_p is empty.

    ``counts[p]`` = |K_p|; ``row_stats[i]`` = targets of row i with no sub-pixel in
    the frame. Unless they are empty, ``cond_mean`` [H*W, C]
    and ``cond_carried`` [H*W] receive E[Y_p | X] = sum_q |K_pq| x_q / (n sqrt(|K_p|))
    and sum_q |K_pq|^2 / (n^2 |K_p|), from the source frame ``noise`` (E[s | x_q] =
    x_q / n; fresh sub-pixels contribute nothing).
    """
    height, width, channels = out.shape
    n_rows = field.shape[0]
    n_cols = field.shape[1]
    wanted = cond_carried.size > 0
    for i in prange(height):
        acc = np.empty(channels)
        mean = np.empty(channels)
        column_count = np.zeros(width if wanted else 0, dtype=np.int64)
        fresh = 0
        for j in range(width):
            p = i * width + j
            r0, c0, r1, c1, r2, c2, r3, c3 = quad_corners(corners, i, j)
            rmin, rmax, cmin, cmax = box(r0, c0, r1, c1, r2, c2, r3, c3)
            if rmax <= 0.0 or rmin >= height or cmax <= 0.0 or cmin >= width:
                # Entirely outside the frame: a normalised sum of fresh sub-pixels is
                # itself a fresh N(0, 1); draw it directly instead of |K_p| of them.
                fresh += 1
                counts[p] = 0
                for c in range(channels):
                    out[i, j, c] = _fresh_target(p, c, offset, gamma)
                if wanted:
                    cond_mean[p] = 0.0
                    cond_carried[p] = 0.0
                continue
            for c in range(channels):
                acc[c] = 0.0
                mean[c] = 0.0
            count = 0
            inside = 0
            square = 0.0
            source_row = np.int64(-1)
            # Sub-pixel rows whose centre line (s + 0.5) / n lies in [rmin, rmax).
            s_lo = np.int64(math.ceil(rmin * n - 0.5))
            s_hi = np.int64(math.ceil(rmax * n - 0.5))
            for s in range(s_lo, s_hi):
                y = (s + 0.5) / n
                x0 = crossing(r0, c0, r1, c1, y)
                x1 = crossing(r1, c1, r2, c2, y)
                x2 = crossing(r2, c2, r3, c3, y)
                x3 = crossing(r3, c3, r0, c0, y)
                # Two or four crossings (even-odd rule); the missing ones sort last.
                a, b, cc, d = sort4(x0, x1, x2, x3)
                if wanted and s >= 0 and s < n_rows:
                    if s // n != source_row:
                        square += _flush_counts(column_count)
                        source_row = s // n
                    if b < math.inf:
                        _span_sources(noise, n, s, column(a, n), column(b, n), n_cols, mean,
                                      column_count)  # fmt: skip
                    if d < math.inf:
                        _span_sources(noise, n, s, column(cc, n), column(d, n), n_cols, mean,
                                      column_count)  # fmt: skip
                if b < math.inf:
                    added, added_in = _add_span(
                        field, s, column(a, n), column(b, n), acc, offset, gamma
                    )
                    count += added
                    inside += added_in
                if d < math.inf:
                    added, added_in = _add_span(
                        field, s, column(cc, n), column(d, n), acc, offset, gamma
                    )
                    count += added
                    inside += added_in
            if inside == 0:
                fresh += 1
            counts[p] = count
            if count > 0:
                scale_target(acc, mean, count, n, i, j, p, out, cond_mean, wanted)
                if wanted:
                    square += _flush_counts(column_count)
                    cond_carried[p] = square / (n * n * count)
                continue
            if not centre_subpixel(field, noise, centres, n, i, j, p, out, cond_mean,
                                   cond_carried, wanted):  # fmt: skip
                for c in range(channels):
                    out[i, j, c] = _fresh_target(p, c, offset, gamma)
                if wanted:
                    cond_mean[p] = 0.0
                    cond_carried[p] = 0.0
        row_stats[i] = fresh


def _check_field_fits(height: int, width: int, channels: int, n: int) -> None:
    """A clear error instead of a swap storm when the n x n field cannot fit in memory."""
    need = height * width * channels * n * n * 4
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return
    if need > physical:
        raise MemoryError(
            f"hiwyn n={n} at {height}x{width}x{channels} needs {need / 2**30:.1f} GiB for its "
            f"upsampled field (memory grows as n^2); this machine has {physical / 2**30:.1f} "
            "GiB. Use a smaller n, or grid/particle (the n -> infinity limit without the field)."
        )


def hiwyn_warp(noise, corners, centres, n, subpixel_stream, fresh_stream, conditional=False):
    """Warp one frame with upsampling factor ``n``.

    ``noise`` float32 [H, W, C], ``corners`` float64 [H+1, W+1, 2], ``centres``
    float64 [H, W, 2] (validated, C-contiguous). Returns ``(out, stats)``; besides
    the common keys (``overclaimed_sources`` and ``unclaimed_sources`` are -1:
    HIWYN keeps no per-source record), ``area_*`` are |K_p| / n^2 and
    ``empty_targets`` counts targets with no sub-pixel centre in R_p. With
    ``conditional=True`` it returns ``(out, stats, Conditional)``: E[Y | X] of this
    warp's sub-pixel counts.
    """
    height, width, channels = noise.shape
    _check_field_fits(height, width, channels, n)
    # The field is kept between frames, like grid's record: a video warps frame
    # after frame at one size, and mapping the field afresh (1 GiB at 1024 x 1024
    # x 4, n = 8) costs every frame its page faults.
    shape = (height * n, width * n, channels)
    field = workspace("hiwyn", shape, lambda: {"field": np.empty(shape, dtype=np.float32)})["field"]
    _upsample(noise, n, *subpixel_stream, field)
    out = np.empty((height, width, channels), dtype=np.float32)
    counts = np.empty(height * width, dtype=np.int64)
    row_stats = np.empty(height, dtype=np.int64)
    cond = conditional_buffers(height * width, channels, conditional)
    _rasterise(field, corners, centres, n, *fresh_stream, out, counts, row_stats, noise,
               *cond)  # fmt: skip
    areas = counts / float(n * n)
    stats = {
        "fresh_pixels": int(row_stats.sum()),
        "overclaimed_sources": -1,
        "unclaimed_sources": -1,
        "area_min": float(areas.min()),
        "area_mean": float(areas.mean()),
        "area_max": float(areas.max()),
        "empty_targets": int(np.count_nonzero(counts == 0)),
        "n": int(n),
    }
    if conditional:
        return out, stats, cond.frame(height, width)
    return out, stats


def hiwyn_conditional_mean(noise, corners, centres, n):
    """E[Y | X] of hiwyn and |K_p|: the rasteriser's own conditional moments (the same
    ones ``hiwyn_warp(..., conditional=True)`` reports), with the counts.

    Returns ``(mean float64 [H, W, C], counts int64 [H*W])``.
    """
    height, width, channels = noise.shape
    noise = np.ascontiguousarray(noise, dtype=np.float32)
    field = np.zeros((height * n, width * n, channels), dtype=np.float32)  # draws: irrelevant
    out = np.empty((height, width, channels), dtype=np.float32)
    counts = np.empty(height * width, dtype=np.int64)
    row_stats = np.empty(height, dtype=np.int64)
    cond = conditional_buffers(height * width, channels, True)
    _rasterise(field, corners, centres, n, np.uint64(0), np.uint64(1), out, counts, row_stats,
               noise, *cond)  # fmt: skip
    return cond.mean.reshape(height, width, channels).astype(np.float64), counts
