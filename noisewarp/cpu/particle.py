"""Particle-based integral noise warping on the CPU (Deng et al. 2025, Algorithm 3).

Every target pixel p is a particle at T(p). With u = T(p) - (0.5, 0.5), its four
grid neighbours floor(u) + {0, 1}^2 receive bilinear weights w_pq. Each source q
normalises the weights of the particles that request it, a_pq = w_pq / W_q with
W_q = sum_p w_pq, and splits its noise x_q into Brownian-bridge increments
I_pq of lengths a_pq (DESIGN section 3). A target sums its increments and
divides by sqrt(A_p), A_p = sum_q a_pq; a target with no in-frame neighbour gets
fresh noise.

Driver layout (all passes parallel over rows, no atomics):

1. ``_requests``: per target, the cell floor(u) as a bin index and the four
   bilinear weights (zero out of the frame).
2. ``counting_sort`` of targets by cell: a source's requesters are exactly the
   targets in the four cells around it, so binning targets once (one key per
   target, not four) indexes the whole partition record.
3. ``_increments``: per source, W_q, then the bridge increments written into the
   slot owned by (target, neighbour, channel).
4. ``_gather``: per target, sum its slots and normalise.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from noisewarp.core.rng import normal
from noisewarp.cpu.sort import counting_sort

__all__ = ["particle_warp", "particle_weights"]

# Neighbour k of a target's cell is (di, dj) = (k >> 1, k & 1).
NEIGHBOURS = 4


@njit(parallel=True, cache=True)
def _requests(tmap, height, width, cell, weights):
    """Bin index of floor(T(p) - 0.5) (-1 if no neighbour is in the frame) and weights."""
    nbin_cols = width + 1
    for i in prange(tmap.shape[0]):
        for j in range(tmap.shape[1]):
            p = i * tmap.shape[1] + j
            ur = tmap[i, j, 0] - 0.5
            uc = tmap[i, j, 1] - 0.5
            for k in range(NEIGHBOURS):
                weights[p, k] = 0.0
            # Compare as floats before converting: maps far outside the frame are valid.
            if not (ur >= -1.0 and ur < height and uc >= -1.0 and uc < width):
                cell[p] = -1
                continue
            ci = math.floor(ur)
            cj = math.floor(uc)
            fr = ur - ci
            fc = uc - cj
            ci = np.int64(ci)
            cj = np.int64(cj)
            cell[p] = (ci + 1) * nbin_cols + (cj + 1)
            for k in range(NEIGHBOURS):
                si = ci + (k >> 1)
                sj = cj + (k & 1)
                if si >= 0 and si < height and sj >= 0 and sj < width:
                    wr = fr if (k >> 1) else 1.0 - fr
                    wc = fc if (k & 1) else 1.0 - fc
                    weights[p, k] = wr * wc


@njit(parallel=True, cache=True)
def _increments(noise, weights, start, order, offset, gamma, slots, claimed):
    """Per source: W_q, then I_pq = z_pq + a_pq (x_q - sum_p z_pq), z_pq ~ N(0, a_pq).

    ``slots[p, k, c]`` receives the increment that target p draws from its
    neighbour k in channel c. ``claimed[q]`` is W_q (0 if nobody requests q).
    """
    height, width, channels = noise.shape
    nbin_cols = width + 1
    for i in prange(height):
        zsum = np.empty(channels)
        for j in range(width):
            q = i * width + j
            total = 0.0
            entries = 0
            last_p = -1
            last_k = -1
            for k in range(NEIGHBOURS):
                b = (i - (k >> 1) + 1) * nbin_cols + (j - (k & 1) + 1)
                for e in range(start[b], start[b + 1]):
                    w = weights[order[e], k]
                    if w > 0.0:
                        total += w
                        entries += 1
                        last_p = order[e]
                        last_k = k
            claimed[q] = total
            if entries == 0:
                continue
            if entries == 1:
                # A bridge of one piece is the whole of x_q: copy it exactly, so
                # integer translations reproduce the input bit for bit.
                for c in range(channels):
                    slots[last_p, last_k, c] = noise[i, j, c]
                continue
            for c in range(channels):
                zsum[c] = 0.0
            for k in range(NEIGHBOURS):
                b = (i - (k >> 1) + 1) * nbin_cols + (j - (k & 1) + 1)
                for e in range(start[b], start[b + 1]):
                    p = order[e]
                    w = weights[p, k]
                    if w > 0.0:
                        scale = math.sqrt(w / total)
                        base = np.uint64((p * NEIGHBOURS + k) * channels)
                        for c in range(channels):
                            z = scale * normal(offset, gamma, base + np.uint64(c))
                            slots[p, k, c] = z
                            zsum[c] += z
            for k in range(NEIGHBOURS):
                b = (i - (k >> 1) + 1) * nbin_cols + (j - (k & 1) + 1)
                for e in range(start[b], start[b + 1]):
                    p = order[e]
                    w = weights[p, k]
                    if w > 0.0:
                        a = w / total
                        for c in range(channels):
                            slots[p, k, c] += a * (noise[i, j, c] - zsum[c])


@njit(parallel=True, cache=True)
def _gather(tmap, weights, claimed, slots, offset, gamma, out, row_stats):
    """Y_p = sum_k I_pk / sqrt(A_p), or fresh noise where A_p = 0.

    ``row_stats[i]`` = (fresh pixels, min A_p, sum A_p, max A_p) of row i.
    """
    height, width, channels = out.shape
    for i in prange(height):
        fresh = 0
        amin = np.inf
        amax = 0.0
        asum = 0.0
        for j in range(width):
            p = i * width + j
            ur = tmap[i, j, 0] - 0.5
            uc = tmap[i, j, 1] - 0.5
            area = 0.0
            if ur >= -1.0 and ur < height and uc >= -1.0 and uc < width:
                ci = np.int64(math.floor(ur))
                cj = np.int64(math.floor(uc))
                for k in range(NEIGHBOURS):
                    w = weights[p, k]
                    if w > 0.0:
                        area += w / claimed[(ci + (k >> 1)) * width + cj + (k & 1)]
            if area > 0.0:
                inv = 1.0 / math.sqrt(area)
                for c in range(channels):
                    acc = 0.0
                    for k in range(NEIGHBOURS):
                        if weights[p, k] > 0.0:
                            acc += slots[p, k, c]
                    out[i, j, c] = acc * inv
            else:
                fresh += 1
                base = np.uint64(p * channels)
                for c in range(channels):
                    out[i, j, c] = normal(offset, gamma, base + np.uint64(c))
            amin = min(amin, area)
            amax = max(amax, area)
            asum += area
        row_stats[i, 0] = fresh
        row_stats[i, 1] = amin
        row_stats[i, 2] = asum
        row_stats[i, 3] = amax


def particle_weights(tmap: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin index and bilinear request weights of each target (see ``_requests``).

    Returns ``(cell, weights)`` with shapes ``[H*W]`` and ``[H*W, 4]``.
    """
    npix = tmap.shape[0] * tmap.shape[1]
    cell = np.empty(npix, dtype=np.int64)
    weights = np.empty((npix, NEIGHBOURS), dtype=np.float64)
    _requests(tmap, height, width, cell, weights)
    return cell, weights


