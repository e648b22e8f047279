"""Spatial white-noise statistics of a noise frame (:func:`gaussianity`).

Lag-1 autocorrelations pair each pixel with one neighbour in the same frame and
channel: ``acf_row`` with (i, j + 1) (along a row), ``acf_col`` with (i + 1, j),
``acf_diag`` with (i + 1, j + 1), ``acf_antidiag`` with (i + 1, j - 1). Each
channel is standardised by its own mean and standard deviation first, and the
products are averaged over all pairs of all channels.

Power spectrum
--------------
Each channel's ``rfft2`` with ``norm="ortho"`` is taken; for i.i.d. N(0, 1)
input every coefficient that is not its own complex conjugate has independent
real and imaginary parts N(0, 1/2), so |X_k|^2 ~ Exp(1). The coefficients used
are one of each conjugate pair, leaving out DC and the self-conjugate Nyquist
coefficients (which are real, |X_k|^2 ~ chi2_1). Radius rho = |frequency| in
cycles per pixel (rows folded to [-1/2, 1/2)); bin b = round(rho * max(H, W)).
The radial profile P_b is the mean of |X_k|^2 over the n_b coefficients of bin b
(pooled over channels and frames), so n_b P_b ~ Gamma(n_b) exactly and
E[P_b] = 1, SE(P_b) = 1 / sqrt(n_b).

- ``spectrum_max_dev`` = max_b |P_b - 1| sqrt(n_b): the largest deviation from the
  white-noise expectation in standard errors of each bin.
- ``spectrum_pvalue``: its family-wise p-value. Each bin gets the exact
  two-sided Gamma(n_b) p-value (small bins are far from Gaussian, so a fixed
  "k sigma" bound would be wrong there); the smallest of K bins is corrected
  with Sidak, p = 1 - (1 - p_min)^K (Bonferroni, K p_min, to first order).
- ``spectrum_flatness`` = exp(sum_b w_b log P_b) / sum_b w_b P_b, the
  geometric over the arithmetic mean of the profile with bin weights
  w_b = n_b / N, N = sum_b n_b (1 for a flat profile, < 1 for a blurred or
  sharpened frame; blind to an overall scale). Weighting by n_b keeps the few
  coefficients of the innermost bins from dominating it, and gives it an
  almost exact null law: -2 N log(flatness) / c is Bartlett's
  homogeneity-of-variance statistic for K estimates with 2 n_b degrees of
  freedom each, ~ chi2_{K-1}, with c = 1 + (sum_b 1/(2 n_b) - 1/(2N)) / (3(K-1)).
- ``spectrum_flatness_pvalue``: its upper chi2_{K-1} tail.
"""

from __future__ import annotations

import functools
import math
import threading

import numpy as np
import scipy.fft
from scipy import special, stats

from noisewarp.metrics._common import (
    _LAGS,
    SPATIAL_STATISTICS,
    _as_batch,
    _bartlett,
    _lag_pairs,
    _radial_layout,
    _sidak,
)
from noisewarp.metrics._kernels import (
    BLOCKS,
    HIST_BINS,
    HIST_SCALE,
    bins_of,
    fused_layout,
    fused_sums,
    histogram_sums,
    ks_candidates,
    radial_sums,
    reduce_histogram,
)

__all__ = ["gaussianity"]


# ------------------------------------------------------------------------ statistics


def _moments(values: np.ndarray) -> dict[str, float]:
    n = values.size
    if n == 0:
        return dict.fromkeys(("mean", "std", "skewness", "excess_kurtosis"), math.nan)
    mean = float(values.mean())
    dev = values - mean
    dev2 = dev * dev
    m2 = float(dev2.mean())
    m3 = float(np.einsum("i,i->", dev2, dev)) / n
    m4 = float(np.einsum("i,i->", dev2, dev2)) / n
    return _moment_statistics(n, mean, m2, m3, m4)


