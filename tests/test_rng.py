"""The counter-based normal generator (docs/conventions.md)."""

import numba
import numpy as np
import pytest
from scipy import stats

from noisewarp.core.rng import Key, Purpose, normals, stream


def test_normals_are_standard_normal():
    x = normals((2_000_000,), Key(123, 4), Purpose.BRIDGE)
    n = x.size
    assert abs(x.mean()) < 5 / np.sqrt(n)
    assert abs(x.std() - 1) < 5 / np.sqrt(2 * n)
    assert abs(stats.skew(x)) < 5 * np.sqrt(6 / n)
    assert abs(stats.kurtosis(x)) < 5 * np.sqrt(24 / n)
    assert stats.kstest(x, "norm").pvalue > 1e-6
    # The tails come from the ziggurat's slow path: check their mass too.
    beyond = np.count_nonzero(np.abs(x) > 3.0)
    expected = n * 2 * stats.norm.sf(3.0)
    assert abs(beyond - expected) < 5 * np.sqrt(expected)
    assert np.abs(x).max() < 7.0


def test_tail_beyond_ziggurat_base_is_exact():
    # Draws beyond r = 3.654 use Marsaglia's exponential tail; compare the conditional law.
    x = normals((4_000_000,), Key(9, 9), Purpose.INIT)
    tail = np.abs(x[np.abs(x) > 3.7])
    assert tail.size > 500
    cdf = lambda t: 1 - stats.norm.sf(t) / stats.norm.sf(3.7)  # noqa: E731
    assert stats.kstest(tail, cdf).pvalue > 1e-4


def test_streams_are_independent():
    n = 500_000
    a = normals((n,), Key(0, 0), Purpose.BRIDGE)
    others = [
        normals((n,), Key(0, 1), Purpose.BRIDGE),
        normals((n,), Key(1, 0), Purpose.BRIDGE),
        normals((n,), Key(0, 0), Purpose.FRESH),
    ]
    for b in others:
        assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(n)
    # Lag-1 correlation within a stream.
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 5 / np.sqrt(n)


def test_pure_function_of_counter():
    full = normals((10_000,), Key(5, 2), Purpose.BRIDGE)
    for start, size in ((1234, 100), (777, 101), (4095, 3000), (9999, 1)):
        part = normals((size,), Key(5, 2), Purpose.BRIDGE, start=start)
        np.testing.assert_array_equal(full[start : start + size], part)
    np.testing.assert_array_equal(full, normals((10_000,), Key(5, 2), Purpose.BRIDGE))


def test_float32_draw_is_the_rounded_float64_draw():
    # Odd start and sizes around the blocks of 4096 and the 64-normal wide path.
    for start, size in ((0, 10_000), (3, 8191), (4095, 4097), (17, 63)):
        wide = normals((size,), Key(7, 1), Purpose.INIT, start=start)
        narrow = normals((size,), Key(7, 1), Purpose.INIT, start=start, dtype=np.float32)
        assert narrow.dtype == np.float32
        np.testing.assert_array_equal(narrow, wide.astype(np.float32))
    with pytest.raises(ValueError, match="dtype"):
        normals((4,), Key(0, 0), dtype=np.int32)


def test_thread_count_does_not_change_draws():
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = normals((100_000,), Key(3, 3))
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = normals((100_000,), Key(3, 3))
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one, many)


def test_stream_keys_differ():
    keys = {stream(s, f, p) for s in range(4) for f in range(4) for p in Purpose}
    assert len(keys) == 4 * 4 * len(Purpose)
    gammas = {int(g) for _, g in keys}
    assert all(g % 2 == 1 for g in gammas)


@pytest.mark.parametrize(
    "bad, error",
    [(-1, ValueError), (2**64, ValueError), (1.5, TypeError), ("3", TypeError), (True, TypeError)],
)
def test_key_validation(bad, error):
    with pytest.raises(error, match="seed"):
        Key(bad, 0)


def test_key_coerce():
    assert Key.coerce(7) == Key(7, 0)
    assert Key.coerce((7, 3)) == Key(7, 3)
    assert Key(7, 3).next() == Key(7, 4)
    with pytest.raises(TypeError, match="key must be"):
        Key.coerce("seed")


def test_single_and_paired_draws_agree():
    from numba import njit

    from noisewarp.core.rng import normal, normal_pair

    @njit
    def both(offset, gamma, words):
        out = np.empty((words, 4))
        for m in range(words):
            a, b = normal_pair(offset, gamma, np.uint64(m))
            out[m, 0] = a
            out[m, 1] = b
            out[m, 2] = normal(offset, gamma, np.uint64(2 * m))
            out[m, 3] = normal(offset, gamma, np.uint64(2 * m + 1))
        return out

    out = both(*Key(1, 2).stream(Purpose.FRESH), 50_000)  # includes ~1200 slow-path draws
    np.testing.assert_array_equal(out[:, 0], out[:, 2])
    np.testing.assert_array_equal(out[:, 1], out[:, 3])
    assert abs(np.corrcoef(out[:, 0], out[:, 1])[0, 1]) < 5 / np.sqrt(50_000)


def test_block_fill_equals_single_draws():
    """``fill_normals`` (branch-free blocks, misses redrawn from a bit mask) gives
    exactly ``normal`` for every counter, at odd and even starts and ragged ends."""
    from numba import njit

    from noisewarp.core.rng import fill_normals, normal

    @njit
    def block_and_single(offset, gamma, start, n):
        block = np.empty(n, dtype=np.float32)
        fill_normals(offset, gamma, np.uint64(start), block)
        single = np.empty(n, dtype=np.float32)
        for k in range(n):
            single[k] = normal(offset, gamma, np.uint64(start + k))
        return block, single

    offset, gamma = Key(4, 1).stream(Purpose.BRIDGE)
    draws = 0
    for start in (0, 1, 63, 64, 2**33 + 1):
        for n in (0, 1, 2, 3, 64, 65, 127, 20_001):
            block, single = block_and_single(offset, gamma, start, n)
            np.testing.assert_array_equal(block, single, err_msg=f"start={start} n={n}")
            draws += n
    # ~1.5% of draws miss the fast path: about 1,500 redrawn from the masks.
    assert draws > 100_000
    # Short fills (under 64: the pairwise path) at many starts, so that misses
    # fall in both halves of a pair and at every position of a block.
    short = 0
    for start in range(0, 40_000, 97):
        for n in (5, 12, 33, 63):
            block, single = block_and_single(offset, gamma, start, n)
            np.testing.assert_array_equal(block, single, err_msg=f"start={start} n={n}")
            short += n
    assert short > 40_000
