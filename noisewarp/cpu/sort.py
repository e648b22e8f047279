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

__all__ = ["counting_sort", "counting_sort_into", "scan_offsets", "default_chunks"]

# Bins per block of the parallel exclusive scan.
_SCAN_BLOCK = 16384


@njit(parallel=True, nogil=True, cache=True)
def _histograms(keys, counts):
    nchunks = counts.shape[0]
    n = keys.size
    for c in prange(nchunks):
        row = counts[c]
        row[:] = 0
        for i in range(c * n // nchunks, (c + 1) * n // nchunks):
            k = keys[i]
            if k >= 0:
                row[k] += 1


@njit(nogil=True, cache=True)
def scan_offsets(counts, start):
    """Exclusive scan in (bin, chunk) order, in parallel blocks of bins.

    Afterwards ``counts[c, b]`` is where chunk ``c`` places its first item of bin
    ``b`` and ``start[b]`` where bin ``b`` begins; ``start[nbins]`` is the total.
    """
    nchunks, nbins = counts.shape
    nblocks = (nbins + _SCAN_BLOCK - 1) // _SCAN_BLOCK
    block_total = np.zeros(nblocks + 1, dtype=np.int64)
    for blk in prange(nblocks):
        total = 0
        for b in range(blk * _SCAN_BLOCK, min(nbins, (blk + 1) * _SCAN_BLOCK)):
            for c in range(nchunks):
                total += counts[c, b]
        block_total[blk + 1] = total
    for blk in range(nblocks):
        block_total[blk + 1] += block_total[blk]
    for blk in prange(nblocks):
        total = block_total[blk]
        for b in range(blk * _SCAN_BLOCK, min(nbins, (blk + 1) * _SCAN_BLOCK)):
            start[b] = total
            for c in range(nchunks):
                n = counts[c, b]
                counts[c, b] = total
                total += n
    start[nbins] = block_total[nblocks]


@njit(parallel=True, nogil=True, cache=True)
def _place(keys, cursor, order):
    nchunks = cursor.shape[0]
    n = keys.size
    for c in prange(nchunks):
        row = cursor[c]
        for i in range(c * n // nchunks, (c + 1) * n // nchunks):
            k = keys[i]
            if k >= 0:
                order[row[k]] = i
                row[k] += 1


@njit(nogil=True, cache=True)
def counting_sort_into(keys, counts, start, order):
    """Stable counting sort of ``keys`` (int, ``-1`` = skip) into work arrays.

    ``counts`` int64 [nchunks, nbins] (its first dimension sets how work is
    split; the result does not depend on it), ``start`` int64 [nbins + 1] and
    ``order`` int32 [len(keys)] belong to the caller so they can be reused
    across frames. Afterwards the items of bin ``b`` are
    ``order[start[b]:start[b + 1]]`` in increasing item index.
    """
    _histograms(keys, counts)
    scan_offsets(counts, start)
    _place(keys, counts, order)


@njit(nogil=True, cache=True)
def counting_sort(keys, nbins, nchunks):
    """Stable counting sort of ``keys`` into ``nbins`` bins; returns ``(start, order)``.

    Allocating form of ``counting_sort_into``.
    """
    counts = np.empty((nchunks, nbins), dtype=np.int64)
    start = np.empty(nbins + 1, dtype=np.int64)
    order = np.empty(keys.size, dtype=np.int32)
    counting_sort_into(keys, counts, start, order)
    return start, order[: start[nbins]]


def default_chunks() -> int:
    """One chunk per Numba thread (the result is the same for any choice)."""
    return max(1, numba.get_num_threads())
