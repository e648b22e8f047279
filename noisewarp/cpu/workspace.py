"""Work arrays kept between frames.

A video warps frame after frame at one size: allocating a few hundred MB of
work arrays for every frame costs page faults that show in the timings, so
drivers keep them here, one set per (kernel, shape) and per Python thread
(drivers may run concurrently in several threads). ``release()`` frees them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

__all__ = ["workspace", "release"]

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


def release() -> None:
    """Free every work array held by the calling thread."""
    _local.cache = {}