def _moment_statistics(n: int, mean: float, m2: float, m3: float, m4: float) -> dict[str, float]:
    """Mean, std (ddof=1), skewness and excess kurtosis from the central moments m2, m3, m4."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "mean": mean,
            "std": math.sqrt(m2 * n / (n - 1)) if n > 1 else math.nan,
            "skewness": m3 / m2**1.5 if m2 > 0 else math.nan,
            "excess_kurtosis": m4 / m2**2 - 3.0 if m2 > 0 else math.nan,
        }


def _kolmogorov_smirnov(values: np.ndarray) -> tuple[float, float]:
    """Two-sided one-sample KS statistic against N(0, 1) and its exact p-value."""
    n = values.size
    if n == 0:
        return math.nan, math.nan
    cdf = special.ndtr(np.sort(values))
    ranks = np.arange(1, n + 1, dtype=np.float64) / n
    d_plus = float(np.max(ranks - cdf))
    d_minus = float(np.max(cdf - (ranks - 1.0 / n)))
    statistic = max(d_plus, d_minus)
    return statistic, _ks_pvalue(statistic, n)


def _ks_pvalue(statistic: float, n: int) -> float:
    """Exact two-sided KS p-value of ``statistic`` for ``n`` values."""
    return float(np.clip(stats.kstwo.sf(statistic, n), 0.0, 1.0))


def _standardise(batch: np.ndarray, finite: np.ndarray | None) -> np.ndarray:
    """Standardise each channel (pooled over frames) by its mean and std; 0 where non-finite."""
    if finite is None:
        mean = batch.mean(axis=(0, 1, 2))
        std = batch.std(axis=(0, 1, 2))
        centred = batch - mean
    else:
        count = finite.sum(axis=(0, 1, 2))
        filled = np.where(finite, batch, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = filled.sum(axis=(0, 1, 2)) / count
            centred = np.where(finite, batch - mean, 0.0)
            std = np.sqrt((centred * centred).sum(axis=(0, 1, 2)) / count)
    with np.errstate(divide="ignore", invalid="ignore"):
        # A constant channel has no defined correlation: nan, not a silent 0.
        return centred / np.where(std > 0, std, np.nan)


def _lag_slices(lag: tuple[int, int], height: int, width: int):
    d_row, d_col = lag
    first = (slice(None), slice(0, height - d_row), slice(max(0, -d_col), width - max(0, d_col)))
    second = (slice(None), slice(d_row, height), slice(max(0, d_col), width - max(0, -d_col)))
    return first, second


def _autocorrelations(z: np.ndarray, finite: np.ndarray | None) -> dict[str, float]:
    _, height, width, _ = z.shape
    out = {}
    for name, lag in _LAGS.items():
        first, second = _lag_slices(lag, height, width)
        a, b = z[first], z[second]
        pairs = a.size if finite is None else int(np.count_nonzero(finite[first] & finite[second]))
        out[name] = float(np.einsum("ijkl,ijkl->", a, b)) / pairs if pairs else math.nan
    return out


def _cross_channel(z: np.ndarray, finite: np.ndarray | None) -> tuple[float, float]:
    """Largest |Pearson r| over channel pairs and its family-wise p-value."""
    channels = z.shape[3]
    if channels < 2:  # no pair: not applicable (NaN, as docs/outputs.md says)
        return math.nan, math.nan
    flat = z.reshape(-1, channels)
    products = flat.T @ flat
    if finite is None:
        counts = np.full_like(products, flat.shape[0])
    else:
        mask = finite.reshape(-1, channels).astype(np.float64)
        counts = mask.T @ mask
    upper = np.triu_indices(channels, k=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.abs(products[upper] / counts[upper])
    return _worst_pair(r, counts[upper])


def _worst_pair(r: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """Largest of the channel pairs' |r| (with their pixel counts) and its Sidak p-value."""
    if not np.all(np.isfinite(r)):
        return math.nan, math.nan
    worst = int(np.argmax(r))
    r_max, dof = float(r[worst]), counts[worst] - 2
    if dof < 1:
        return r_max, math.nan
    # Exact for one pair of independent Gaussian channels: t = r sqrt(dof / (1 - r^2)).
    t = r_max * math.sqrt(dof / max(1.0 - r_max**2, 1e-300))
    return r_max, _sidak(float(2.0 * stats.t.sf(t, dof)), r.size)


