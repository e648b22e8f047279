"""Device arrays in and out, and the small device primitives the drivers share:
zero fills, prefix scans and finiteness checks.

Arrays that expose ``__cuda_array_interface__`` (numba device arrays, torch CUDA
tensors, CuPy arrays) are used in place, without a host copy.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, int64

from noisewarp.cuda import config

__all__ = [
    "is_device_array",
    "as_device",
    "blocks",
    "zero",
    "exclusive_scan",
    "has_nonfinite",
]

SCAN_TILE = config.SCAN_TILE


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


@cuda.jit
def _scan_tiles(values, out, sums):
    """Exclusive scan of each block's tile of ``values`` into ``out``; the tile's total
    into ``sums[block]`` (Hillis-Steele in shared memory: fixed order, no atomics)."""
    tile = cuda.shared.array(SCAN_TILE, int64)
    t = cuda.threadIdx.x
    i = cuda.blockIdx.x * SCAN_TILE + t
    v = values[i] if i < values.size else 0
    tile[t] = v
    cuda.syncthreads()
    step = 1
    while step < SCAN_TILE:
        x = tile[t - step] if t >= step else 0
        cuda.syncthreads()
        tile[t] += x
        cuda.syncthreads()
        step *= 2
    if i < values.size:
        out[i] = tile[t] - v
    if t == SCAN_TILE - 1:
        sums[cuda.blockIdx.x] = tile[t]


@cuda.jit
def _add_tile_offsets(out, offsets):
    i = cuda.grid(1)
    if i < out.size:
        out[i] += offsets[i // SCAN_TILE]


def exclusive_scan(values, out, scratch: list) -> None:
    """``out[i] = sum(values[:i])`` for 1-D int64 device arrays, exact and deterministic.

    ``scratch`` is a list the caller keeps between calls: it holds the per-level tile
    sums, allocated on first use.
    """
    level = 0
    pending = []
    while True:
        n = values.size
        nb = blocks(n, SCAN_TILE)
        if len(scratch) <= level:
            scratch.append((cuda.device_array(nb, np.int64), cuda.device_array(nb, np.int64)))
        sums, offsets = scratch[level]
        if sums.size != nb:
            sums, offsets = scratch[level] = (
                cuda.device_array(nb, np.int64),
                cuda.device_array(nb, np.int64),
            )
        _scan_tiles[nb, SCAN_TILE](values, out, sums)
        if nb == 1:
            break
        pending.append((out, offsets, nb))
        values, out = sums, offsets
        level += 1
    for out, offsets, nb in reversed(pending):
        _add_tile_offsets[nb, SCAN_TILE](out, offsets)


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
    "_nonfinite": (_nonfinite, "(float32[::1], int32[::1])"),
    "_nonfinite_map": (_nonfinite, "(float64[::1], int32[::1])"),
}
