"""Deterministic parallel counting sort: the index behind every partition record.

Kernels produce one key per item (a source cell, or -1 for "no source") in
item order; the sort returns, for every key, the items carrying it in
increasing item order. The result is the same for any number of threads or
chunks, which keeps every sum taken over it bit-reproducible. No atomics are
needed: each chunk counts into its own histogram row and places its items into
offsets that no other chunk touches.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

__all__ = ["counting_sort"]


@njit(parallel=True, cache=True)
def _histograms(keys, nbins, nchunks):
    n = keys.size
    counts = np.zeros((nchunks, nbins), dtype=np.int64)
    for c in prange(nchunks):
        lo = c * n // nchunks
        hi = (c + 1) * n // nchunks
        row = counts[c]
        for i in range(lo, hi):
            k = keys[i]
            if k >= 0:
                row[k] += 1
    return counts


@njit(cache=True)
def _offsets(counts):
    """Exclusive scan in (bin, chunk) order: chunk ``c``'s items of bin ``b`` start
    after every earlier bin and after chunks ``< c`` of bin ``b``."""
    nchunks, nbins = counts.shape
    start = np.empty(nbins + 1, dtype=np.int64)
    total = 0
    for b in range(nbins):
        start[b] = total
        for c in range(nchunks):
            n = counts[c, b]
            counts[c, b] = total
            total += n
    start[nbins] = total
    return start


@njit(parallel=True, cache=True)
def _place(keys, cursor, order):
    nchunks = cursor.shape[0]
    n = keys.size
    for c in prange(nchunks):
        lo = c * n // nchunks
        hi = (c + 1) * n // nchunks
        row = cursor[c]
        for i in range(lo, hi):
            k = keys[i]
            if k >= 0:
                order[row[k]] = i
                row[k] += 1


@njit(cache=True)
def counting_sort(keys, nbins, nchunks):
    """Stable counting sort of ``keys`` (int, ``-1`` = skip) into ``nbins`` bins.

    Returns ``(start, order)``: the items of bin ``b`` are
    ``order[start[b]:start[b + 1]]``, in increasing item index. ``nchunks`` only
    sets how work is split; the result does not depend on it.
    """
    counts = _histograms(keys, nbins, nchunks)
    start = _offsets(counts)
    order = np.empty(start[nbins], dtype=np.int32)
    _place(keys, counts, order)
    return start, order


def default_chunks() -> int:
    """One chunk per Numba thread (the result is the same for any choice)."""
    return max(1, numba.get_num_threads())