_SPECTRUM_NAMES = (
    "spectrum_flatness",
    "spectrum_flatness_pvalue",
    "spectrum_max_dev",
    "spectrum_pvalue",
)


def _spectrum(batch: np.ndarray, nonfinite: int) -> dict[str, float]:
    frames, height, width, channels = batch.shape
    flat_index, bin_index, count = _radial_layout(height, width)
    if nonfinite or count.size == 0:
        return dict.fromkeys(_SPECTRUM_NAMES, math.nan)
    coefficients = np.fft.rfft2(batch, axes=(1, 2), norm="ortho")
    power = (coefficients.real**2 + coefficients.imag**2).sum(axis=(0, 3), dtype=np.float64)
    sums = np.bincount(bin_index, power.ravel()[flat_index], minlength=count.size)
    return _spectrum_statistics(sums, count * (frames * channels))


def _spectrum_statistics(sums: np.ndarray, counts: np.ndarray) -> dict[str, float]:
    """The spectrum statistics (module docstring) from each radial bin's sum of |X_k|^2."""
    profile = sums / counts
    max_dev = float(np.max(np.abs(profile - 1.0) * np.sqrt(counts)))
    # n_b P_b ~ Gamma(n_b): exact two-sided tail per bin, then Sidak over bins.
    lower = special.gammainc(counts, sums)
    upper = special.gammaincc(counts, sums)
    p_min = float(np.min(np.minimum(1.0, 2.0 * np.minimum(lower, upper))))
    dof, total, correction = _bartlett(counts)
    weights = counts / total
    with np.errstate(divide="ignore", invalid="ignore"):
        log_flatness = float(weights @ np.log(profile) - np.log(weights @ profile))
    flatness_pvalue = (
        float(stats.chi2.sf(-2.0 * total * log_flatness / correction, dof)) if dof else 1.0
    )
    return {
        "spectrum_flatness": math.exp(log_flatness),
        "spectrum_flatness_pvalue": flatness_pvalue,
        "spectrum_max_dev": max_dev,
        "spectrum_pvalue": _sidak(p_min, counts.size),
    }


def gaussianity(frame: np.ndarray) -> dict[str, float]:
    """Spatial white-noise statistics of one noise frame (docs/outputs.md).

    Parameters
    ----------
    frame : np.ndarray
        Float array [H, W, C] ([H, W] is one channel; a stack [T, H, W, C] is
        pooled over frames).

    Returns
    -------
    dict[str, float]
        The keys of :data:`SPATIAL_STATISTICS`: ``mean``, ``std`` (ddof=1),
        ``skewness``, ``excess_kurtosis``, ``ks_stat`` / ``ks_pvalue`` (exact
        two-sided one-sample KS test against N(0, 1)), ``acf_row``, ``acf_col``,
        ``acf_diag``, ``acf_antidiag`` (lag-1, see the module docstring),
        ``cross_channel_corr`` (largest |r| over channel pairs, 0.0 if C = 1)
        with its family-wise ``cross_channel_pvalue``, ``spectrum_flatness`` /
        ``spectrum_flatness_pvalue``, ``spectrum_max_dev`` / ``spectrum_pvalue``
        (module docstring) and
        ``nonfinite`` (number of NaN/Inf elements). Non-finite elements are left
        out of the marginal and correlation statistics; the spectrum is then nan.

    Examples
    --------
    >>> import numpy as np
    >>> from noisewarp.metrics import gaussianity
    >>> stats = gaussianity(np.random.default_rng(0).standard_normal((64, 64, 4)))
    >>> abs(stats["mean"]) < 0.05 and abs(stats["acf_row"]) < 0.05
    True
    """
    return gaussianity_and_sums(frame)[0]


def gaussianity_and_sums(frame: np.ndarray) -> tuple[dict[str, float], tuple | None]:
    """:func:`gaussianity` and, from the same passes, (sum x, sum x^2) over the frame's
    values (None where the reference path ran: non-finite or unusual input)."""
    batch = _as_batch(frame)
    if batch.size and batch.dtype in (np.float32, np.float64):  # native byte order only
        sums: list[float] = []
        out = _gaussianity_fast(np.ascontiguousarray(batch), sums)
        if out is not None:
            return out, tuple(sums)
    return _gaussianity_reference(batch), None


