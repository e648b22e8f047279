"""Work arrays kept between frames.

A video warps frame after frame at one size: allocating a few hundred MB of
work arrays for every frame costs page faults that show in the timings, so
drivers keep them here, per Python thread (drivers may run concurrently in
several threads). ``workspace`` holds a set of arrays per (kernel, shape);
``grow`` holds arrays whose size changes from frame to frame (a partition
record), reallocated only when a frame needs more than the one held.
``release()`` frees them all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

__all__ = ["workspace", "grow", "release", "held_bytes"]

# Room added when a grown array is reallocated, so a slowly growing record
# (a zoom that accelerates) does not reallocate every frame.
_HEADROOM = 1.125

_local = threading.local()


def workspace(kind: str, shape: tuple, build: Callable[[], dict[str, np.ndarray]]) -> dict:
    """The work arrays of ``kind`` for ``shape``, built by ``build()`` when the shape changes.

    Only the most recent shape of each kind is kept.
    """
    cache = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = {}
    held = cache.get(kind)
    if held is None or held[0] != shape:
        cache.pop(kind, None)  # free the old arrays before building new ones
        held = cache[kind] = (shape, build())
    return held[1]


def grow(kind: str, name: str, size: int, dtype) -> np.ndarray:
    """A 1-D array of ``size`` elements of ``dtype`` (uninitialised), kept between calls.

    The array held under (``kind``, ``name``) is reused while it is large enough
    (the result is a view of its first ``size`` elements), and replaced by one
    ``_HEADROOM`` times larger when it is not.
    """
    cache = getattr(_local, "grown", None)
    if cache is None:
        cache = _local.grown = {}
    dtype = np.dtype(dtype)
    held = cache.get((kind, name))
    if held is None or held.dtype != dtype or held.size < size:
        cache.pop((kind, name), None)  # free the old array before allocating
        held = cache[(kind, name)] = np.empty(max(size, int(size * _HEADROOM)), dtype=dtype)
    return held[:size]


def release() -> None:
    """Free every work array held by the calling thread."""
    _local.cache = {}
    _local.grown = {}


def held_bytes() -> int:
    """Bytes of the work arrays held by the calling thread."""
    cache = getattr(_local, "cache", {})
    grown = getattr(_local, "grown", {})
    total = sum(a.nbytes for _, arrays in cache.values() for a in arrays.values())
    return total + sum(a.nbytes for a in grown.values())
