"""Device arrays in and out, and the small device primitives the drivers share:
zero fills, prefix scans and finiteness checks.

Arrays that expose ``__cuda_array_interface__`` (numba device arrays, torch CUDA
tensors, CuPy arrays) are used in place, without a host copy.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from numba import cuda, int64

from noisewarp.cuda import config

__all__ = [
    "shares_memory",
    "is_device_array",
    "as_device",
    "blocks",
    "check_channels",
    "device_workspace",
    "zero",
    "exclusive_scan",
    "row_scan",
    "block_sum",
    "block_min_max",
    "has_nonfinite",
]

SCAN_TILE = config.SCAN_TILE
SCAN_ITEMS = config.SCAN_ITEMS
MAX_THREADS = config.MAX_THREADS


def is_device_array(array) -> bool:
    """Whether ``array`` lives on a CUDA device (``__cuda_array_interface__``; numba's
    simulated device arrays too)."""
    return hasattr(array, "__cuda_array_interface__") or type(array).__module__.startswith(
        "numba.cuda.simulator"
    )


def as_device(array, dtype, what: str):
    """A C-contiguous device array of ``dtype``: a device array is used in place (its
    dtype must match), a host array is copied to the device."""
    if is_device_array(array):
        # numba's own device arrays as they are; anything else (torch, CuPy) viewed.
        view = array if hasattr(array, "copy_to_host") else cuda.as_cuda_array(array)
        if view.dtype != np.dtype(dtype):
            raise TypeError(f"{what} on the GPU must be {np.dtype(dtype)}, got {view.dtype}")
        if not view.is_c_contiguous():
            raise ValueError(f"{what} on the GPU must be C-contiguous")
        return view
    return cuda.to_device(np.ascontiguousarray(array, dtype=dtype))


def shares_memory(a, b) -> bool:
    """Whether two C-contiguous device arrays overlap (their byte spans; under numba's
    simulator, the host arrays behind them)."""
    from numba import config

    if config.ENABLE_CUDASIM:
        return bool(np.shares_memory(a._ary, b._ary))
    start_a = a.__cuda_array_interface__["data"][0]
    start_b = b.__cuda_array_interface__["data"][0]
    return start_a < start_b + b.nbytes and start_b < start_a + a.nbytes


_local = threading.local()


def device_workspace(kind: str, shape: tuple, build):
    """The device buffers of ``kind`` (a driver) for ``shape`` on the current device, built
    by ``build()`` when the shape changes; only the latest shape of each kind is kept.
    Held per Python thread, as the CPU's work arrays, so drivers running in several threads
    never share scratch, and per device, so buffers never cross to another GPU."""
    held_here = getattr(_local, "held", None)
    if held_here is None:
        held_here = _local.held = {}
    key = (kind, getattr(cuda.get_current_device(), "id", 0))  # the simulator has no id
    held = held_here.get(key)
    if held is None or held[0] != shape:
        held_here.pop(key, None)  # free the old buffers before building new ones
        held = held_here[key] = (shape, build())
    return held[1]


def release() -> None:
    """Frees the device buffers this thread holds."""
    _local.held = {}


def check_channels(channels: int) -> None:
    """The kernels' local arrays hold at most MAX_CHANNELS channels."""
    if channels > config.MAX_CHANNELS:
        raise ValueError(
            f"the CUDA kernels take at most {config.MAX_CHANNELS} channels, got {channels}"
        )


def blocks(count: int, threads: int) -> int:
    """Blocks of ``threads`` covering ``count`` items (at least one)."""
    return max(1, math.ceil(count / threads))


@cuda.jit
def _zero(values):
    i = cuda.grid(1)
    if i < values.size:
        values[i] = 0


def zero(values) -> None:
    """Set a 1-D device array to zero."""
    _zero[blocks(values.size, config.THREADS), config.THREADS](values)


@cuda.jit(device=True)
def _scan_block(shared, value):
    """Exclusive scan of one value per thread across the block (every thread calls):
    returns (this thread's prefix, the block's total). Hillis-Steele in shared memory:
    a fixed order, no atomics."""
    t = cuda.threadIdx.x
    n = cuda.blockDim.x
    shared[t] = value
    cuda.syncthreads()
    step = 1
    while step < n:
        x = shared[t - step] if t >= step else 0
        cuda.syncthreads()
        shared[t] += x
        cuda.syncthreads()
        step *= 2
    inclusive = shared[t]
    total = shared[n - 1]
    cuda.syncthreads()  # the caller may reuse ``shared``
    return inclusive - value, total


@cuda.jit(device=True)
def _scan_run(values, out, base, first, stop, carry):
    """Write the exclusive prefixes of ``values[base + first : base + stop]`` (at most
    SCAN_ITEMS of them, this thread's run) starting from ``carry``."""
    run = carry
    for e in range(first, min(first + SCAN_ITEMS, stop)):
        v = values[base + e]
        out[base + e] = run
        run += v


@cuda.jit(device=True)
def _run_sum(values, base, first, stop):
    total = 0
    for e in range(first, min(first + SCAN_ITEMS, stop)):
        total += values[base + e]
    return total


