"""The shared device primitives on their own."""

import numpy as np
from numba import cuda

from noisewarp.cuda import primitives


def test_sort_buckets_sorts_small_and_large_buckets():
    """Each bucket ends in item order whatever its size: empty, one item, insertion-sorted
    (up to ``INSERTION_MAX``) and heap-sorted (above), as scatter leaves them shuffled."""
    sizes = [0, 1, 2, 7, primitives.INSERTION_MAX, primitives.INSERTION_MAX + 1, 100, 0, 257]
    start = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    rng = np.random.default_rng(3)
    items = rng.permutation(int(start[-1]) * 3)[: start[-1]].astype(np.int32)
    order = cuda.to_device(items)
    primitives.sort_buckets[4, 4](cuda.to_device(start), order)
    got = order.copy_to_host()
    for b in range(len(sizes)):
        lo, hi = start[b], start[b + 1]
        np.testing.assert_array_equal(got[lo:hi], np.sort(items[lo:hi]))