def particle_warp(noise, tmap, bridge_stream, fresh_stream, nchunks):
    """Warp one frame. ``noise`` float32 [H, W, C], ``tmap`` float64 [H, W, 2].

    Returns ``(out, stats)`` with ``out`` float32 [H, W, C] and ``stats`` a dict
    of diagnostics. Inputs must already be validated and contiguous.
    """
    height, width, channels = noise.shape
    cell, weights = particle_weights(tmap, height, width)
    start, order = counting_sort(cell, (height + 1) * (width + 1), nchunks)
    slots = np.empty((height * width, NEIGHBOURS, channels), dtype=np.float64)
    claimed = np.empty(height * width, dtype=np.float64)
    _increments(noise, weights, start, order, *bridge_stream, slots, claimed)
    out = np.empty_like(noise, dtype=np.float32)
    row_stats = np.empty((height, 4), dtype=np.float64)
    _gather(tmap, weights, claimed, slots, *fresh_stream, out, row_stats)
    npix = height * width
    stats = {
        "fresh_pixels": int(row_stats[:, 0].sum()),
        "overclaimed_sources": 0,
        "unclaimed_sources": int(np.count_nonzero(claimed == 0.0)),
        "area_min": float(row_stats[:, 1].min()),
        "area_mean": float(row_stats[:, 2].sum() / npix),
        "area_max": float(row_stats[:, 3].max()),
    }
    return out, stats
