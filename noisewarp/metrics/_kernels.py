"""Numba kernels of the fast :func:`~noisewarp.metrics.spatial.gaussianity` path.

Every kernel splits the B * H rows of a batch [B, H, W, C] into a fixed number
of row blocks (not one per thread), writes one row of partial sums per block and
reduces those in block order, so its result does not depend on the thread count.
Float sums are float64 whatever the input dtype; float32 frames are read as they
are (no float64 copy).

Histogram layout (the KS statistic): ``HIST_BINS`` bins of width
``1 / HIST_SCALE`` on [-8, 8) plus two overflow bins; bin 0 is (-inf, -8),
bin k in 1..HIST_BINS is [-8 + (k-1) / HIST_SCALE, -8 + k / HIST_SCALE) and bin
HIST_BINS + 1 is [8, inf). :func:`_bin_of` is non-decreasing in the value, so a
bin's values are contiguous in sorted order. For float32 input every step of it
is exact (x + 8 and the scaling by a power of two are exact in float64), so the
bins are exactly those intervals; for float64 input x + 8 rounds, and a value
within 4e-15 of an edge may land in the neighbouring bin.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# Row blocks of every kernel: fixed, so partial sums reduce in the same order on any machine.
BLOCKS = 8
HIST_BINS = 1 << 18
HIST_SCALE = HIST_BINS / 16.0  # 2^14 bins per unit


@njit(cache=True, nogil=True)
def _bin_of(value):
    """Histogram bin of a finite float64 ``value`` (module docstring); non-decreasing in value."""
    return int(min(max((value + 8.0) * HIST_SCALE + 1.0, 0.0), HIST_BINS + 1.5))


@njit(cache=True, nogil=True)
def bins_of(values):
    """:func:`_bin_of` of each element of a 1-D float64 array (int64)."""
    out = np.empty(values.size, dtype=np.int64)
    for t in range(values.size):
        out[t] = _bin_of(values[t])
    return out


@njit(cache=True, nogil=True)
def _block_rows(block, blocks, rows):
    return block * rows // blocks, (block + 1) * rows // blocks


@njit(fastmath={"reassoc"}, cache=True, nogil=True)
def _add_row_sums(batch, f, i, out):
    """out[c] += sum_j batch[f, i, j, c] in float64."""
    width, channels = batch.shape[2], batch.shape[3]
    for c in range(channels):
        total = 0.0
        for j in range(width):
            total += np.float64(batch[f, i, j, c])
        out[c] += total


@njit(cache=True, nogil=True)
def _histogram_block(batch, first, last, counts, sums):
    """:func:`histogram_sums` of rows ``first`` .. ``last`` - 1 of the batch's B * H rows
    into one block's ``counts`` (zeroed first) and ``sums`` [C]; returns the block's
    non-finite count. A call of its own, so numba's parfor passes never see this body."""
    height, width, channels = batch.shape[1], batch.shape[2], batch.shape[3]
    counts[:] = 0
    bad = 0
    for row in range(first, last):
        f, i = row // height, row % height
        _add_row_sums(batch, f, i, sums)
        for j in range(width):
            for c in range(channels):
                value = np.float64(batch[f, i, j, c])
                if value - value == 0.0:
                    counts[_bin_of(value)] += 1
                else:
                    bad += 1
    return bad


@njit(parallel=True, cache=True, nogil=True)
def _histogram_blocks(batch, hist, partial, bad):
    """The blocks of :func:`histogram_sums`, in parallel. Allocation and reduction stay in
    the Python caller: numba turns every array expression of a parallel function into a
    loop it compiles apart, and each compiled function costs a fraction of a second."""
    rows = batch.shape[0] * batch.shape[1]
    blocks = hist.shape[0]
    for block in prange(blocks):
        first, last = _block_rows(block, blocks, rows)
        bad[block] = _histogram_block(batch, first, last, hist[block], partial[block])


def _in_block_order(partial):
    """The sum of the rows of ``partial`` [blocks, ...], added in block order."""
    sums = partial[0].copy()
    for row in partial[1:]:
        sums += row
    return sums


def histogram_sums(batch, hist):
    """Per-block value histograms, per-channel sums and the non-finite count of ``batch``.

    Fills ``hist`` [blocks, HIST_BINS + 2] (int32, overwritten: a buffer reused
    across calls costs no page faults) and returns ``(sums [C] float64, nonfinite)``.
    ``sums`` adds the blocks' partial sums in block order. When ``nonfinite`` > 0
    the histogram leaves those elements out and ``sums`` is nan or inf: neither is
    meant to be used then.
    """
    blocks = hist.shape[0]
    partial = np.zeros((blocks, batch.shape[3]))
    bad = np.zeros(blocks, dtype=np.int64)
    _histogram_blocks(batch, hist, partial, bad)
    return _in_block_order(partial), bad.sum()


