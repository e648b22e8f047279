"""Grid-based integral noise warping on the GPU (the CUDA twin of ``cpu/grid.py``).

The same record, the same areas, the same piece order and the same counters as the CPU
driver, so one key gives the same frame on both backends (README, "GPU (numba.cuda)").
Where the CPU walks source rows in chunks of target rows, the GPU gives each target and
each source its own thread:

1. ``_bounds`` (per target): its quad's bounding-box slot count (plus one for A_out if
   the box leaves the frame), the CPU's; an exclusive scan gives every target its
   private slice of the record (E slots in all).
2. ``_fill`` (per target): its entries in the CPU's order, from ``core.quad``: the
   branch-free areas of ``small_quad`` when its ``fast`` flag is set, the general slab
   loop (``quad_entries``) otherwise, the CPU's choice quad by quad; unused slots -1.
   It counts each source's entries (integer atomics).
3. A scan of the counts and a scatter of the entries into per-source buckets (which
   counts them back to zero for the next frame), each sorted by entry index
   (``cuda.primitives``' ``scatter`` and ``sort_buckets``): the CPU's stable sort, so a
   source's pieces come in entry order.
4. ``_source_totals`` (per source): S_q summed in that order and the normals its
   bridge draws: k - 1 per channel for a covered source (S_q >= 1 - REST_EPS, or
   over-claimed), k when the unclaimed remainder is the undrawn last stretch.
5. A scan of each source row's draws (one block per row) gives each source its
   counters, the CPU's i * E * C + (the draws of the sources left of it in row i).
6. ``_source_bridges`` (per source): over-claim rescale, then the bridge walk
   (``core.bridge.bridge_split``), increments and rescaled areas into the entries.
7. ``_finish_targets`` (per target): the increments in entry order, fresh noise for
   A_out, Y_p, and E[Y_p | X] (``core.quad.gather_target`` and ``conditional_target``,
   the CPU's own).
8. ``_row_stats`` (a warp per row): the CPU's per-row diagnostics, in the same order,
   reduced on the host by the same ``target_summary``.

No atomics enter a floating-point sum. The record and every scratch array stay on the
device between frames (``GridWorkspace``). NVVM contracts multiply-adds into FMAs, so
an area may differ from the CPU's in its last float64 bit; frames agree to float32
rounding (bit for bit in numba's CUDA simulator, which runs the kernels as Python).
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64, int32

from noisewarp.core.bridge import bridge_split
from noisewarp.core.quad import (
    box,
    cell_count,
    check_sizes,
    conditional_target,
    covered,
    gather_target,
    inside,
    overclaimed,
    quad_corners,
    quad_entries,
    small_entries,
    small_quad,
)
from noisewarp.core.rng import normal_with
from noisewarp.cpu.diagnostics import target_summary
from noisewarp.cuda import config
from noisewarp.cuda.arrays import (
    blocks,
    check_channels,
    device_workspace,
    exclusive_scan,
    row_scan,
    zero,
)
from noisewarp.cuda.primitives import (
    bridge_increments,
    device_corners,
    device_tables,
    fresh_target,
    scatter,
    shared_tables,
    sort_buckets,
    unmarked,
)

__all__ = ["grid_warp", "GridWorkspace", "KERNELS", "STAGES"]

MAX_CHANNELS = config.MAX_CHANNELS
HEADROOM = 1.125  # room added when the record grows (as ``cpu.workspace.grow``)
# The driver's stages in launch order, as ``grid_warp`` names them to ``on_stage``
# (``corner_map`` only when it interpolates the corners).
STAGES = ("corner_map", "bounds", "fill", "scatter", "sort", "source_totals", "source_bridges",
          "finish_targets", "row_stats")  # fmt: skip

# The shared functions that take arrays, as device functions (numba's simulator runs
# their Python).
_quad_entries = cuda.jit(device=True)(quad_entries.py_func)
_small_entries = cuda.jit(device=True)(small_entries.py_func)
_gather_target = cuda.jit(device=True)(gather_target.py_func)
_conditional_target = cuda.jit(device=True)(conditional_target.py_func)
_corners = cuda.jit(device=True)(quad_corners.py_func)


@cuda.jit
def _bounds(corners, slots):
    """Per target: the cells of its bounding box inside the frame, plus one for A_out if
    the box leaves it (counted in floats, as the CPU's ``_bounds``); ``slots[H*W]`` = 0."""
    p = cuda.grid(1)
    height, width = corners.shape[0] - 1, corners.shape[1] - 1
    npix = height * width
    if p > npix:
        return
    if p == npix:
        slots[p] = 0
        return
    i = p // width
    j = p - i * width
    fheight = float(height)
    fwidth = float(width)
    r0, c0, r1, c1, r2, c2, r3, c3 = _corners(corners, i, j)
    rmin, rmax, cmin, cmax = box(r0, c0, r1, c1, r2, c2, r3, c3)
    within = inside(rmin, rmax, cmin, cmax, fheight, fwidth)
    cells = cell_count(rmin, rmax, fheight) * cell_count(cmin, cmax, fwidth)
    slots[p] = np.int64(cells + (0.0 if within else 1.0))


@cuda.jit
def _fill(corners, offsets, sources, areas, count):
    """Per target: its entries into its slice of the record, in the CPU's order and by
    the CPU's path (``small_quad`` if fast, else ``quad_entries``); unused slots -1.
    ``count[q]`` counts the entries of source q."""
    p = cuda.grid(1)
    height, width = corners.shape[0] - 1, corners.shape[1] - 1
    if p >= height * width:
        return
    i = p // width
    j = p - i * width
    r0, c0, r1, c1, r2, c2, r3, c3 = _corners(corners, i, j)
    fast, row0, col0, x0, a00, a01, x1, a10, a11 = small_quad(r0, c0, r1, c1, r2, c2, r3, c3,
                                                              height, width)  # fmt: skip
    first = offsets[p]
    if fast:
        slot = _small_entries(sources, areas, first, width, row0, col0, x0, a00, a01, x1, a10,
                              a11)  # fmt: skip
    else:
        slot = _quad_entries(corners, i, j, height, width, sources, areas, first)
    for e in range(slot, offsets[p + 1]):
        sources[e] = -1
        areas[e] = 0.0
    for e in range(first, slot):
        if sources[e] >= 0:
            cuda.atomic.add(count, sources[e], 1)


@cuda.jit
def _source_totals(order, start, areas, channels, claimed, draws):
    """Per source q: S_q, summed over its entries in entry order, and the normals its
    bridge draws: (k - 1) per channel when the pieces cover it, k otherwise."""
    q = cuda.grid(1)
    if q >= claimed.size:
        return
    total = 0.0
    for t in range(start[q], start[q + 1]):
        total += areas[order[t]]
    claimed[q] = total
    pieces = start[q + 1] - start[q]
    if pieces > 0 and covered(total):
        pieces -= 1
    draws[q] = pieces * channels


@cuda.jit
def _source_bridges(noise, order, start, areas, claimed, cursor, row_span, offset, gamma, inc,
                    scaled, accept, width_table):  # fmt: skip
    """Per source q: walk its bridge over its entries in entry order, as the CPU's
    ``_walk_row``; ``inc[e]`` receives the increments of entry e, ``scaled[e]`` its
    (over-claim rescaled) area. Counters: i * E * C + (the row's draws before q,
    ``cursor[q]``)."""
    zig_accept, zig_width = shared_tables(accept, width_table)
    q = cuda.grid(1)
    height, width, channels = noise.shape
    if q >= height * width:
        return
    first = start[q]
    n = start[q + 1] - first
    if n == 0:
        return
    i = q // width
    j = q - i * width
    total = claimed[q]
    scale = 1.0 / total if overclaimed(total) else 1.0
    # An unclaimed remainder is the last stretch, never reached: no piece closes then.
    pieces = n if covered(total) else n + 1
    resid = cuda.local.array(MAX_CHANNELS, float64)
    for c in range(channels):
        resid[c] = noise[i, j, c]
    left = 1.0
    counter = np.uint64(i) * row_span + np.uint64(cursor[q])
    for t in range(n):
        e = order[first + t]
        a = areas[e] * scale
        pieces -= 1
        if pieces == 0:
            # The last piece closes the bridge: the increments sum to x_q.
            for c in range(channels):
                inc[e, c] = resid[c]
        else:
            frac, sd, left = bridge_split(a, left, 1.0)
            bridge_increments(frac, sd, resid, channels, offset, gamma, counter, inc, e, 0,
                              zig_accept, zig_width)  # fmt: skip
            counter += np.uint64(channels)
        scaled[e] = a


@cuda.jit
def _finish_targets(source_flat, offsets, sources, areas, inc, scaled, fresh_offset,
                    fresh_gamma, out, area, fresh, cond_mean, cond_carried, accept,
                    width_table):  # fmt: skip
    """Per target p: Y_p = (sum_q I_pq + sqrt(A_out) xi_p) / sqrt(A_in + A_out), summed in
    entry order (xi_p alone where A_in = 0), A_p into ``area[p]``, whether it is fresh,
    and E[Y_p | X] = sum_q a_pq x_q / sqrt(A_p) with sum_q a_pq^2 / A_p if asked."""
    zig_accept, zig_width = shared_tables(accept, width_table)
    p = cuda.grid(1)
    height, width, channels = out.shape
    if p >= height * width:
        return
    i = p // width
    j = p - i * width
    acc = cuda.local.array(MAX_CHANNELS, float64)
    area_in, outside = _gather_target(p, offsets, sources, areas, scaled, inc, 0, acc, channels)
    total = area_in + outside
    area[p] = total
    fresh_base = np.uint64(p) * np.uint64(channels)
    if area_in > 0.0:
        fresh[p] = 0
        if outside > 0.0:
            root = math.sqrt(outside)
            for c in range(channels):
                # float64 draws, as the CPU's (a slow-path draw is not float32-exact).
                acc[c] += root * normal_with(fresh_offset, fresh_gamma, fresh_base + np.uint64(c),
                                             zig_accept, zig_width)  # fmt: skip
        inv = 1.0 / math.sqrt(total)
        for c in range(channels):
            out[i, j, c] = acc[c] * inv
        if cond_carried.size:
            _conditional_target(p, offsets, sources, scaled, 0, source_flat, inv, cond_mean,
                                cond_carried, acc)  # fmt: skip
    else:
        fresh[p] = 1
        fresh_target(p, i, j, fresh_offset, fresh_gamma, out, cond_mean, cond_carried,
                     zig_accept, zig_width)  # fmt: skip


WARP = 32
ROW_WARPS = 4  # rows per block of ``_row_stats``, a warp each


@cuda.jit
def _row_stats(area, fresh, claimed, start, target_stats, source_stats):
    """Per row i, in pixel order as the CPU: ``target_stats[i]`` = (fresh targets, min,
    sum, max A_p) and ``source_stats[i]`` = (over-claimed, unclaimed sources).

    A warp per row: its lanes stage 32 pixels at a time in shared memory (coalesced
    loads) and lane 0 folds them in order, so the sum is the CPU's, without one thread
    walking a whole row through global memory."""
    tile_area = cuda.shared.array((ROW_WARPS, WARP), float64)
    tile_flags = cuda.shared.array((ROW_WARPS, WARP), int32)
    lane = cuda.threadIdx.x % WARP
    w = cuda.threadIdx.x // WARP
    i = cuda.blockIdx.x * ROW_WARPS + w
    height = target_stats.shape[0]
    width = area.size // height
    n_fresh = 0.0
    low = math.inf
    total = 0.0
    high = 0.0
    over = 0
    empty = 0
    for base in range(0, width, WARP):  # the same trips for every thread of the block
        p = i * width + base + lane
        if i < height and base + lane < width:
            tile_area[w, lane] = area[p]
            flags = fresh[p]
            if overclaimed(claimed[p]):
                flags |= 2
            if start[p + 1] == start[p]:
                flags |= 4
            tile_flags[w, lane] = flags
        cuda.syncthreads()
        if lane == 0 and i < height:
            for k in range(min(WARP, width - base)):
                a = tile_area[w, k]
                flags = tile_flags[w, k]
                n_fresh += flags & 1
                low = min(low, a)
                total += a
                high = max(high, a)
                over += (flags >> 1) & 1
                empty += (flags >> 2) & 1
        cuda.syncthreads()
    if lane == 0 and i < height:
        target_stats[i, 0] = n_fresh
        target_stats[i, 1] = low
        target_stats[i, 2] = total
        target_stats[i, 3] = high
        source_stats[i, 0] = over
        source_stats[i, 1] = empty


# Every kernel of this driver with a signature it is launched with, for
# ``numba.cuda.compile_ptx`` checks (float32 frames, float64 maps).
KERNELS = {
    "_bounds": (_bounds, "(float64[:,:,::1], int64[::1])"),
    "_fill": (_fill, "(float64[:,:,::1], int64[::1], int32[::1], float64[::1], int64[::1])"),
    "_source_totals": (_source_totals, "(int32[::1], int64[::1], float64[::1], int64, "
                       "float64[::1], int64[::1])"),
    "_source_bridges": (_source_bridges, "(float32[:,:,::1], int32[::1], int64[::1], "
                        "float64[::1], float64[::1], int64[::1], uint64, uint64, uint64, "
                        "float32[:,::1], float64[::1], int64[::1], float32[::1])"),
    "_finish_targets": (_finish_targets, "(float32[:,::1], int64[::1], int32[::1], "
                        "float64[::1], float32[:,::1], float64[::1], uint64, uint64, "
                        "float32[:,:,::1], float64[::1], int32[::1], float32[:,::1], "
                        "float32[::1], int64[::1], float32[::1])"),
    "_row_stats": (_row_stats, "(float64[::1], int32[::1], float64[::1], int64[::1], "
                   "float64[:,::1], int64[:,::1])"),
}  # fmt: skip


class GridWorkspace:
    """Device buffers of one frame size, kept across frames: per-target and per-source
    arrays, and the record, which grows (with headroom) when a frame needs more."""

    def __init__(self, height: int, width: int, channels: int) -> None:
        npix = height * width
        self.shape = (height, width, channels)
        self.corners = cuda.device_array((height + 1, width + 1, 2), np.float64)
        self.slots = cuda.device_array(npix + 1, np.int64)
        self.offsets = cuda.device_array(npix + 1, np.int64)
        self.count = cuda.device_array(npix + 1, np.int64)  # the last entry stays 0
        self.dirty = True  # ``count`` is not all zero (a new one, or a frame cut short)
        self.start = cuda.device_array(npix + 1, np.int64)
        self.claimed = cuda.device_array(npix, np.float64)
        self.draws = cuda.device_array(npix, np.int64)
        self.draw_start = cuda.device_array(npix, np.int64)
        self.area = cuda.device_array(npix, np.float64)
        self.fresh = cuda.device_array(npix, np.int32)
        self.target_stats = cuda.device_array((height, 4), np.float64)
        self.source_stats = cuda.device_array((height, 2), np.int64)
        self.no_conditional = (
            cuda.device_array((0, channels), np.float32),
            cuda.device_array(0, np.float32),
        )
        self.scan_scratch: list = []  # both scans are of H*W + 1 values
        self.tables = device_tables()
        self.capacity = 0
        self._record: tuple = ()

    def record(self, entries: int):
        """``(sources, areas, order, inc, scaled)`` for a record of ``entries`` slots: views
        of buffers reallocated only when a frame needs more than they hold."""
        channels = self.shape[2]
        if entries > self.capacity:
            self._record = ()  # free the old buffers before allocating
            size = max(entries, int(entries * HEADROOM), 1)
            self._record = (
                cuda.device_array(size, np.int32),
                cuda.device_array(size, np.float64),
                cuda.device_array(size, np.int32),
                cuda.device_array(size * channels, np.float32),
                cuda.device_array(size, np.float64),
            )
            self.capacity = size
        sources, areas, order, inc, scaled = self._record
        return (
            sources[:entries],
            areas[:entries],
            order[:entries],
            inc[: entries * channels].reshape(entries, channels),
            scaled[:entries],
        )


def workspace(height: int, width: int, channels: int) -> GridWorkspace:
    """The device buffers for this frame size (only the latest size is kept)."""
    shape = (height, width, channels)
    return device_workspace("grid", shape, lambda: GridWorkspace(*shape))


def grid_warp(noise, centres, corners, bridge_stream, fresh_stream, out=None, conditional=None,
              on_stage=None):  # fmt: skip
    """Warp one frame on the GPU. ``noise`` float32 [H, W, C] and ``centres`` float64
    [H, W, 2] are validated, C-contiguous device arrays; ``corners`` is T at the pixel
    corners [H+1, W+1, 2] (a validated host or device array) or None to interpolate it
    from ``centres`` as the CPU does; ``out`` (optional) receives the frame;
    ``conditional`` is None or a pair of flat device buffers (mean [H*W, C], carried
    [H*W]) to receive E[Y | X]; ``on_stage`` (optional) is called with each name of
    ``STAGES`` it runs just before that stage's first launch (benchmarks/gpu.py records
    a CUDA event there). Returns ``(out, stats)`` with ``out`` on the device and the CPU
    driver's diagnostics, ``entries`` included.
    """
    height, width, channels = noise.shape
    check_channels(channels)
    check_sizes(height, width)
    mark = on_stage or unmarked
    ws = workspace(height, width, channels)
    if out is None:
        out = cuda.device_array((height, width, channels), np.float32)
    cond_mean, cond_carried = conditional if conditional is not None else ws.no_conditional
    npix = height * width
    threads = config.THREADS
    grid = blocks(npix, threads)
    corners = device_corners(centres, corners, ws.corners, mark)
    mark("bounds")
    _bounds[blocks(npix + 1, threads), threads](corners, ws.slots)
    exclusive_scan(ws.slots, ws.offsets, ws.scan_scratch)
    entries = int(ws.offsets[npix : npix + 1].copy_to_host()[0])
    check_sizes(height, width, entries)
    sources, areas, order, inc, scaled = ws.record(entries)
    if ws.dirty:
        zero(ws.count)
    ws.dirty = True
    mark("fill")
    _fill[grid, threads](corners, ws.offsets, sources, areas, ws.count)
    exclusive_scan(ws.count, ws.start, ws.scan_scratch)
    mark("scatter")
    scatter[blocks(entries, threads), threads](sources, ws.start, ws.count, order)
    ws.dirty = False
    mark("sort")
    sort_buckets[grid, threads](ws.start, order)
    mark("source_totals")
    _source_totals[grid, threads](order, ws.start, areas, channels, ws.claimed, ws.draws)
    row_scan(ws.draws, ws.draw_start, width)
    row_span = np.uint64(entries * channels)  # the CPU's: more than any source row draws
    mark("source_bridges")
    _source_bridges[grid, threads](noise, order, ws.start, areas, ws.claimed, ws.draw_start,
                                   row_span, *bridge_stream, inc, scaled,
                                   *ws.tables)  # fmt: skip
    source_flat = noise.reshape(npix, channels)
    mark("finish_targets")
    _finish_targets[grid, threads](source_flat, ws.offsets, sources, areas, inc, scaled,
                                   *fresh_stream, out, ws.area, ws.fresh, cond_mean,
                                   cond_carried, *ws.tables)  # fmt: skip
    mark("row_stats")
    _row_stats[blocks(height, ROW_WARPS), ROW_WARPS * WARP](ws.area, ws.fresh, ws.claimed,
                                                           ws.start, ws.target_stats,
                                                           ws.source_stats)  # fmt: skip
    source_stats = ws.source_stats.copy_to_host()
    stats = {
        **target_summary(ws.target_stats.copy_to_host(), npix),
        "overclaimed_sources": int(source_stats[:, 0].sum()),
        "unclaimed_sources": int(source_stats[:, 1].sum()),
        "entries": int(ws.start[npix : npix + 1].copy_to_host()[0]),
    }
    return out, stats