def _gaussianity_reference(batch: np.ndarray) -> dict[str, float]:
    """:func:`gaussianity` of a batch [B, H, W, C] in numpy (any float dtype, NaN/Inf allowed).

    The reference the fast path is tested against, and the path for frames with
    non-finite elements.
    """
    batch = batch.astype(np.float64, copy=False)
    finite_mask = np.isfinite(batch)
    nonfinite = int(batch.size - np.count_nonzero(finite_mask))
    finite = finite_mask if nonfinite else None
    values = batch.ravel() if finite is None else batch[finite_mask]
    out = _moments(values)
    out["ks_stat"], out["ks_pvalue"] = _kolmogorov_smirnov(values)
    z = _standardise(batch, finite)
    out.update(_autocorrelations(z, finite))
    out["cross_channel_corr"], out["cross_channel_pvalue"] = _cross_channel(z, finite)
    out.update(_spectrum(batch, nonfinite))
    out["nonfinite"] = nonfinite
    return {name: out[name] for name in SPATIAL_STATISTICS}


# -------------------------------------------------------------------------- fast path

# Bins whose bound on the KS terms comes within this of the lower bound are searched
# exactly: far above float64 rounding of the terms (a few 1e-16) and the shift of a
# float64 value's bin edges (at most 4e-15 in x, so 2e-15 in Phi), far below their spread.
_KS_MARGIN = 1e-10


@functools.lru_cache(maxsize=1)
def _edge_cdf() -> np.ndarray:
    """Phi at the HIST_BINS + 1 finite histogram edges -8, -8 + 1/HIST_SCALE, ..., 8."""
    edges = np.arange(HIST_BINS + 1) / HIST_SCALE - 8.0
    cdf = special.ndtr(edges)
    cdf.setflags(write=False)
    return cdf


_BUFFERS = threading.local()


def _histogram_buffer() -> np.ndarray:
    """This thread's [BLOCKS, HIST_BINS + 2] int32 histogram buffer (reused: no page faults)."""
    buffer = getattr(_BUFFERS, "histogram", None)
    if buffer is None:
        buffer = _BUFFERS.histogram = np.empty((BLOCKS, HIST_BINS + 2), dtype=np.int32)
    return buffer


