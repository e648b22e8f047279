"""Device primitives the CUDA drivers share: T at the pixel corners, the bucketing of
items by key (a scatter after ``arrays.exclusive_scan`` of the counts, then a sort of each
bucket by item index), the ziggurat's tables in shared memory, the draws of a bridge
piece, fresh noise for a target nothing reaches, and the drivers' default stage hook.
"""

from __future__ import annotations

import numpy as np
from numba import cuda, float32, int64

from noisewarp.core.rng import normal_with, ziggurat_tables
from noisewarp.cuda import config
from noisewarp.cuda.arrays import blocks, is_device_array
from noisewarp.flow import corner_point

__all__ = ["TABLE", "corner_map", "device_corners", "scatter", "sort_buckets", "device_tables",
           "shared_tables", "bridge_increments", "fresh_target", "unmarked", "KERNELS"]  # fmt: skip

TABLE = 512  # entries of each ziggurat table (``core.rng.ziggurat_tables``)

_corner_point = cuda.jit(device=True)(corner_point.py_func)


@cuda.jit
def corner_map(centres, corners):
    """T at the pixel corners from T at the centres, as ``flow.corner_map_from_centres``
    (grid and hiwyn, when the deformation gives no exact corners)."""
    k = cuda.grid(1)
    width = centres.shape[1]
    if k < corners.shape[0] * (width + 1):
        i = k // (width + 1)
        _corner_point(centres, i, k - i * (width + 1), corners)


def device_corners(centres, corners, buffer, mark):
    """T at the pixel corners on the device: ``corners`` if it is a device array, copied
    into ``buffer`` from the host, or (None) interpolated from ``centres`` into ``buffer``,
    named to ``mark`` as the stage ``corner_map``."""
    if corners is None:
        mark("corner_map")
        threads = config.THREADS
        corner_map[blocks(buffer.size // 2, threads), threads](centres, buffer)
        return buffer
    if not is_device_array(corners):
        buffer.copy_to_device(np.ascontiguousarray(corners, dtype=np.float64))
        return buffer
    return corners


@cuda.jit
def scatter(keys, start, count, order):
    """Each item i with ``keys[i] >= 0`` into a free position of its bucket's range
    ``start[keys[i]]:...`` of ``order``, counting ``count[keys[i]]`` back down to zero
    (ready for the next frame). Positions follow the atomics: ``sort_buckets`` fixes them."""
    i = cuda.grid(1)
    if i < keys.size and keys[i] >= 0:
        b = keys[i]
        order[start[b] + cuda.atomic.sub(count, b, 1) - 1] = i


# Buckets up to this size are insertion-sorted (a few items, the usual case); larger ones,
# which a map that gathers many targets into one cell makes, are heap-sorted (k log k).
INSERTION_MAX = 32


@cuda.jit(device=True)
def _sift_down(order, lo, root, end):
    """Restores the max-heap ``order[lo:lo + end]`` below ``root``."""
    while True:
        child = 2 * root + 1
        if child >= end:
            return
        if child + 1 < end and order[lo + child + 1] > order[lo + child]:
            child += 1
        if order[lo + root] >= order[lo + child]:
            return
        order[lo + root], order[lo + child] = order[lo + child], order[lo + root]
        root = child


@cuda.jit
def sort_buckets(start, order):
    """Sorts each bucket ``order[start[b]:start[b + 1]]`` by item index (items are
    distinct, so any sort gives the same order), which makes the bucketing deterministic:
    insertion sort up to ``INSERTION_MAX`` items, heapsort above."""
    b = cuda.grid(1)
    if b >= start.size - 1:
        return
    lo = start[b]
    n = start[b + 1] - lo
    if n <= INSERTION_MAX:
        for e in range(lo + 1, lo + n):
            item = order[e]
            f = e
            while f > lo and order[f - 1] > item:
                order[f] = order[f - 1]
                f -= 1
            order[f] = item
        return
    for root in range(n // 2 - 1, -1, -1):
        _sift_down(order, lo, root, n)
    for end in range(n - 1, 0, -1):
        order[lo], order[lo + end] = order[lo + end], order[lo]
        _sift_down(order, lo, 0, end)


def device_tables() -> tuple:
    """The ziggurat's tables (acceptance bounds, widths) on the device, for
    ``shared_tables``; a workspace keeps them."""
    tables = tuple(cuda.to_device(t) for t in ziggurat_tables())
    assert all(t.size == TABLE for t in tables)
    return tables


@cuda.jit(device=True)
def shared_tables(accept, width_table):
    """The ziggurat's tables copied into the block's shared memory, for ``normal_with``
    (the whole block calls this before any thread returns): draws index them at random,
    which constant memory would serialise across a warp."""
    accept_shared = cuda.shared.array(TABLE, int64)
    width_shared = cuda.shared.array(TABLE, float32)
    for t in range(cuda.threadIdx.x, TABLE, cuda.blockDim.x):
        accept_shared[t] = accept[t]
        width_shared[t] = width_table[t]
    cuda.syncthreads()
    return accept_shared, width_shared


@cuda.jit(device=True)
def bridge_increments(frac, sd, resid, channels, offset, gamma, counter, dest, row, base,
                      zig_accept, zig_width):  # fmt: skip
    """The increments of a non-final bridge piece (``core.bridge.bridge_split``'s frac and
    sd), channel c from normal counter + c rounded to float32 as the CPU draws them:
    I_c = frac resid_c + sd g_c into ``dest[row, base + c]``, and resid_c -= I_c."""
    for c in range(channels):
        g = np.float32(normal_with(offset, gamma, counter + np.uint64(c), zig_accept, zig_width))
        inc = frac * resid[c] + sd * np.float64(g)
        resid[c] -= inc
        dest[row, base + c] = inc


@cuda.jit(device=True)
def fresh_target(p, i, j, offset, gamma, out, cond_mean, cond_carried, zig_accept, zig_width):
    """Target p = (i, j) with nothing in the frame reaching it: fresh noise from counters
    (p, c) of the stream ``(offset, gamma)``, as the CPU, and E[Y_p | X] = 0 if asked."""
    channels = out.shape[2]
    base = np.uint64(p) * np.uint64(channels)
    for c in range(channels):
        out[i, j, c] = normal_with(offset, gamma, base + np.uint64(c), zig_accept, zig_width)
    if cond_carried.size:
        for c in range(channels):
            cond_mean[p, c] = 0.0
        cond_carried[p] = 0.0


def unmarked(stage: str) -> None:
    """A driver's ``on_stage`` when none is given: marks nothing."""


# Every kernel here with the signatures the drivers launch it with (``noisewarp.cuda.ptx``):
# particle buckets targets by cell (int64 keys), grid entries by source (int32 keys).
KERNELS = {
    "corner_map": (corner_map, "(float64[:,:,::1], float64[:,:,::1])"),
    "scatter_cells": (scatter, "(int64[::1], int64[::1], int64[::1], int32[::1])"),
    "scatter_entries": (scatter, "(int32[::1], int64[::1], int64[::1], int32[::1])"),
    "sort_buckets": (sort_buckets, "(int64[::1], int32[::1])"),
}
