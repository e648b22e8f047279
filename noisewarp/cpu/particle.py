"""Particle-based integral noise warping on the CPU (Deng et al. 2025, Algorithm 3).

Every target pixel p is a particle at T(p). With u = T(p) - (0.5, 0.5), its four
grid neighbours floor(u) + {0, 1}^2 receive bilinear weights w_pq (in the frame
and > 0 only). Each source q normalises the weights of the particles that
request it, a_pq = w_pq / W_q with W_q = sum_p w_pq, and splits its noise x_q into
Brownian-bridge increments I_pq = z_pq + a_pq (x_q - sum_p z_pq), z_pq ~ N(0, a_pq)
(DESIGN section 3). A target sums its increments and divides by sqrt(A_p),
A_p = sum_q a_pq; a target with no neighbour in the frame gets fresh noise.

Driver (every pass parallel over rows, no atomics, no Python loop over pixels):

1. ``_requests`` (per target): the cell floor(u) as a bin index and the
   standard normals g_pkc of its four pieces, z_pkc = sqrt(a_pk) g_pkc, drawn
   from counter (p, k, c). Weights are recomputed from T(p) where needed.
2. ``counting_sort`` of the targets by cell: the requesters of a source are
   exactly the targets in the four cells around it, so one key per target
   indexes the whole partition record.
3. ``_claims`` (per source row, sweeping the two contiguous bin rows that hold
   its requesters): a packed record of 1 / W_q, 1 / sqrt(W_q) and x_q - Z_q
   with Z_q = sum_p z_pq.
4. ``_gather`` (per target): sum the increments, normalise by sqrt(A_p).

Every sum runs in a fixed order, so the result is bit-identical for any number
of threads.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from noisewarp.core.rng import fill_normals
from noisewarp.cpu.diagnostics import target_summary
from noisewarp.cpu.sort import counting_sort_into
from noisewarp.cpu.workspace import workspace

__all__ = ["particle_warp", "particle_record"]

# Neighbour k of a target's cell floor(u) is floor(u) + (k >> 1, k & 1).
NEIGHBOURS = 4


@njit(inline="always")
def _weight(fr, fc, k):
    """Bilinear weight of neighbour k of a particle at fractional offset (fr, fc)."""
    wr = fr if (k >> 1) else 1.0 - fr
    wc = fc if (k & 1) else 1.0 - fc
    return wr * wc


@njit(parallel=True, cache=True)
def _requests(tmap, offset, gamma, cell, normals):
    """Per target: bin of floor(T(p) - 0.5) (-1 if no neighbour is in the frame) and
    standard normals for all four pieces.

    Normals are drawn for every slot, used or not: the draw is the hot spot and a
    contiguous, branch-free counter range per row is its fastest form. Weights are
    not stored: recomputing them from T(p) is cheaper than the memory traffic.
    """
    height, width = tmap.shape[0], tmap.shape[1]
    channels = normals.shape[2]
    nbin_cols = width + 1
    for i in prange(height):
        fill_normals(
            offset,
            gamma,
            np.uint64(i * width * NEIGHBOURS * channels),
            normals[i * width : (i + 1) * width].reshape(-1),
        )
        for j in range(width):
            ur = tmap[i, j, 0] - 0.5
            uc = tmap[i, j, 1] - 0.5
            # Compare as floats before converting: maps far outside the frame are valid.
            if ur >= -1.0 and ur < height and uc >= -1.0 and uc < width:
                cell[i * width + j] = np.int32(
                    (np.int64(math.floor(ur)) + 1) * nbin_cols + np.int64(math.floor(uc)) + 1
                )
            else:
                cell[i * width + j] = -1


# Columns of the per-source record written by ``_claims`` and read by ``_gather``.
_SCALE = 0  # 1 / W_q, or -1 for a source with one piece (passed on whole)
_ROOT = 1  # 1 / sqrt(W_q)
_RESID = 2  # x_qc - Z_qc for each channel c (x_qc itself for a one-piece source)


@njit(parallel=True, cache=True)
def _claims(noise, points, normals, start, order, record, entries):
    """Per source q: the number of pieces and the record (1 / W_q, 1 / sqrt(W_q),
    x_q - Z_q), where W_q = sum_p w_pq and Z_q = sum_p sqrt(w_pq / W_q) g_pq.

    The requesters of source row i are the targets binned in cell rows i - 1 and
    i, each contiguous in ``order``. Each thread sweeps those two runs for its
    source row and adds every piece into row-local accumulators: long branch-free
    loops instead of one short, unpredictable loop per source and bin.
    ``points`` is the map as [H*W, 2].
    """
    height, width, channels = noise.shape
    nbin_cols = width + 1
    for i in prange(height):
        total = np.zeros(width)
        count = np.zeros(width, dtype=np.int64)
        zsum = np.zeros((width, channels))
        for di in range(2):
            # Cells in row i - di (bin row i - di + 1) hold targets whose neighbour
            # row i is their row offset di.
            first = start[(i - di + 1) * nbin_cols]
            last = start[(i - di + 2) * nbin_cols]
            for e in range(first, last):
                p = order[e]
                ur = points[p, 0] - 0.5
                uc = points[p, 1] - 0.5
                fj = math.floor(uc)
                fr = ur - math.floor(ur)
                fc = uc - fj
                cj = np.int64(fj)
                for dj in range(2):
                    j = cj + dj
                    k = 2 * di + dj
                    w = _weight(fr, fc, k)
                    if w > 0.0 and j >= 0 and j < width:
                        total[j] += w
                        count[j] += 1
                        root = math.sqrt(w)
                        for c in range(channels):
                            zsum[j, c] += root * normals[p, k, c]
        for j in range(width):
            q = i * width + j
            entries[q] = count[j]
            if count[j] == 1:
                # A bridge of one piece is the whole of x_q: the gather copies it
                # exactly, so integer translations reproduce the input bit for bit.
                record[q, _SCALE] = -1.0
                record[q, _ROOT] = 0.0
                for c in range(channels):
                    record[q, _RESID + c] = noise[i, j, c]
            elif count[j] > 1:
                inv = 1.0 / total[j]
                inv_root = math.sqrt(inv)
                record[q, _SCALE] = inv
                record[q, _ROOT] = inv_root
                for c in range(channels):
                    record[q, _RESID + c] = noise[i, j, c] - inv_root * zsum[j, c]


@njit(parallel=True, cache=True)
def _gather(tmap, normals, record, offset, gamma, out, row_stats):
    """Y_p = sum_q I_pq / sqrt(A_p) with I_pq = z_pq + a_pq (x_q - Z_q),
    a_pq = w_pq / W_q and z_pq = sqrt(a_pq) g_pq; fresh noise from counter (p, c)
    where A_p = 0. ``row_stats[i]`` receives (fresh pixels, min A_p, sum A_p,
    max A_p) of row i.
    """
    height, width, channels = out.shape
    for i in prange(height):
        acc = np.empty(channels)
        fresh = 0
        amin = np.inf
        amax = 0.0
        asum = 0.0
        for j in range(width):
            p = i * width + j
            area = 0.0
            for c in range(channels):
                acc[c] = 0.0
            ur = tmap[i, j, 0] - 0.5
            uc = tmap[i, j, 1] - 0.5
            if ur >= -1.0 and ur < height and uc >= -1.0 and uc < width:
                fi = math.floor(ur)
                fj = math.floor(uc)
                ci = np.int64(fi)
                cj = np.int64(fj)
                for k in range(NEIGHBOURS):
                    si = ci + (k >> 1)
                    sj = cj + (k & 1)
                    w = _weight(ur - fi, uc - fj, k)
                    if w > 0.0 and si >= 0 and si < height and sj >= 0 and sj < width:
                        q = si * width + sj
                        scale = record[q, _SCALE]
                        if scale < 0.0:
                            area += 1.0
                            for c in range(channels):
                                acc[c] += record[q, _RESID + c]
                        else:
                            a = w * scale
                            area += a
                            root = math.sqrt(w) * record[q, _ROOT]
                            for c in range(channels):
                                acc[c] += root * normals[p, k, c] + a * record[q, _RESID + c]
            if area > 0.0:
                inv = 1.0 / math.sqrt(area)
                for c in range(channels):
                    out[i, j, c] = acc[c] * inv
            else:
                fresh += 1
                fill_normals(offset, gamma, np.uint64(p * channels), out[i, j])
            amin = min(amin, area)
            amax = max(amax, area)
            asum += area
        row_stats[i, 0] = fresh
        row_stats[i, 1] = amin
        row_stats[i, 2] = asum
        row_stats[i, 3] = amax


def _buffers(height, width, channels, nchunks):
    npix = height * width
    return {
        "cell": np.empty(npix, dtype=np.int32),
        # Normals in float32: Z_q sums the stored values, so sum_p I_pq = x_q holds
        # whatever their precision, and the output is float32 anyway.
        "normals": np.empty((npix, NEIGHBOURS, channels), dtype=np.float32),
        "counts": np.empty((nchunks, (height + 1) * (width + 1)), dtype=np.int32),
        "start": np.empty((height + 1) * (width + 1) + 1, dtype=np.int64),
        "order": np.empty(npix, dtype=np.int32),
        "record": np.empty((npix, _RESID + channels), dtype=np.float64),
        "entries": np.empty(npix, dtype=np.int32),
        "row_stats": np.empty((height, 4), dtype=np.float64),
    }


def _partition(noise, tmap, bridge_stream, nchunks):
    """Passes 1-3; returns the work arrays (reused across frames of one shape)."""
    height, width, channels = noise.shape
    buf = workspace(
        "particle",
        (height, width, channels, nchunks),
        lambda: _buffers(height, width, channels, nchunks),
    )
    _requests(tmap, *bridge_stream, buf["cell"], buf["normals"])
    counting_sort_into(buf["cell"], buf["counts"], buf["start"], buf["order"])
    _claims(noise, tmap.reshape(-1, 2), buf["normals"], buf["start"], buf["order"],
            buf["record"], buf["entries"])  # fmt: skip
    return buf


def particle_warp(noise, tmap, bridge_stream, fresh_stream, nchunks):
    """Warp one frame. ``noise`` float32 [H, W, C], ``tmap`` float64 [H, W, 2].

    ``bridge_stream`` and ``fresh_stream`` are ``(offset, gamma)`` pairs from
    ``Key.stream``. Inputs must already be validated and C-contiguous. Returns
    ``(out, stats)``: float32 [H, W, C] and a dict of diagnostics.
    """
    height, width, channels = noise.shape
    buf = _partition(noise, tmap, bridge_stream, nchunks)
    out = np.empty((height, width, channels), dtype=np.float32)
    row_stats = buf["row_stats"]
    _gather(tmap, buf["normals"], buf["record"], *fresh_stream, out, row_stats)
    stats = {
        **target_summary(row_stats, height * width),
        "overclaimed_sources": 0,
        "unclaimed_sources": int(np.count_nonzero(buf["entries"] == 0)),
    }
    return out, stats


def _weight_np(fr, fc, k):
    """``_weight`` on arrays (same arithmetic, so the same doubles)."""
    wr = fr if (k >> 1) else 1.0 - fr
    wc = fc if (k & 1) else 1.0 - fc
    return wr * wc


def particle_record(tmap: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The partition record of the particle method: ``(target, source, area)``.

    Flat pixel indices and a_pq = w_pq / W_q for every piece, as the kernel
    computes them (same weights, same normalisation). For analysis and tests;
    ``tmap`` is a validated float64 [H, W, 2] map.
    """
    height, width = tmap.shape[:2]
    dummy = (np.uint64(0), np.uint64(1))
    tmap = np.ascontiguousarray(tmap)
    buf = _partition(np.zeros((height, width, 1), np.float32), tmap, dummy, 1)
    single = buf["entries"] == 1
    u = tmap.reshape(-1, 2) - 0.5
    corner = np.floor(u)
    frac = u - corner
    weights = np.stack([_weight_np(frac[:, 0], frac[:, 1], k) for k in range(NEIGHBOURS)], axis=1)
    rows = corner[:, :1].astype(np.int64) + np.array([0, 0, 1, 1])
    cols = corner[:, 1:].astype(np.int64) + np.array([0, 1, 0, 1])
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    target, slot = np.nonzero((weights > 0.0) & inside & (np.abs(u) < 2**52).all(axis=1)[:, None])
    source = rows[target, slot] * width + cols[target, slot]
    area = np.where(single[source], 1.0, weights[target, slot] * buf["record"][source, _SCALE])
    return target.astype(np.int64), source, area