@cuda.jit
def _scan_tiles(values, out, sums):
    """Exclusive scan of each block's tile (SCAN_ITEMS values per thread) of ``values``
    into ``out``; the tile's total into ``sums[block]``."""
    shared = cuda.shared.array(SCAN_TILE, int64)
    first = (cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x) * SCAN_ITEMS
    prefix, total = _scan_block(shared, _run_sum(values, 0, first, values.size))
    _scan_run(values, out, 0, first, values.size, prefix)
    if cuda.threadIdx.x == 0:
        sums[cuda.blockIdx.x] = total


@cuda.jit
def _add_tile_offsets(out, offsets):
    i = cuda.grid(1)
    if i < out.size:
        out[i] += offsets[i // (SCAN_TILE * SCAN_ITEMS)]


@cuda.jit
def _scan_rows(values, out, width):
    """Exclusive scan within each row of ``width`` values (one block per row)."""
    shared = cuda.shared.array(SCAN_TILE, int64)
    base = cuda.blockIdx.x * width
    carry = 0
    for tile in range(0, width, cuda.blockDim.x * SCAN_ITEMS):
        first = tile + cuda.threadIdx.x * SCAN_ITEMS
        prefix, total = _scan_block(shared, _run_sum(values, base, first, width))
        _scan_run(values, out, base, first, width, carry + prefix)
        carry += total


def exclusive_scan(values, out, scratch: list) -> None:
    """``out[i] = sum(values[:i])`` for 1-D int64 device arrays, exact and deterministic.

    ``scratch`` is a list the caller keeps between calls: it holds the per-level tile
    sums, allocated on first use.
    """
    tile = SCAN_TILE * SCAN_ITEMS
    level = 0
    pending = []
    while True:
        nb = blocks(values.size, tile)
        if len(scratch) <= level or scratch[level][0].size != nb:
            held = (cuda.device_array(nb, np.int64), cuda.device_array(nb, np.int64))
            scratch[level:level + 1] = [held]  # fmt: skip
        sums, offsets = scratch[level]
        _scan_tiles[nb, SCAN_TILE](values, out, sums)
        if nb == 1:
            break
        pending.append((out, offsets))
        values, out = sums, offsets
        level += 1
    for out, offsets in reversed(pending):
        _add_tile_offsets[blocks(out.size, config.THREADS), config.THREADS](out, offsets)


def row_scan(values, out, width: int) -> None:
    """``out`` = the exclusive prefix sums of ``values`` within each row of ``width``
    (1-D int64 device arrays of rows * width values), in one launch."""
    _scan_rows[values.size // width, SCAN_TILE](values, out, width)


@cuda.jit(device=True)
def block_sum(shared, value):
    """The sum of one float64 per thread over the block, returned to every thread (every
    thread calls; blockDim a power of two at most MAX_THREADS). Fixed tree order."""
    t = cuda.threadIdx.x
    shared[t] = value
    cuda.syncthreads()
    half = cuda.blockDim.x // 2
    while half > 0:
        if t < half:
            shared[t] += shared[t + half]
        cuda.syncthreads()
        half //= 2
    total = shared[0]
    cuda.syncthreads()
    return total


@cuda.jit(device=True)
def block_min_max(shared, low, high):
    """(min of ``low``, max of ``high``) over the block, as ``block_sum``."""
    t = cuda.threadIdx.x
    n = cuda.blockDim.x
    shared[t] = low
    shared[n + t] = high
    cuda.syncthreads()
    half = n // 2
    while half > 0:
        if t < half:
            shared[t] = min(shared[t], shared[t + half])
            shared[n + t] = max(shared[n + t], shared[n + t + half])
        cuda.syncthreads()
        half //= 2
    result = (shared[0], shared[n])
    cuda.syncthreads()
    return result


@cuda.jit
def _nonfinite(values, flag):
    i = cuda.grid(1)
    if i < values.size and not math.isfinite(values[i]):
        flag[0] = 1  # any writer sets the same value: no race on the result


def has_nonfinite(array) -> bool:
    """Whether a device array holds any NaN or Inf."""
    flat = array.reshape(array.size) if array.ndim != 1 else array
    flag = cuda.to_device(np.zeros(1, dtype=np.int32))
    _nonfinite[blocks(flat.size, config.THREADS), config.THREADS](flat, flag)
    return bool(flag.copy_to_host()[0])


def check_device_array(array, shape: tuple, dtype, what: str):
    """A device array (torch CUDA tensor, ...) viewed in place after checking its shape
    (None matches any size), dtype, layout and values; errors name ``what``."""
    view = as_device(array, dtype, what)
    if view.ndim != len(shape) or any(
        want is not None and got != want for got, want in zip(view.shape, shape, strict=True)
    ):
        expected = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{what} on the GPU has shape {tuple(view.shape)}, expected {expected}")
    if has_nonfinite(view):
        raise ValueError(f"{what} on the GPU contains non-finite values (NaN or Inf)")
    return view


# Every kernel here with the signature it is launched with (``noisewarp.cuda.ptx``).
KERNELS = {
    "_zero": (_zero, "(int64[::1],)"),
    "_scan_tiles": (_scan_tiles, "(int64[::1], int64[::1], int64[::1])"),
    "_add_tile_offsets": (_add_tile_offsets, "(int64[::1], int64[::1])"),
    "_scan_rows": (_scan_rows, "(int64[::1], int64[::1], int64)"),
    "_nonfinite": (_nonfinite, "(float32[::1], int32[::1])"),
    "_nonfinite_map": (_nonfinite, "(float64[::1], int32[::1])"),
}