@njit(parallel=True, cache=True)
def _reduce_columns(hist, out):
    blocks, bins = hist.shape
    for k in prange(bins):
        total = 0
        for block in range(blocks):
            total += hist[block, k]
        out[k] = total


def reduce_histogram(hist):
    """Column sums of the per-block histograms (int64; integer sums are exact in any order)."""
    out = np.empty(hist.shape[1], dtype=np.int64)
    _reduce_columns(hist, out)
    return out


@njit(cache=True, nogil=True)
def _centre_row(batch, f, i, mean, out):
    """out[c, j] = batch[f, i, j, c] - mean[c] in float64."""
    width, channels = batch.shape[2], batch.shape[3]
    for j in range(width):
        for c in range(channels):
            out[c, j] = np.float64(batch[f, i, j, c]) - mean[c]


def fused_layout(channels: int) -> dict[str, slice]:
    """Where each sum lies in the vector returned by :func:`fused_sums`."""
    c = channels
    return {
        "square": slice(0, c),  # sum of (x - mean_c)^2 per channel
        "acf_row": slice(c, 2 * c),  # lag-product sums per channel, centred by mean_c
        "acf_col": slice(2 * c, 3 * c),
        "acf_diag": slice(3 * c, 4 * c),
        "acf_antidiag": slice(4 * c, 5 * c),
        "central": slice(5 * c, 5 * c + 3),  # sums of e^2, e^3, e^4, e = x - pooled mean
        "cross": slice(5 * c + 3, 5 * c + 3 + c * (c - 1) // 2),  # pairs c < c' in order
    }


@njit(fastmath={"reassoc", "contract"}, cache=True, nogil=True)
def _fused_block(batch, mean, shift, first, last, wanted, collected, position, acc):
    """:func:`fused_sums` of rows ``first`` .. ``last`` - 1 into one block's ``acc``,
    collecting its candidate values from ``collected[position]`` on. A call of its own,
    so numba's parfor passes never see this body."""
    height, width, channels = batch.shape[1], batch.shape[2], batch.shape[3]
    current = np.empty((channels, width))
    below = np.empty((channels, width))
    if first < last:
        _centre_row(batch, first // height, first % height, mean, current)
    for row in range(first, last):
        f, i = row // height, row % height
        has_below = i + 1 < height
        if has_below:
            _centre_row(batch, f, i + 1, mean, below)
        central2 = 0.0
        central3 = 0.0
        central4 = 0.0
        for c in range(channels):
            d = current[c]
            e_shift = shift[c]
            square = 0.0
            lag_row = 0.0
            for j in range(width):
                square += d[j] * d[j]
                e = d[j] + e_shift
                e2 = e * e
                central2 += e2
                central3 += e2 * e
                central4 += e2 * e2
            for j in range(width - 1):
                lag_row += d[j] * d[j + 1]
            acc[c] += square
            acc[channels + c] += lag_row
            if has_below:
                d_below = below[c]
                lag_col = 0.0
                lag_diag = 0.0
                lag_anti = 0.0
                for j in range(width):
                    lag_col += d[j] * d_below[j]
                for j in range(width - 1):
                    lag_diag += d[j] * d_below[j + 1]
                    lag_anti += d[j + 1] * d_below[j]
                acc[2 * channels + c] += lag_col
                acc[3 * channels + c] += lag_diag
                acc[4 * channels + c] += lag_anti
        acc[5 * channels] += central2
        acc[5 * channels + 1] += central3
        acc[5 * channels + 2] += central4
        pair = 5 * channels + 3
        for c in range(channels):
            for c2 in range(c + 1, channels):
                cross = 0.0
                for j in range(width):
                    cross += current[c, j] * current[c2, j]
                acc[pair] += cross
                pair += 1
        for j in range(width):
            for c in range(channels):
                value = np.float64(batch[f, i, j, c])
                if wanted[_bin_of(value)]:
                    collected[position] = value
                    position += 1
        if has_below:
            current, below = below, current
        elif row + 1 < last:  # the next row starts a new frame
            _centre_row(batch, (row + 1) // height, (row + 1) % height, mean, current)


@njit(parallel=True, cache=True, nogil=True)
def _fused_blocks(batch, mean, shift, wanted, offsets, collected, partial):
    """The blocks of :func:`fused_sums`, in parallel (see :func:`_histogram_blocks`)."""
    rows = batch.shape[0] * batch.shape[1]
    blocks = partial.shape[0]
    for block in prange(blocks):
        first, last = _block_rows(block, blocks, rows)
        _fused_block(batch, mean, shift, first, last, wanted, collected, offsets[block],
                     partial[block])  # fmt: skip


def fused_sums(batch, mean, shift, blocks, wanted, offsets, collected):
    """Centred moment, lag-product and cross-channel sums in one pass; collects KS candidates.

    With d = x - mean[c] (channel mean) and e = d + shift[c] (x minus the pooled
    mean), returns the float64 vector of :func:`fused_layout`: per channel sum
    d^2 and the lag-1 sums of d d' over the pairs of each lag (row (i, j+1),
    col (i+1, j), diag (i+1, j+1), antidiag (i+1, j-1), within a frame), the
    pooled sums of e^2, e^3, e^4, and sum d_c d_c' for each channel pair c < c'.
    Blocks' partial sums are added in block order. Every value whose histogram
    bin has ``wanted[bin]`` set is written (as float64) to ``collected``,
    block b's values from ``offsets[b]`` on.
    """
    partial = np.zeros((blocks, fused_layout(batch.shape[3])["cross"].stop))
    _fused_blocks(batch, mean, shift, wanted, offsets, collected, partial)
    return _in_block_order(partial)


@njit(cache=True, nogil=True)
def _radial_block(coefficients, bin_map, first, last, out):
    """:func:`radial_sums` of rows ``first`` .. ``last`` - 1 into one block's ``out``."""
    height, half, channels = coefficients.shape[1], coefficients.shape[2], coefficients.shape[3]
    for row in range(first, last):
        f, i = row // height, row % height
        for k in range(half):
            b = bin_map[i, k]
            if b >= 0:
                power = 0.0
                for c in range(channels):
                    z = coefficients[f, i, k, c]
                    re = np.float64(z.real)
                    im = np.float64(z.imag)
                    power += re * re + im * im
                out[b] += power


@njit(parallel=True, cache=True, nogil=True)
def _radial_blocks(coefficients, bin_map, partial):
    """The blocks of :func:`radial_sums`, in parallel (see :func:`_histogram_blocks`)."""
    rows = coefficients.shape[0] * coefficients.shape[1]
    blocks = partial.shape[0]
    for block in prange(blocks):
        first, last = _block_rows(block, blocks, rows)
        _radial_block(coefficients, bin_map, first, last, partial[block])


def radial_sums(coefficients, bin_map, bins, blocks):
    """Sum of |X_k|^2 (float64, over frames and channels) per radial bin of a half-spectrum.

    ``coefficients`` is the ``rfft2`` output [B, H, W//2 + 1, C]; ``bin_map``
    [H, W//2 + 1] holds each coefficient's bin, or -1 where it is left out.
    """
    partial = np.zeros((blocks, bins))
    _radial_blocks(coefficients, bin_map, partial)
    return _in_block_order(partial)


@njit(cache=True, nogil=True)
def ks_candidates(hist, counts, edge_cdf, n, margin):
    """Histogram bins that can hold the KS statistic's largest term, and where to put their values.

    ``counts`` is the histogram (:func:`reduce_histogram` of ``hist``) and
    ``edge_cdf`` Phi at its finite edges. Returns ``(wanted, before, offsets)``:
    ``wanted[k]`` is set when bin k is non-empty and its bound U_k on its terms
    reaches the largest edge deviation |before[k]/n - Phi(edge)| less ``margin``
    (the argument is in :func:`noisewarp.metrics.spatial._gaussianity_fast`);
    ``before[k]`` counts the values below bin k; block b's values of wanted bins
    go to ``offsets[b]:offsets[b + 1]`` of the collected array.
    """
    bins = counts.size
    before = np.cumsum(counts) - counts
    lower = 0.0
    for k in range(1, bins):  # the finite edges: left edge of bins 1 .. HIST_BINS + 1
        lower = max(lower, abs(before[k] / n - edge_cdf[k - 1]))
    wanted = np.zeros(bins, dtype=np.bool_)
    blocks = hist.shape[0]
    offsets = np.zeros(blocks + 1, dtype=np.int64)
    for k in range(bins):
        if counts[k] == 0:
            continue
        cdf_left = edge_cdf[k - 1] if k > 0 else 0.0
        cdf_right = edge_cdf[k] if k < bins - 1 else 1.0
        bound = max((before[k] + counts[k]) / n - cdf_left, cdf_right - before[k] / n)
        if bound >= lower - margin:
            wanted[k] = True
            for block in range(blocks):
                offsets[block + 1] += hist[block, k]
    for block in range(blocks):
        offsets[block + 1] += offsets[block]
    return wanted, before, offsets
