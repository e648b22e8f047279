"""The shared device primitives on their own."""

import threading

import numpy as np
from numba import cuda

from noisewarp.cuda import arrays, primitives


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


def test_device_workspaces_are_held_per_thread():
    """Drivers running in two threads never share scratch: each thread builds its own
    buffers and keeps them across calls of the same shape; a new shape rebuilds."""

    def get(shape=(4, 4)):
        return arrays.device_workspace("kind", shape, object)

    mine = get()
    assert get() is mine
    theirs = []
    thread = threading.Thread(target=lambda: theirs.extend([get(), get()]))
    thread.start()
    thread.join()
    assert theirs[0] is theirs[1] and theirs[0] is not mine
    assert get() is mine  # the other thread neither took nor evicted it
    assert get((5, 4)) is not mine
    arrays.release()
    assert get() is not mine