@functools.lru_cache(maxsize=32)
def _bin_map(height: int, width: int) -> np.ndarray:
    """[H, W//2 + 1] radial bin of each ``rfft2`` coefficient (:func:`_radial_layout`) or -1."""
    flat_index, bin_index, _ = _radial_layout(height, width)
    out = np.full(height * (width // 2 + 1), -1, dtype=np.int64)
    out[flat_index] = bin_index
    out = out.reshape(height, width // 2 + 1)
    out.setflags(write=False)
    return out


def _ks_exact(candidates: np.ndarray, before: np.ndarray, n: int) -> float:
    """KS statistic D from the values of the candidate bins (see :func:`_gaussianity_fast`).

    ``before[k]`` is the number of values below bin k, so the sorted candidates
    of bin k have ranks before[k] + 1, before[k] + 2, ...; the terms are those of
    :func:`_kolmogorov_smirnov`, computed the same way.
    """
    values = np.sort(candidates)
    bins = bins_of(values)
    start = np.searchsorted(bins, bins, side="left")
    ranks = (before[bins] + (np.arange(values.size) - start) + 1).astype(np.float64) / n
    cdf = special.ndtr(values)
    return max(float(np.max(ranks - cdf)), float(np.max(cdf - (ranks - 1.0 / n))))


def _spectrum_fast(batch: np.ndarray, blocks: int) -> dict[str, float]:
    """:func:`_spectrum` of a finite batch with ``scipy.fft`` (in the input's precision)."""
    frames, height, width, channels = batch.shape
    count = _radial_layout(height, width)[2]
    if count.size == 0:
        return dict.fromkeys(_SPECTRUM_NAMES, math.nan)
    coefficients = scipy.fft.rfft2(batch, axes=(1, 2), norm="ortho", workers=-1)
    sums = radial_sums(coefficients, _bin_map(height, width), count.size, blocks)
    return _spectrum_statistics(sums, count * (frames * channels))


def _gaussianity_fast(batch: np.ndarray, sums_out: list | None = None) -> dict[str, float] | None:
    """:func:`gaussianity` of a contiguous float32/float64 batch in two passes; None if not finite.
    ``sums_out`` (a list) receives sum x and sum x^2 of the batch.

    Pass 1 (:func:`~noisewarp.metrics._kernels.histogram_sums`) gives the channel
    sums and a histogram of the values in bins [l_k, r_k). Pass 2
    (:func:`~noisewarp.metrics._kernels.fused_sums`) gives the centred moment,
    lag-product and cross-channel sums (the module docstring's statistics after
    standardising each channel: sum z z' = sum d d' / var_c with d = x - mean_c)
    and collects the values of the KS candidate bins.

    KS without a full sort: with m_k values below bin k and c_k in it, F_n(l_k^-)
    = m_k / n exactly. (i) Each edge gives a lower bound on D: if m/n - Phi(l) > 0
    the m-th order statistic is < l, so its term m/n - Phi(x_(m)) is larger; if
    Phi(l) - m/n > 0 the (m+1)-th is >= l, so Phi(x_(m+1)) - m/n is larger.
    (ii) Phi is increasing, so each term of a value in bin k, i/n - Phi(x_i) or
    Phi(x_i) - (i-1)/n with m_k < i <= m_k + c_k, is at most
    U_k = max((m_k + c_k)/n - Phi(l_k), Phi(r_k) - m_k/n). Hence D, the largest
    term, lies in a bin with U_k >= max_edges |m/n - Phi(l)|: only those bins'
    values are sorted, and their terms are evaluated exactly as the reference
    does, so D is the same number. Both bounds are compared with ``_KS_MARGIN``
    of slack, which covers their rounding and the float64 bin edges' shift.
    """
    frames, height, width, channels = batch.shape
    n = batch.size
    pixels = frames * height * width
    blocks = min(BLOCKS, frames * height)
    hist = _histogram_buffer()[:blocks]
    channel_sums, nonfinite = histogram_sums(batch, hist)
    if nonfinite:
        return None
    counts = reduce_histogram(hist)
    wanted, before, offsets = ks_candidates(hist, counts, _edge_cdf(), n, _KS_MARGIN)
    collected = np.empty(offsets[-1])
    channel_mean = channel_sums / pixels
    mean = float(channel_sums.sum()) / n
    sums = fused_sums(batch, channel_mean, channel_mean - mean, blocks, wanted, offsets, collected)
    layout = fused_layout(channels)
    central = sums[layout["central"]] / n
    out = _moment_statistics(n, mean, *central)
    out["ks_stat"] = _ks_exact(collected, before, n)
    out["ks_pvalue"] = _ks_pvalue(out["ks_stat"], n)
    variance = sums[layout["square"]] / pixels
    if sums_out is not None:  # sum x^2 = sum_c (sum (x - mean_c)^2 + pixels mean_c^2)
        sums_out += [float(channel_sums.sum()),
                     float(np.sum(sums[layout["square"]] + pixels * channel_mean**2))]  # fmt: skip
    # A constant channel has no defined correlation: nan, as in the reference.
    scale = np.where(variance > 0, 1.0 / np.where(variance > 0, variance, 1.0), np.nan)
    for name, lag in _LAGS.items():
        pairs = _lag_pairs(batch.shape, lag)
        out[name] = float(sums[layout[name]] @ scale) / pairs if pairs else math.nan
    if channels < 2:
        out["cross_channel_corr"], out["cross_channel_pvalue"] = math.nan, math.nan
    else:
        first, second = np.triu_indices(channels, k=1)
        with np.errstate(invalid="ignore"):
            r = np.abs(sums[layout["cross"]] * np.sqrt(scale[first] * scale[second]) / pixels)
        pair_counts = np.full(r.size, float(pixels))
        out["cross_channel_corr"], out["cross_channel_pvalue"] = _worst_pair(r, pair_counts)
    out.update(_spectrum_fast(batch, blocks))
    out["nonfinite"] = 0
    return {name: out[name] for name in SPATIAL_STATISTICS}
