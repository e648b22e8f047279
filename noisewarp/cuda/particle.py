"""Particle-based integral noise warping on the GPU (the CUDA twin of ``cpu/particle.py``).

The same law, the same counters and the same piece order as the CPU driver, so one key
gives the same frame on both backends to float32 rounding (docs/methods.md). Where the
CPU sorts targets into rows and walks each row with one thread, the GPU bins targets
into cells and gives each source its own thread:

1. ``_bin_cells`` (per target): the cell floor(u) (with a one-cell border for u in
   [-1, 0)), its fractional offsets, a count per cell; fresh noise for a particle
   with no neighbour in the frame.
2. An exclusive scan of the counts and a scatter of the targets into their cells
   (``cuda.primitives.scatter``); ``sort_buckets`` orders each cell by target index
   (the integer atomics of the scatter decide only positions that this sort then
   fixes: the result is deterministic).
3. ``_source_totals`` (per source q): merges the two cells of each neighbouring
   cell row by target index, which is the CPU's piece order (bucket i + 1, then i;
   targets by index), and sums W_q and the number of pieces.
4. A scan of each source row's normals (k - 1 per channel for k pieces; one block per
   row) gives its counters, the CPU's i * 2 H W C + (the draws of the sources left of
   it in row i).
5. ``_source_bridges`` walks each bridge in that order (``core.bridge.bridge_split``)
   and writes the increment and a_pq of piece (p, k) into the slot owned by target p.
6. ``_finish_targets`` (per target): Y_p = sum_k I_pk / sqrt(A_p), in k order, and
   E[Y_p | X] when asked (``core.particle.conditional_target``, the CPU's own).

No atomics enter a floating-point sum. The frame, the map, the cells and every
scratch array stay on the device between frames (``ParticleWorkspace``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64

from noisewarp.core.bridge import NEIGHBOURS, bilinear_weight, bridge_split, particle_in_reach
from noisewarp.core.particle import conditional_target
from noisewarp.core.quad import check_sizes
from noisewarp.cuda import config
from noisewarp.cuda.arrays import (
    MAX_THREADS,
    block_min_max,
    block_sum,
    blocks,
    check_channels,
    device_workspace,
    exclusive_scan,
    row_scan,
    zero,
)
from noisewarp.cuda.primitives import (
    bridge_increments,
    device_tables,
    fresh_target,
    scatter,
    shared_tables,
    sort_buckets,
    unmarked,
)

__all__ = ["particle_warp", "ParticleWorkspace", "KERNELS", "STAGES"]

MAX_CHANNELS = config.MAX_CHANNELS
PAIR_THREADS = 2 * MAX_THREADS  # ``block_min_max`` keeps two values per thread
# The driver's stages in launch order, as ``particle_warp`` names them to ``on_stage``.
STAGES = ("bin_cells", "scatter", "sort", "source_totals", "source_bridges", "finish_targets")
# The shared per-target sum, as a device function (numba's simulator runs its Python).
_conditional_target = cuda.jit(device=True)(conditional_target.py_func)


@cuda.jit
def _bin_cells(tmap, cell, frac, count, fresh_offset, fresh_gamma, out, cond_mean,
               cond_carried, accept, width_table):  # fmt: skip
    """Per target p: its cell index (or -1 and fresh noise from counter (p, c))."""
    zig_accept, zig_width = shared_tables(accept, width_table)
    p = cuda.grid(1)
    height, width = out.shape[0], out.shape[1]
    if p >= height * width:
        return
    i = p // width
    j = p - i * width
    ur = tmap[i, j, 0] - 0.5
    uc = tmap[i, j, 1] - 0.5
    if particle_in_reach(ur, uc, height, width):
        fr = math.floor(ur)
        fc = math.floor(uc)
        c = (np.int64(fr) + 1) * (width + 1) + np.int64(fc) + 1
        cell[p] = c
        frac[p, 0] = ur - fr
        frac[p, 1] = uc - fc
        cuda.atomic.add(count, c, 1)
    else:
        cell[p] = -1
        fresh_target(p, i, j, fresh_offset, fresh_gamma, out, cond_mean, cond_carried,
                     zig_accept, zig_width)  # fmt: skip


@cuda.jit(device=True)
def _cell_pair(start, i, j, half, width):
    """The ranges of ``order`` holding the requesters of source (i, j) in cell row
    i - ``half``: cell column j (neighbour k = 2 half), then j - 1 (k = 2 half + 1)."""
    base = (i + 1 - half) * (width + 1) + j
    return start[base + 1], start[base + 2], start[base], start[base + 1]


@cuda.jit(device=True)
def _take_piece(order, a, a_end, b, b_end, half):
    """The next piece of two cells merged by target index (the CPU's order): its
    target p, its neighbour index k and the advanced positions (a, b)."""
    if b >= b_end or (a < a_end and order[a] < order[b]):
        return order[a], 2 * half, a + 1, b
    return order[b], 2 * half + 1, a, b + 1


@cuda.jit
def _source_totals(order, start, frac, width, channels, total, count, draws, partial):
    """Per source q: W_q and the number of pieces (summed in the CPU's piece order),
    and the normals its bridge draws, (pieces - 1) per channel; per block, the number
    of sources no particle requests (``partial[block, 4]``)."""
    shared = cuda.shared.array(MAX_THREADS, float64)
    q = cuda.grid(1)
    unclaimed = 0.0
    if q < total.size:
        pieces = _source_total(q, order, start, frac, width, channels, total, count, draws)
        unclaimed = 1.0 if pieces == 0 else 0.0
    empty = block_sum(shared, unclaimed)
    if cuda.threadIdx.x == 0:
        partial[cuda.blockIdx.x, 4] = empty


@cuda.jit(device=True)
def _source_total(q, order, start, frac, width, channels, total, count, draws):
    i = q // width
    j = q - i * width
    tot = 0.0
    n = 0
    for half in range(2):  # cell row i (neighbours k = 0, 1), then i - 1 (k = 2, 3)
        a, a_end, b, b_end = _cell_pair(start, i, j, half, width)
        while a < a_end or b < b_end:
            p, k, a, b = _take_piece(order, a, a_end, b, b_end, half)
            w = bilinear_weight(frac[p, 0], frac[p, 1], k)
            if w > 0.0:
                tot += w
                n += 1
    total[q] = tot
    count[q] = n
    draws[q] = (n - 1) * channels if n > 1 else 0
    return n


@cuda.jit
def _source_bridges(noise, order, start, frac, total, count, cursor, offset, gamma, slots,
                    accept, width_table):  # fmt: skip
    """Per source q: walk its bridge piece by piece, in the order of ``_source_totals``,
    into slot (p, k) of each piece: the increments per channel, then a_pq."""
    zig_accept, zig_width = shared_tables(accept, width_table)
    q = cuda.grid(1)
    height, width, channels = noise.shape
    if q >= height * width:
        return
    i = q // width
    j = q - i * width
    pieces = count[q]
    if pieces == 0:
        return
    stride = channels + 1
    tot = total[q]
    inv_total = 1.0 / tot
    resid = cuda.local.array(MAX_CHANNELS, float64)
    for c in range(channels):
        resid[c] = noise[i, j, c]
    remaining = tot
    counter = np.uint64(i) * np.uint64(2 * height * width * channels) + np.uint64(cursor[q])
    for half in range(2):
        a, a_end, b, b_end = _cell_pair(start, i, j, half, width)
        while a < a_end or b < b_end:
            p, k, a, b = _take_piece(order, a, a_end, b, b_end, half)
            w = bilinear_weight(frac[p, 0], frac[p, 1], k)
            if not w > 0.0:
                continue
            slot = k * stride
            pieces -= 1
            if pieces == 0:
                # The last piece closes the bridge; a source's only piece is x_q whole.
                slots[p, slot + channels] = 1.0 if w == tot else w * inv_total
                for c in range(channels):
                    slots[p, slot + c] = resid[c]
            else:
                slots[p, slot + channels] = w * inv_total
                share, sd, remaining = bridge_split(w, remaining, inv_total)
                bridge_increments(share, sd, resid, channels, offset, gamma, counter, slots, p,
                                  slot, zig_accept, zig_width)  # fmt: skip
                counter += np.uint64(channels)


@cuda.jit
def _finish_targets(noise, cell, frac, slots, fresh_offset, fresh_gamma, out, cond_mean,
                    cond_carried, accept, width_table, partial):  # fmt: skip
    """Per binned target: Y_p = sum_k I_pk / sqrt(A_p) (fresh noise where A_p = 0) and
    E[Y_p | X] if asked; per block, (fresh targets, min, sum, max A_p) into ``partial``."""
    zig_accept, zig_width = shared_tables(accept, width_table)
    shared = cuda.shared.array(PAIR_THREADS, float64)
    p = cuda.grid(1)
    area = 0.0
    fresh = 0.0
    low = math.inf
    if p < cell.size:
        area = _finish_target(p, noise, cell, frac, slots, fresh_offset, fresh_gamma, out,
                              cond_mean, cond_carried, zig_accept, zig_width)  # fmt: skip
        fresh = 1.0 if area == 0.0 else 0.0
        low = area
    fresh = block_sum(shared, fresh)
    area_sum = block_sum(shared, area)
    low, high = block_min_max(shared, low, area)
    if cuda.threadIdx.x == 0:
        b = cuda.blockIdx.x
        partial[b, 0] = fresh
        partial[b, 1] = low
        partial[b, 2] = area_sum
        partial[b, 3] = high


@cuda.jit(device=True)
def _finish_target(p, noise, cell, frac, slots, fresh_offset, fresh_gamma, out, cond_mean,
                   cond_carried, zig_accept, zig_width):  # fmt: skip
    """Y_p and E[Y_p | X] of one target; returns A_p (0 for fresh noise)."""
    height, width, channels = out.shape
    c_index = cell[p]
    if c_index < 0:
        return 0.0  # no neighbour in the frame: ``_bin_cells`` drew its noise
    i = p // width
    j = p - i * width
    cell_row = c_index // (width + 1) - 1
    cell_col = c_index - (cell_row + 1) * (width + 1) - 1
    fr = frac[p, 0]
    fc = frac[p, 1]
    stride = channels + 1
    acc = cuda.local.array(MAX_CHANNELS, float64)
    for c in range(channels):
        acc[c] = 0.0
    area = 0.0
    pieces = 0  # bit k: neighbour k is a piece (its slot is written)
    for k in range(NEIGHBOURS):
        row = cell_row + (k >> 1)
        col = cell_col + (k & 1)
        if row >= 0 and row < height and col >= 0 and col < width:
            if bilinear_weight(fr, fc, k) > 0.0:
                pieces |= 1 << k
                area += slots[p, k * stride + channels]
                for c in range(channels):
                    acc[c] += slots[p, k * stride + c]
    if area > 0.0:
        inv = 1.0 / math.sqrt(area)
        for c in range(channels):
            out[i, j, c] = acc[c] * inv
        if cond_carried.size:
            _conditional_target(p, cell_row, cell_col, pieces, slots, p, noise, inv, cond_mean,
                                cond_carried, acc, channels)  # fmt: skip
    else:
        fresh_target(p, i, j, fresh_offset, fresh_gamma, out, cond_mean, cond_carried,
                     zig_accept, zig_width)  # fmt: skip
    return area


# Every kernel of this driver with a signature it is launched with, for
# ``numba.cuda.compile_ptx`` checks (float32 frames, float64 maps).
KERNELS = {
    "_bin_cells": (_bin_cells, "(float64[:,:,::1], int64[::1], float64[:,::1], int64[::1], "
                   "uint64, uint64, float32[:,:,::1], float32[:,::1], float32[::1], int64[::1], "
                   "float32[::1])"),
    "_source_totals": (_source_totals, "(int32[::1], int64[::1], float64[:,::1], int64, int64, "
                       "float64[::1], int64[::1], int64[::1], float64[:,::1])"),
    "_source_bridges": (_source_bridges, "(float32[:,:,::1], int32[::1], int64[::1], "
                        "float64[:,::1], float64[::1], int64[::1], int64[::1], uint64, "
                        "uint64, float32[:,::1], int64[::1], float32[::1])"),
    "_finish_targets": (_finish_targets, "(float32[:,:,::1], int64[::1], float64[:,::1], "
                        "float32[:,::1], uint64, uint64, float32[:,:,::1], float32[:,::1], "
                        "float32[::1], int64[::1], float32[::1], float64[:,::1])"),
}  # fmt: skip


class ParticleWorkspace:
    """Device buffers of one frame size, kept across frames (cells, order, scans, slots)."""

    def __init__(self, height: int, width: int, channels: int) -> None:
        npix = height * width
        ncells = (height + 1) * (width + 1)
        self.shape = (height, width, channels)
        self.cell = cuda.device_array(npix, np.int64)
        self.frac = cuda.device_array((npix, 2), np.float64)
        # Targets per cell; ``scatter`` counts them back to zero for the next frame
        # (``dirty`` marks a frame stopped in between). The last entry stays 0.
        self.count = cuda.to_device(np.zeros(ncells + 1, dtype=np.int64))
        self.dirty = False
        self.start = cuda.device_array(ncells + 1, np.int64)
        self.order = cuda.device_array(max(npix, 1), np.int32)
        self.total = cuda.device_array(npix, np.float64)
        self.pieces = cuda.device_array(npix, np.int64)
        self.draws = cuda.device_array(npix, np.int64)
        self.draw_start = cuda.device_array(npix, np.int64)
        self.slots = cuda.device_array((npix, NEIGHBOURS * (channels + 1)), np.float32)
        self.partial = cuda.device_array((0, 5), np.float64)  # per block of the launch
        self.no_conditional = (
            cuda.device_array((0, channels), np.float32),
            cuda.device_array(0, np.float32),
        )
        self.scan_scratch: list = []
        self.tables = device_tables()


def workspace(height: int, width: int, channels: int) -> ParticleWorkspace:
    """The device buffers for this frame size (only the latest size is kept)."""
    shape = (height, width, channels)
    return device_workspace("particle", shape, lambda: ParticleWorkspace(*shape))


def particle_warp(noise, tmap, bridge_stream, fresh_stream, out=None, conditional=None,
                  on_stage=None):  # fmt: skip
    """Warp one frame on the GPU. ``noise`` float32 [H, W, C] and ``tmap`` float64
    [H, W, 2] are validated, C-contiguous device arrays; ``out`` (optional) receives the
    frame; ``conditional`` is None or a pair of flat device buffers (mean [H*W, C],
    carried [H*W]) to receive E[Y | X]; ``on_stage`` (optional) is called with each
    name of ``STAGES`` just before that stage's first launch (benchmarks/gpu.py records
    a CUDA event there). Returns ``(out, stats)`` with ``out`` on the device and the
    same diagnostics as the CPU driver.

    Ten launches and one small copy back (the diagnostics): at 1024 x 1024 the time is
    mostly their fixed cost (benchmarks/NOTES.md).
    """
    height, width, channels = noise.shape
    check_channels(channels)
    check_sizes(height, width)  # ``order`` holds int32 pixel ids
    mark = on_stage or unmarked
    ws = workspace(height, width, channels)
    if out is None:
        out = cuda.device_array((height, width, channels), np.float32)
    cond_mean, cond_carried = conditional if conditional is not None else ws.no_conditional
    npix = height * width
    threads = config.THREADS
    grid = blocks(npix, threads)
    if ws.partial.shape[0] != grid:
        ws.partial = cuda.device_array((grid, 5), np.float64)
    if ws.dirty:
        zero(ws.count)
    ws.dirty = True
    mark("bin_cells")
    _bin_cells[grid, threads](tmap, ws.cell, ws.frac, ws.count, *fresh_stream, out, cond_mean,
                              cond_carried, *ws.tables)  # fmt: skip
    exclusive_scan(ws.count, ws.start, ws.scan_scratch)
    mark("scatter")
    scatter[grid, threads](ws.cell, ws.start, ws.count, ws.order)
    ws.dirty = False
    mark("sort")
    sort_buckets[blocks(ws.start.size - 1, threads), threads](ws.start, ws.order)
    mark("source_totals")
    _source_totals[grid, threads](ws.order, ws.start, ws.frac, width, channels, ws.total,
                                  ws.pieces, ws.draws, ws.partial)  # fmt: skip
    row_scan(ws.draws, ws.draw_start, width)
    mark("source_bridges")
    _source_bridges[grid, threads](noise, ws.order, ws.start, ws.frac, ws.total, ws.pieces,
                                   ws.draw_start, *bridge_stream, ws.slots,
                                   *ws.tables)  # fmt: skip
    mark("finish_targets")
    _finish_targets[grid, threads](noise, ws.cell, ws.frac, ws.slots, *fresh_stream, out,
                                   cond_mean, cond_carried, *ws.tables,
                                   ws.partial)  # fmt: skip
    partial = ws.partial.copy_to_host()
    stats = {
        "fresh_pixels": int(partial[:, 0].sum()),
        "area_min": float(partial[:, 1].min()),
        "area_mean": float(partial[:, 2].sum() / npix),
        "area_max": float(partial[:, 3].max()),
        "overclaimed_sources": 0,
        "unclaimed_sources": int(partial[:, 4].sum()),
    }
    return out, stats
