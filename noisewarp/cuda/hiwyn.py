"""HIWYN on the GPU (the CUDA twin of ``cpu/hiwyn.py``): the same field, the same scan
conversion and the same counters, so one key gives the same frame on both backends.

1. ``_upsample`` (a thread per source pixel and channel): its n^2 sub-pixels
   s = x_q / n + (z - mean(z)), z from counters (q, channel, sub-pixel) as the CPU's
   fill; the draws are made twice (the mean, then the field) rather than held.
2. ``_rasterise`` (a thread per target): the CPU's per-target body, sub-pixel rows in the
   same order (``core.raster``), Y_p = sum_{K_p} s / sqrt(|K_p|), the sub-pixel containing
   T(p) where K_p is empty, fresh draws outside the frame; |K_p| and whether the target
   is fresh per target, E[Y_p | X] if asked (sum_q |K_pq|^2 from the spans again, per
   source row and column of the quad's box, instead of the CPU's per-row column counts).

The field (float32 [H n, W n, C], 1 GiB at 1024 x 1024 x 4 and n = 8) and the
per-target arrays stay on the device between frames. Sums run in the CPU's order with
no atomics; NVVM's fused multiply-adds can move a float64 in its last bit, which float32
rounding of the field and the frame almost always hides.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64

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
from noisewarp.core.rng import normal_with
from noisewarp.cuda import config
from noisewarp.cuda.arrays import blocks, check_channels, device_workspace
from noisewarp.cuda.primitives import device_corners, device_tables, shared_tables, unmarked

__all__ = ["hiwyn_warp", "HiwynWorkspace", "KERNELS", "STAGES"]

MAX_CHANNELS = config.MAX_CHANNELS
# The driver's stages in launch order (``corner_map`` only when it interpolates corners).
STAGES = ("corner_map", "upsample", "rasterise")

_scale_target = cuda.jit(device=True)(scale_target.py_func)
_centre_subpixel = cuda.jit(device=True)(centre_subpixel.py_func)
_quad_corners = cuda.jit(device=True)(quad_corners.py_func)


@cuda.jit
def _upsample(noise, n, offset, gamma, field, accept, width_table):
    """field[i n + a, j n + b, c] = x[i, j, c] / n + z_ab - mean(z), z from counters
    q C n^2 + c n^2 + (a n + b) (float64 draws, as the CPU's fill into a float64 buffer)."""
    zig_accept, zig_width = shared_tables(accept, width_table)
    k = cuda.grid(1)
    height, width, channels = noise.shape
    if k >= height * width * channels:
        return
    q = k // channels
    c = k - q * channels
    i = q // width
    j = q - i * width
    nsub = n * n
    base = np.uint64(q) * np.uint64(channels * nsub) + np.uint64(c * nsub)
    total = 0.0
    for t in range(nsub):
        total += normal_with(offset, gamma, base + np.uint64(t), zig_accept, zig_width)
    # float64 as the CPU's (NumPy 2 keeps a float32 op a Python float float32 in the simulator).
    shift = np.float64(noise[i, j, c]) * (1.0 / n) - total * (1.0 / nsub)
    for a in range(n):
        for b in range(n):
            z = normal_with(offset, gamma, base + np.uint64(a * n + b), zig_accept, zig_width)
            field[i * n + a, j * n + b, c] = z + shift


@cuda.jit(device=True)
def _draw(offset, gamma, counter, zig_accept, zig_width):
    """``normal_with`` at a ``core.raster`` counter (np.uint64 again: under the simulator
    the njit function returns it as a Python int, which numba would take for an int64)."""
    return normal_with(offset, gamma, np.uint64(counter), zig_accept, zig_width)


@cuda.jit(device=True)
def _fresh_target(p, i, j, offset, gamma, out, cond_mean, cond_carried, zig_accept, zig_width):
    """A whole target drawn fresh (its counters ``core.raster.target_counter``), and
    E[Y_p | X] = 0 if asked."""
    for c in range(out.shape[2]):
        out[i, j, c] = _draw(offset, gamma, target_counter(p, c), zig_accept, zig_width)
    if cond_carried.size:
        for c in range(out.shape[2]):
            cond_mean[p, c] = 0.0
        cond_carried[p] = 0.0


@cuda.jit(device=True)
def _add_span(field, sub_row, k_lo, k_hi, acc, channels, offset, gamma, zig_accept, zig_width):
    """The CPU's ``_add_span``: sub-pixels [k_lo, k_hi) of ``sub_row`` into ``acc``, fresh
    ones outside the frame. Returns (added, how many were in the frame)."""
    if k_hi <= k_lo:
        return 0, 0
    in_lo = k_lo
    in_hi = k_lo
    if sub_row >= 0 and sub_row < field.shape[0]:
        in_lo = min(max(k_lo, 0), field.shape[1])
        in_hi = max(min(k_hi, field.shape[1]), in_lo)
        for k in range(in_lo, in_hi):
            for c in range(channels):
                acc[c] += field[sub_row, k, c]
    for k in range(k_lo, in_lo):
        for c in range(channels):
            acc[c] += _draw(offset, gamma, outside_counter(sub_row, k, c), zig_accept, zig_width)
    for k in range(in_hi, k_hi):
        for c in range(channels):
            acc[c] += _draw(offset, gamma, outside_counter(sub_row, k, c), zig_accept, zig_width)
    return k_hi - k_lo, in_hi - in_lo


@cuda.jit(device=True)
def _span_sources(noise, n, sub_row, k_lo, k_hi, n_cols, mean, channels):
    """The CPU's ``_span_sources`` without its column counts: each in-frame sub-pixel of
    [k_lo, k_hi) adds x_q / n of its source q to ``mean`` (times n here, as the CPU)."""
    lo = min(max(k_lo, 0), n_cols)
    hi = max(min(k_hi, n_cols), lo)
    if hi == lo:
        return
    row = sub_row // n
    for col in range(lo // n, (hi - 1) // n + 1):
        count = min(hi, (col + 1) * n) - max(lo, col * n)
        for c in range(channels):
            mean[c] += count * np.float64(noise[row, col, c])


@cuda.jit(device=True)
def _spans(r0, c0, r1, c1, r2, c2, r3, c3, n, s):
    """Sub-pixel row s's spans in the quad, (lo, hi) twice (empty as (0, 0))."""
    y = (s + 0.5) / n
    a, b, cc, d = sort4(crossing(r0, c0, r1, c1, y), crossing(r1, c1, r2, c2, y),
                        crossing(r2, c2, r3, c3, y), crossing(r3, c3, r0, c0, y))  # fmt: skip
    lo0 = hi0 = lo1 = hi1 = np.int64(0)
    if b < math.inf:
        lo0 = column(a, n)
        hi0 = column(b, n)
    if d < math.inf:
        lo1 = column(cc, n)
        hi1 = column(d, n)
    return lo0, hi0, lo1, hi1


@cuda.jit(device=True)
def _overlap(lo, hi, first, last):
    """Sub-pixels of the span [lo, hi) within the columns [first, last)."""
    return max(min(hi, last) - max(lo, first), 0)


@cuda.jit(device=True)
def _carried_square(r0, c0, r1, c1, r2, c2, r3, c3, n, cmin, cmax, s_lo, s_hi, n_rows, n_cols):
    """sum_q |K_pq|^2 over the in-frame sources: for each source row, each source column of
    the quad's bounding box counts its sub-pixels in the row's spans (integers: any order
    sums exactly)."""
    square = 0.0
    col_lo = max(np.int64(math.floor(cmin)), 0)
    col_hi = min(np.int64(math.floor(cmax)), n_cols // n - 1)
    s = max(s_lo, 0)
    stop = min(s_hi, n_rows)
    while s < stop:
        row_end = min(stop, (s // n + 1) * n)
        for col in range(col_lo, col_hi + 1):
            count = 0
            for t in range(s, row_end):
                lo0, hi0, lo1, hi1 = _spans(r0, c0, r1, c1, r2, c2, r3, c3, n, t)
                count += _overlap(lo0, hi0, col * n, (col + 1) * n)
                count += _overlap(lo1, hi1, col * n, (col + 1) * n)
            square += count * count
        s = row_end
    return square


@cuda.jit
def _rasterise(field, corners, centres, n, offset, gamma, out, counts, fresh, noise, cond_mean,
               cond_carried, accept, width_table):  # fmt: skip
    """Per target p, the CPU's ``_rasterise`` body: Y_p, ``counts[p]`` = |K_p|,
    ``fresh[p]`` = 1 when no sub-pixel of the frame reaches it, E[Y_p | X] if asked."""
    zig_accept, zig_width = shared_tables(accept, width_table)
    p = cuda.grid(1)
    height, width, channels = out.shape
    if p >= height * width:
        return
    i = p // width
    j = p - i * width
    n_rows = field.shape[0]
    n_cols = field.shape[1]
    wanted = cond_carried.size > 0
    r0, c0, r1, c1, r2, c2, r3, c3 = _quad_corners(corners, i, j)
    rmin, rmax, cmin, cmax = box(r0, c0, r1, c1, r2, c2, r3, c3)
    if rmax <= 0.0 or rmin >= height or cmax <= 0.0 or cmin >= width:
        # Entirely outside the frame: one fresh N(0, 1) per channel, as the CPU.
        fresh[p] = 1
        counts[p] = 0
        _fresh_target(p, i, j, offset, gamma, out, cond_mean, cond_carried, zig_accept, zig_width)
        return
    acc = cuda.local.array(MAX_CHANNELS, float64)
    mean = cuda.local.array(MAX_CHANNELS, float64)
    for c in range(channels):
        acc[c] = 0.0
        mean[c] = 0.0
    count = 0
    inside = 0
    # Sub-pixel rows whose centre line (s + 0.5) / n lies in [rmin, rmax).
    s_lo = np.int64(math.ceil(rmin * n - 0.5))
    s_hi = np.int64(math.ceil(rmax * n - 0.5))
    for s in range(s_lo, s_hi):
        lo0, hi0, lo1, hi1 = _spans(r0, c0, r1, c1, r2, c2, r3, c3, n, s)
        if wanted and s >= 0 and s < n_rows:
            _span_sources(noise, n, s, lo0, hi0, n_cols, mean, channels)
            _span_sources(noise, n, s, lo1, hi1, n_cols, mean, channels)
        added, added_in = _add_span(field, s, lo0, hi0, acc, channels, offset, gamma, zig_accept,
                                    zig_width)  # fmt: skip
        count += added
        inside += added_in
        added, added_in = _add_span(field, s, lo1, hi1, acc, channels, offset, gamma, zig_accept,
                                    zig_width)  # fmt: skip
        count += added
        inside += added_in
    fresh[p] = 1 if inside == 0 else 0
    counts[p] = count
    if count > 0:
        _scale_target(acc, mean, count, n, i, j, p, out, cond_mean, wanted)
        if wanted:
            square = _carried_square(r0, c0, r1, c1, r2, c2, r3, c3, n, cmin, cmax, s_lo, s_hi,
                                     n_rows, n_cols)  # fmt: skip
            cond_carried[p] = square / (n * n * count)
        return
    if not _centre_subpixel(field, noise, centres, n, i, j, p, out, cond_mean, cond_carried,
                            wanted):  # fmt: skip
        _fresh_target(p, i, j, offset, gamma, out, cond_mean, cond_carried, zig_accept, zig_width)


# Every kernel of this driver with a signature it is launched with, for
# ``numba.cuda.compile_ptx`` checks (float32 frames, float64 maps).
KERNELS = {
    "_upsample": (_upsample, "(float32[:,:,::1], int64, uint64, uint64, float32[:,:,::1], "
                  "int64[::1], float32[::1])"),
    "_rasterise": (_rasterise, "(float32[:,:,::1], float64[:,:,::1], float64[:,:,::1], int64, "
                   "uint64, uint64, float32[:,:,::1], int64[::1], int32[::1], float32[:,:,::1], "
                   "float32[:,::1], float32[::1], int64[::1], float32[::1])"),
}  # fmt: skip


class HiwynWorkspace:
    """Device buffers of one frame size and n, kept across frames: the field, the corners
    and the per-target counts and flags."""

    def __init__(self, height: int, width: int, channels: int, n: int) -> None:
        npix = height * width
        self.shape = (height, width, channels, n)
        self.field = cuda.device_array((height * n, width * n, channels), np.float32)
        self.corners = cuda.device_array((height + 1, width + 1, 2), np.float64)
        self.counts = cuda.device_array(npix, np.int64)
        self.fresh = cuda.device_array(npix, np.int32)
        self.no_conditional = (
            cuda.device_array((0, channels), np.float32),
            cuda.device_array(0, np.float32),
        )
        self.tables = device_tables()


def _check_field_fits(height: int, width: int, channels: int, n: int) -> None:
    """A clear error before allocating a field larger than the device's free memory."""
    need = height * width * channels * n * n * 4
    try:
        free, _ = cuda.current_context().get_memory_info()
    except Exception:  # the simulator has no memory to report
        return
    if need > free:
        raise MemoryError(
            f"hiwyn n={n} at {height}x{width}x{channels} needs {need / 2**30:.1f} GiB of GPU "
            f"memory for its upsampled field (it grows as n^2); {free / 2**30:.1f} GiB are "
            "free. Use a smaller n, or grid/particle (the n -> infinity limit without it)."
        )


def workspace(height: int, width: int, channels: int, n: int) -> HiwynWorkspace:
    """The device buffers for this frame size and n (only the latest are kept)."""
    shape = (height, width, channels, n)

    def build():
        _check_field_fits(height, width, channels, n)
        return HiwynWorkspace(*shape)

    return device_workspace("hiwyn", shape, build)


def hiwyn_warp(noise, centres, corners, n, subpixel_stream, fresh_stream, out=None,
               conditional=None, on_stage=None):  # fmt: skip
    """Warp one frame on the GPU with upsampling factor ``n``. ``noise`` float32 [H, W, C]
    and ``centres`` float64 [H, W, 2] are validated, C-contiguous device arrays;
    ``corners`` is T at the pixel corners [H+1, W+1, 2] (host or device) or None to
    interpolate it from ``centres`` as the CPU does; ``out``, ``conditional`` and
    ``on_stage`` as ``cuda.grid.grid_warp``'s. Returns ``(out, stats)`` with the CPU
    driver's diagnostics (|K_p| and the fresh flags come to the host to be reduced).
    """
    height, width, channels = noise.shape
    check_channels(channels)
    mark = on_stage or unmarked
    ws = workspace(height, width, channels, n)
    if out is None:
        out = cuda.device_array((height, width, channels), np.float32)
    cond_mean, cond_carried = conditional if conditional is not None else ws.no_conditional
    npix = height * width
    threads = config.THREADS
    corners = device_corners(centres, corners, ws.corners, mark)
    mark("upsample")
    _upsample[blocks(npix * channels, threads), threads](noise, n, *subpixel_stream, ws.field,
                                                         *ws.tables)  # fmt: skip
    mark("rasterise")
    _rasterise[blocks(npix, threads), threads](ws.field, corners, centres, n, *fresh_stream, out,
                                               ws.counts, ws.fresh, noise, cond_mean,
                                               cond_carried, *ws.tables)  # fmt: skip
    areas = ws.counts.copy_to_host() / float(n * n)
    counts_zero = int(np.count_nonzero(areas == 0.0))
    stats = {
        "fresh_pixels": int(ws.fresh.copy_to_host().sum()),
        "overclaimed_sources": -1,
        "unclaimed_sources": -1,
        "area_min": float(areas.min()),
        "area_mean": float(areas.mean()),
        "area_max": float(areas.max()),
        "empty_targets": counts_zero,
        "n": int(n),
    }
    return out, stats
