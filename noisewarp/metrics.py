"""Is it white noise, and how much of it moves with the motion? (DESIGN section 8.)

Two families of figures, both vectorised numpy/scipy:

**Spatial Gaussianity** (:func:`gaussianity`, :func:`white_noise_report`,
:func:`assert_white_noise`). Under the null hypothesis every element of a noise
frame [H, W, C] is i.i.d. N(0, 1). Each statistic comes with its expectation and
standard error under that null (:func:`null_expectations`,
:func:`standard_errors`), so a deviation reads as a z-score.

**Temporal carry-over** (:func:`conditional_mean`, :func:`temporal_correlation`,
:func:`temporal_metrics`). Under the particle area model (DESIGN section 4) the
best prediction of frame t+1 from frame t is E[Y_p | X] = sum_q a_pq x_q /
sqrt(A_p); the correlation of the actual frame t+1 with it says how much of the
noise travels along the motion.

:func:`frame_metrics` bundles both for one frame and :func:`metrics_dataset`
turns a list of them into an ``xarray.Dataset`` for ``to_netcdf``.

Conventions
-----------
Frames are float arrays [H, W, C]; a 2-D array is one channel, and a 4-D stack
[T, H, W, C] is pooled (every statistic uses all T frames; spatial neighbours and
spectra stay within a frame). Maps are backward maps T [H, W, 2] in (row, col)
pixel units with pixel (i, j) centred at (i + 0.5, j + 0.5).

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

Pass criteria (:func:`white_noise_report`)
------------------------------------------
With tail = 2 (1 - Phi(n_sigma)) (5.7e-7 for 5 sigma), a frame passes when it has
no NaN/Inf, every statistic with a standard error has |z| <= n_sigma, and every
statistic judged by a p-value (``ks_pvalue``, ``spectrum_flatness_pvalue``,
``spectrum_pvalue``, ``cross_channel_pvalue``) is >= tail. P-values are also
shown as the equivalent two-sided z, Phi^-1(1 - p/2), so one threshold reads
across the table.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from numbers import Number

import numpy as np
from scipy import special, stats

from noisewarp.core.checks import as_map

__all__ = [
    "SPATIAL_STATISTICS",
    "TEMPORAL_STATISTICS",
    "gaussianity",
    "null_expectations",
    "standard_errors",
    "white_noise_report",
    "format_report",
    "assert_white_noise",
    "conditional_mean",
    "temporal_metrics",
    "temporal_correlation",
    "frame_metrics",
    "metrics_dataset",
]

SPATIAL_STATISTICS = (
    "mean",
    "std",
    "skewness",
    "excess_kurtosis",
    "ks_stat",
    "ks_pvalue",
    "acf_row",
    "acf_col",
    "acf_diag",
    "acf_antidiag",
    "cross_channel_corr",
    "cross_channel_pvalue",
    "spectrum_flatness",
    "spectrum_flatness_pvalue",
    "spectrum_max_dev",
    "spectrum_pvalue",
    "nonfinite",
)
TEMPORAL_STATISTICS = ("temporal_corr", "carried_variance", "expected_carried_variance")

DESCRIPTIONS = {
    "mean": "mean of all elements",
    "std": "standard deviation of all elements (ddof=1)",
    "skewness": "sample skewness g1 = m3 / m2^1.5",
    "excess_kurtosis": "sample excess kurtosis g2 = m4 / m2^2 - 3",
    "ks_stat": "Kolmogorov-Smirnov statistic against N(0,1)",
    "ks_pvalue": "exact Kolmogorov-Smirnov p-value against N(0,1)",
    "acf_row": "lag-1 autocorrelation with the pixel to the right (i, j+1)",
    "acf_col": "lag-1 autocorrelation with the pixel below (i+1, j)",
    "acf_diag": "lag-1 autocorrelation with the pixel (i+1, j+1)",
    "acf_antidiag": "lag-1 autocorrelation with the pixel (i+1, j-1)",
    "cross_channel_corr": "largest |Pearson r| over channel pairs",
    "cross_channel_pvalue": "family-wise (Sidak) p-value of cross_channel_corr",
    "spectrum_flatness": "count-weighted geometric / arithmetic mean of the radial power profile",
    "spectrum_flatness_pvalue": "Bartlett chi2 p-value of spectrum_flatness",
    "spectrum_max_dev": "largest |P_b - 1| sqrt(n_b) over radial power bins",
    "spectrum_pvalue": "family-wise (Sidak) exact Gamma p-value of the radial bins",
    "nonfinite": "number of NaN or Inf elements",
    "temporal_corr": "Pearson r of frame t+1 with E[frame t+1 | frame t] (particle model)",
    "carried_variance": "temporal_corr^2: fraction of variance carried along the motion",
    "expected_carried_variance": "mean of sum_q a_pq^2 / A_p: carried variance the map predicts",
}

# Lag-1 neighbour offsets (d_row, d_col).
_LAGS = {"acf_row": (0, 1), "acf_col": (1, 0), "acf_diag": (1, 1), "acf_antidiag": (1, -1)}


# ----------------------------------------------------------------------------- shapes


def _as_batch(frame) -> np.ndarray:
    """View a frame [H, W], [H, W, C] or stack [T, H, W, C] as [B, H, W, C]."""
    frame = np.asarray(frame)
    if not np.issubdtype(frame.dtype, np.floating):
        raise TypeError(f"noise must be a floating-point array, got dtype {frame.dtype}")
    if frame.ndim == 2:
        return frame[None, :, :, None]
    if frame.ndim == 3:
        return frame[None]
    if frame.ndim == 4:
        return frame
    raise ValueError(f"noise must be [H, W], [H, W, C] or [T, H, W, C], got shape {frame.shape}")


def _batch_shape(shape: Sequence[int]) -> tuple[int, int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        return (1, shape[0], shape[1], 1)
    if len(shape) == 3:
        return (1, *shape)
    if len(shape) == 4:
        return shape
    raise ValueError(f"shape must be (H, W), (H, W, C) or (T, H, W, C), got {shape}")


def _lag_pairs(batch_shape: tuple[int, int, int, int], lag: tuple[int, int]) -> int:
    frames, height, width, channels = batch_shape
    return frames * channels * max(height - lag[0], 0) * max(width - abs(lag[1]), 0)


@functools.lru_cache(maxsize=32)
def _radial_layout(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which ``rfft2`` coefficients enter the radial profile, and their bins.

    Returns ``(flat_index, bin_index, count)``: flat indices into the [H, W//2+1]
    half-spectrum (one of each conjugate pair, no DC, no self-conjugate
    coefficient), their bin in 0..K-1, and the number of coefficients per bin.
    """
    rows = np.arange(height)[:, None]
    cols = np.arange(width // 2 + 1)[None, :]
    # Columns 0 and W/2 hold conjugate pairs (r, H - r) within themselves: keep
    # 0 < 2r < H there, which also drops DC and the self-conjugate rows.
    self_paired_col = (cols == 0) | (2 * cols == width)
    keep = ~self_paired_col | ((2 * rows > 0) & (2 * rows < height))
    keep = np.broadcast_to(keep, (height, width // 2 + 1))
    freq_row = np.where(rows <= height // 2, rows, rows - height) / height
    freq_col = cols / width
    radius = np.hypot(freq_row, freq_col) * max(height, width)
    raw_bin = np.rint(radius).astype(np.int64)
    flat_index = np.flatnonzero(keep)
    used_bins, bin_index = np.unique(raw_bin.ravel()[flat_index], return_inverse=True)
    count = np.bincount(bin_index, minlength=used_bins.size).astype(np.float64)
    for array in (flat_index, bin_index, count):
        array.setflags(write=False)
    return flat_index, bin_index, count


def _spectrum_counts(batch_shape: tuple[int, int, int, int]) -> np.ndarray:
    frames, height, width, channels = batch_shape
    return _radial_layout(height, width)[2] * (frames * channels)


# ----------------------------------------------------------------------- null laws


def _tail(n_sigma: float) -> float:
    """Two-sided normal tail probability of ``n_sigma``."""
    return float(2.0 * stats.norm.sf(n_sigma))


def _z_from_pvalue(pvalue: float) -> float:
    """Equivalent two-sided z of a p-value (inf for p = 0, nan for nan)."""
    if not np.isfinite(pvalue):
        return math.nan
    return float(stats.norm.isf(min(max(pvalue, 0.0), 1.0) / 2.0))


def _sidak(pvalue_min: float, tests: int) -> float:
    """Family-wise p-value of the smallest of ``tests`` p-values."""
    if not np.isfinite(pvalue_min):
        return math.nan
    return float(-np.expm1(tests * np.log1p(-min(pvalue_min, 1.0))))


def _bartlett(counts: np.ndarray) -> tuple[int, float, float]:
    """Degrees of freedom K - 1, total N and Bartlett's correction c for radial bin counts."""
    bins = counts.size
    total = float(counts.sum())
    if bins < 2:
        return 0, total, 1.0
    correction = 1.0 + (float(np.sum(0.5 / counts)) - 0.5 / total) / (3.0 * (bins - 1))
    return bins - 1, total, correction


def _flatness_null(counts: np.ndarray) -> tuple[float, float]:
    """Mean and SD of log(spectrum_flatness) under the null.

    -2 N log F / c ~ chi2_{K-1} (Bartlett), so E[log F] = -(K-1) c / (2N) and
    SD[log F] = sqrt(2 (K-1)) c / (2N).
    """
    dof, total, correction = _bartlett(counts)
    if dof == 0:
        return 0.0, math.nan
    scale = correction / (2.0 * total)
    return -dof * scale, math.sqrt(2.0 * dof) * scale


def null_expectations(shape: Sequence[int]) -> dict[str, float]:
    """Expected value of each statistic of :func:`gaussianity` under the i.i.d. N(0, 1) null.

    Parameters
    ----------
    shape : sequence of int
        (H, W), (H, W, C) or (T, H, W, C).

    Returns
    -------
    dict[str, float]
        Exact or leading-order expectations: ``std`` 1 - 1/(4n) (the ddof=1
        bias), ``excess_kurtosis`` -6/(n+1), lag-1 autocorrelations -1/(H W)
        (each channel is centred by its sample mean), ``spectrum_flatness``
        exp(-(K-1) c / (2N)) (module docstring), 0 for the rest.
        Statistics judged by p-values (``ks_*``, ``spectrum_max_dev``,
        ``cross_channel_*``) are not listed.
    """
    batch = _batch_shape(shape)
    frames, height, width, channels = batch
    n = frames * height * width * channels
    expected = {
        "mean": 0.0,
        "std": 1.0 - 0.25 / n,
        "skewness": 0.0,
        "excess_kurtosis": -6.0 / (n + 1),
    }
    for name in _LAGS:
        expected[name] = -1.0 / (height * width)
    expected["spectrum_flatness"] = math.exp(_flatness_null(_spectrum_counts(batch))[0])
    return expected


def standard_errors(shape: Sequence[int]) -> dict[str, float]:
    """Standard error of each statistic of :func:`gaussianity` under the i.i.d. N(0, 1) null.

    Parameters
    ----------
    shape : sequence of int
        (H, W), (H, W, C) or (T, H, W, C); n is the number of elements.

    Returns
    -------
    dict[str, float]
        ``mean`` 1/sqrt(n); ``std`` 1/sqrt(2(n-1)); ``skewness``
        sqrt(6(n-2)/((n+1)(n+3))) and ``excess_kurtosis``
        sqrt(24n(n-2)(n-3)/((n+1)^2(n+3)(n+5))) (the exact finite-n values,
        sqrt(6/n) and sqrt(24/n) asymptotically); each ``acf_*``
        1/sqrt(number of pairs); ``cross_channel_corr`` 1/sqrt(T H W - 1), the
        SE of *one* channel pair's r (the report corrects the maximum over
        pairs); ``spectrum_flatness`` sqrt(2(K-1)) c / (2N) times its
        expectation (module docstring; the report uses the exact chi2 tail).
        Entries with no data (e.g. ``acf_row`` when W = 1) are nan. The KS
        statistic and ``spectrum_max_dev`` are judged by p-values instead.
    """
    batch = _batch_shape(shape)
    frames, height, width, channels = batch
    n = frames * height * width * channels
    nan = math.nan
    errors = {
        "mean": 1.0 / math.sqrt(n),
        "std": 1.0 / math.sqrt(2.0 * (n - 1)) if n > 1 else nan,
        "skewness": math.sqrt(6.0 * (n - 2) / ((n + 1) * (n + 3))) if n > 2 else nan,
        "excess_kurtosis": (
            math.sqrt(24.0 * n * (n - 2) * (n - 3) / ((n + 1) ** 2 * (n + 3) * (n + 5)))
            if n > 3
            else nan
        ),
    }
    for name, lag in _LAGS.items():
        pairs = _lag_pairs(batch, lag)
        errors[name] = 1.0 / math.sqrt(pairs) if pairs else nan
    pixels = frames * height * width
    errors["cross_channel_corr"] = 1.0 / math.sqrt(pixels - 1) if pixels > 1 else nan
    mean_log, sd_log = _flatness_null(_spectrum_counts(batch))
    errors["spectrum_flatness"] = math.exp(mean_log) * sd_log
    return errors


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
    return statistic, float(np.clip(stats.kstwo.sf(statistic, n), 0.0, 1.0))


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
    if channels < 2:
        return 0.0, 1.0
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
    if not np.all(np.isfinite(r)):
        return math.nan, math.nan
    worst = int(np.argmax(r))
    r_max, dof = float(r[worst]), counts[upper][worst] - 2
    if dof < 1:
        return r_max, math.nan
    # Exact for one pair of independent Gaussian channels: t = r sqrt(dof / (1 - r^2)).
    t = r_max * math.sqrt(dof / max(1.0 - r_max**2, 1e-300))
    return r_max, _sidak(float(2.0 * stats.t.sf(t, dof)), upper[0].size)


def _spectrum(batch: np.ndarray, nonfinite: int) -> dict[str, float]:
    frames, height, width, channels = batch.shape
    flat_index, bin_index, count = _radial_layout(height, width)
    if nonfinite or count.size == 0:
        names = ("spectrum_flatness", "spectrum_flatness_pvalue")
        return dict.fromkeys((*names, "spectrum_max_dev", "spectrum_pvalue"), math.nan)
    coefficients = np.fft.rfft2(batch, axes=(1, 2), norm="ortho")
    power = (coefficients.real**2 + coefficients.imag**2).sum(axis=(0, 3), dtype=np.float64)
    counts = count * (frames * channels)
    sums = np.bincount(bin_index, power.ravel()[flat_index], minlength=count.size)
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
        "spectrum_pvalue": _sidak(p_min, count.size),
    }


def gaussianity(frame: np.ndarray) -> dict[str, float]:
    """Spatial white-noise statistics of one noise frame (DESIGN section 8).

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
    batch = _as_batch(frame).astype(np.float64, copy=False)
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


# ---------------------------------------------------------------------------- report


def _skewness_z(g1: float, n: int) -> float:
    """D'Agostino's normalising transform of the sample skewness (as scipy.stats.skewtest)."""
    if n < 8 or not np.isfinite(g1):
        return g1 / math.sqrt(6.0 / max(n, 1)) if np.isfinite(g1) else math.nan
    y = g1 * math.sqrt((n + 1) * (n + 3) / (6.0 * (n - 2)))
    beta2 = (
        3.0 * (n * n + 27 * n - 70) * (n + 1) * (n + 3) / ((n - 2.0) * (n + 5) * (n + 7) * (n + 9))
    )
    w2 = -1.0 + math.sqrt(2.0 * (beta2 - 1.0))
    delta = 1.0 / math.sqrt(0.5 * math.log(w2))
    alpha = math.sqrt(2.0 / (w2 - 1.0))
    return delta * math.asinh(y / alpha)


def _kurtosis_z(g2: float, n: int) -> float:
    """Anscombe-Glynn normalising transform of the excess kurtosis (scipy.stats.kurtosistest)."""
    if n < 20 or not np.isfinite(g2):
        return g2 / math.sqrt(24.0 / max(n, 1)) if np.isfinite(g2) else math.nan
    b2 = g2 + 3.0
    expected = 3.0 * (n - 1) / (n + 1)
    variance = 24.0 * n * (n - 2) * (n - 3) / ((n + 1.0) ** 2 * (n + 3) * (n + 5))
    x = (b2 - expected) / math.sqrt(variance)
    root_beta1 = (
        6.0
        * (n * n - 5 * n + 2)
        / ((n + 7.0) * (n + 9))
        * math.sqrt(6.0 * (n + 3) * (n + 5) / (n * (n - 2.0) * (n - 3)))
    )
    a = 6.0 + 8.0 / root_beta1 * (2.0 / root_beta1 + math.sqrt(1.0 + 4.0 / root_beta1**2))
    denom = 1.0 + x * math.sqrt(2.0 / (a - 4.0))
    if denom == 0.0:
        return math.copysign(math.inf, x)
    term2 = math.copysign(abs((1.0 - 2.0 / a) / denom) ** (1.0 / 3.0), denom)
    return (1.0 - 2.0 / (9.0 * a) - term2) / math.sqrt(2.0 / (9.0 * a))


def _row(value, expected, se, z, pvalue, criterion, passed) -> dict:
    return {
        "value": float(value),
        "expected": float(expected),
        "se": float(se),
        "z": float(z),
        "pvalue": float(pvalue),
        "criterion": criterion,
        "passed": bool(passed),
    }


def _judge(stats_: Mapping[str, float], shape: Sequence[int], n_sigma: float) -> dict:
    batch = _batch_shape(shape)
    frames, height, width, channels = batch
    n = frames * height * width * channels
    tail = _tail(n_sigma)
    expected = null_expectations(shape)
    errors = standard_errors(shape)
    nan = math.nan
    rows: dict[str, dict] = {}

    bad = int(stats_["nonfinite"])
    rows["nonfinite"] = _row(bad, 0, nan, nan, nan, "== 0", bad == 0)

    def z_row(name, z):
        value, se = stats_[name], errors[name]
        if not np.isfinite(se):  # no data for this statistic (e.g. W = 1): nothing to judge
            rows[name] = _row(value, expected[name], se, nan, nan, "n/a", True)
            return
        z = (value - expected[name]) / se if z is None else z
        rows[name] = _row(
            value, expected[name], se, z, nan, f"|z| <= {n_sigma:g}", abs(z) <= n_sigma
        )

    z_row("mean", None)
    z_row("std", None)
    z_row("skewness", _skewness_z(stats_["skewness"], n))
    z_row("excess_kurtosis", _kurtosis_z(stats_["excess_kurtosis"], n))
    for name in _LAGS:
        z_row(name, None)

    def p_row(name, pvalue, expected_value, se, applicable=True):
        if not applicable:
            rows[name] = _row(stats_[name], expected_value, se, nan, nan, "n/a", True)
            return
        if bad and name.startswith("spectrum"):  # not computed; ``nonfinite`` already fails
            rows[name] = _row(stats_[name], expected_value, se, nan, nan, "n/a (NaN/Inf)", True)
            return
        rows[name] = _row(
            stats_[name],
            expected_value,
            se,
            _z_from_pvalue(pvalue),
            pvalue,
            f"p >= {tail:.2g}",
            pvalue >= tail,
        )

    # Maxima (KS distance, worst pair, worst bin) have no simple expectation: nan.
    p_row("ks_stat", stats_["ks_pvalue"], nan, nan)
    p_row(
        "spectrum_flatness",
        stats_["spectrum_flatness_pvalue"],
        expected["spectrum_flatness"],
        errors["spectrum_flatness"],
        applicable=_spectrum_counts(batch).size > 1,
    )
    p_row(
        "cross_channel_corr",
        stats_["cross_channel_pvalue"],
        nan,
        errors["cross_channel_corr"],
        applicable=channels > 1,
    )
    p_row(
        "spectrum_max_dev",
        stats_["spectrum_pvalue"],
        nan,
        1.0,
        applicable=_spectrum_counts(batch).size > 0,
    )
    failed = [name for name, row in rows.items() if not row["passed"]]
    return {
        "passed": not failed,
        "failed": failed,
        "n_sigma": float(n_sigma),
        "tail_probability": tail,
        "shape": tuple(int(s) for s in shape),
        "statistics": rows,
    }


def white_noise_report(frame: np.ndarray, n_sigma: float = 5.0) -> dict:
    """Judge a frame against the i.i.d. N(0, 1) null, statistic by statistic.

    Parameters
    ----------
    frame : np.ndarray
        Float array [H, W, C] (or [H, W], or a stack [T, H, W, C], pooled).
    n_sigma : float
        Threshold in (equivalent) standard deviations; the false-alarm rate of
        each criterion is tail = 2 (1 - Phi(n_sigma)) (5.7e-7 for 5).

    Returns
    -------
    dict
        ``passed`` (bool), ``failed`` (names), ``n_sigma``, ``tail_probability``,
        ``shape`` and ``statistics``: name -> {``value``, ``expected``, ``se``,
        ``z``, ``pvalue``, ``criterion``, ``passed``}. Criteria:

        - ``nonfinite`` == 0;
        - ``mean``, ``std``, lag-1 ``acf_*``: z = (value - expected) / se;
          ``skewness`` and ``excess_kurtosis``: z from D'Agostino's and
          Anscombe-Glynn's normalising transforms (as ``scipy.stats.skewtest``
          and ``kurtosistest``; they equal (value - expected) / se for large n
          but stay calibrated in the tails for small frames);
          all need |z| <= n_sigma;
        - ``ks_stat``: ``ks_pvalue`` >= tail;
        - ``spectrum_flatness``: ``spectrum_flatness_pvalue`` (Bartlett's
          chi2_{K-1}) >= tail;
        - ``cross_channel_corr``: exact t-test p-value of the worst pair,
          Sidak-corrected over the C (C-1)/2 pairs, >= tail;
        - ``spectrum_max_dev``: ``spectrum_pvalue`` (exact Gamma per radial bin,
          Sidak over the K bins) >= tail. To first order this is the bound
          |P_b - 1| sqrt(n_b) <= Phi^-1(1 - tail / (2K)) on every bin, with the
          Gamma tail replacing the normal one where bins are small.

        For p-value criteria ``z`` is the equivalent two-sided z, so
        |z| <= n_sigma reads the same across the table. Statistics with no data
        (``acf_row`` when W = 1, cross-channel when C = 1) are marked ``n/a``.
    """
    frame = np.asarray(frame)
    return _judge(gaussianity(frame), frame.shape, n_sigma)


def format_report(report: Mapping, only_failed: bool = False) -> str:
    """A fixed-width table of a :func:`white_noise_report` (one line per statistic)."""
    lines = [
        f"{'statistic':<20}{'value':>13}{'expected':>13}{'se':>11}{'z':>10}{'p':>11}  criterion"
    ]
    for name, row in report["statistics"].items():
        if only_failed and row["passed"]:
            continue
        mark = "" if row["passed"] else "  <-- FAILED"
        lines.append(
            f"{name:<20}{row['value']:>13.6g}{row['expected']:>13.6g}{row['se']:>11.3g}"
            f"{row['z']:>10.3g}{row['pvalue']:>11.3g}  {row['criterion']}{mark}"
        )
    return "\n".join(lines)


def assert_white_noise(frame: np.ndarray, n_sigma: float = 5.0, label: str = "") -> dict:
    """Raise ``AssertionError`` unless ``frame`` passes :func:`white_noise_report`.

    Parameters
    ----------
    frame : np.ndarray
        Float array [H, W, C] (or [H, W], or a stack [T, H, W, C], pooled).
    n_sigma : float
        Threshold, as in :func:`white_noise_report`.
    label : str
        Named in the message (e.g. the method and frame under test).

    Returns
    -------
    dict
        The report, when the frame passes.

    Raises
    ------
    AssertionError
        With a table of the failing statistics.
    """
    report = white_noise_report(frame, n_sigma)
    if not report["passed"]:
        where = f" [{label}]" if label else ""
        raise AssertionError(
            f"noise{where} of shape {report['shape']} is not white N(0,1) at {n_sigma:g} sigma; "
            f"failed: {', '.join(report['failed'])}\n{format_report(report, only_failed=True)}"
        )
    return report


# --------------------------------------------------------------------------- temporal


def _particle_areas(tmap: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Sources and areas a_pq of the particle model (DESIGN section 4), [H*W, 4] each.

    An independent numpy formulation of ``noisewarp.cpu.particle`` (so the
    metric can check the kernel): target p requests the bilinear neighbours of
    u = T(p) - (0.5, 0.5); a_pq = w_pq / sum_p' w_p'q. Unused entries have area
    0 and source 0.
    """
    u = tmap.reshape(-1, 2) - 0.5
    # Clipping keeps far-away particles far away (all neighbours out of bounds)
    # and makes the integer conversion safe.
    u_row = np.clip(u[:, 0], -2.0, height + 1.0)
    u_col = np.clip(u[:, 1], -2.0, width + 1.0)
    cell_row = np.floor(u_row)
    cell_col = np.floor(u_col)
    frac_row = u_row - cell_row
    frac_col = u_col - cell_col
    cell_row = cell_row.astype(np.int64)
    cell_col = cell_col.astype(np.int64)
    sources = np.zeros((u.shape[0], 4), dtype=np.int64)
    weights = np.zeros((u.shape[0], 4), dtype=np.float64)
    for k in range(4):  # the four neighbours, not pixels
        d_row, d_col = k >> 1, k & 1
        row, col = cell_row + d_row, cell_col + d_col
        weight = (frac_row if d_row else 1.0 - frac_row) * (frac_col if d_col else 1.0 - frac_col)
        valid = (row >= 0) & (row < height) & (col >= 0) & (col < width) & (weight > 0)
        sources[:, k] = np.where(valid, row * width + col, 0)
        weights[:, k] = np.where(valid, weight, 0.0)
    claimed = np.bincount(sources.ravel(), weights.ravel(), minlength=height * width)
    with np.errstate(divide="ignore", invalid="ignore"):
        areas = np.where(weights > 0, weights / claimed[sources], 0.0)
    return sources, areas


def _temporal_inputs(prev, tmap) -> tuple[np.ndarray, np.ndarray, bool]:
    prev = np.asarray(prev)
    squeeze = prev.ndim == 2
    if squeeze:
        prev = prev[:, :, None]
    if prev.ndim != 3:
        raise ValueError(f"prev must be a frame [H, W, C] or [H, W], got shape {prev.shape}")
    height, width = prev.shape[:2]
    return prev.astype(np.float64, copy=False), as_map(tmap, height, width, "tmap"), squeeze


def _conditional_mean(prev: np.ndarray, tmap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    height, width, channels = prev.shape
    sources, areas = _particle_areas(tmap, height, width)
    total = areas.sum(axis=1)
    gathered = prev.reshape(-1, channels)[sources]  # [H*W, 4, C]
    numerator = np.einsum("pk,pkc->pc", areas, gathered)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(total > 0, 1.0 / np.sqrt(total), 0.0)
    mean = (numerator * scale[:, None]).reshape(height, width, channels)
    carried = np.where(total > 0, (areas**2).sum(axis=1) * scale**2, 0.0)
    return mean, carried


def conditional_mean(prev: np.ndarray, tmap: np.ndarray) -> np.ndarray:
    """E[Y | X = prev] of the particle warp: the motion-compensated prediction of frame t+1.

    Under the particle area model (DESIGN sections 3-4) target p requests the
    four bilinear neighbours q of u = T(p) - (0.5, 0.5) (in the frame, weight
    w_pq > 0), each source normalises a_pq = w_pq / sum_p' w_p'q, and

        E[Y_p | X] = sum_q a_pq x_q / sqrt(A_p),   A_p = sum_q a_pq,

    with 0 where A_p = 0 (fresh noise).

    Parameters
    ----------
    prev : np.ndarray
        Frame t, [H, W, C] or [H, W].
    tmap : np.ndarray
        Backward map [H, W, 2] in (row, col) pixel units.

    Returns
    -------
    np.ndarray
        float64, the shape of ``prev``.

    Examples
    --------
    >>> import numpy as np
    >>> from noisewarp.metrics import conditional_mean
    >>> x = np.random.default_rng(0).standard_normal((4, 5, 2))
    >>> identity = np.stack(np.meshgrid(np.arange(4), np.arange(5), indexing="ij"), -1) + 0.5
    >>> bool(np.allclose(conditional_mean(x, identity), x))
    True
    """
    prev, tmap, squeeze = _temporal_inputs(prev, tmap)
    mean = _conditional_mean(prev, tmap)[0]
    return mean[:, :, 0] if squeeze else mean


def temporal_metrics(prev: np.ndarray, next: np.ndarray, tmap: np.ndarray) -> dict[str, float]:
    """How much of frame t's noise frame t+1 carries along the motion.

    Parameters
    ----------
    prev, next : np.ndarray
        Frames t and t+1, [H, W, C] (or [H, W]).
    tmap : np.ndarray
        Backward map [H, W, 2] from frame t+1 to frame t, (row, col).

    Returns
    -------
    dict[str, float]
        ``temporal_corr``: Pearson r of ``next`` with :func:`conditional_mean`
        over all pixels and channels (0.0 when the prediction is constant:
        nothing is carried); ``carried_variance``: its square, the fraction of
        variance carried over (Cov[Y, E[Y|X]] = Var E[Y|X] makes r^2 that
        fraction when the particle model holds); ``expected_carried_variance``:
        the fraction the map predicts for i.i.d. unit-variance input, the mean
        over pixels of sum_q a_pq^2 / A_p.
    """
    prev, tmap, _ = _temporal_inputs(prev, tmap)
    following = np.asarray(next, dtype=np.float64)
    if following.ndim == 2:
        following = following[:, :, None]
    if following.shape != prev.shape:
        raise ValueError(f"next has shape {following.shape} but prev has shape {prev.shape}")
    mean, carried = _conditional_mean(prev, tmap)
    predicted = mean.ravel() - mean.mean()
    actual = following.ravel() - following.mean()
    denominator = math.sqrt(float(predicted @ predicted) * float(actual @ actual))
    corr = float(predicted @ actual) / denominator if denominator > 0 else 0.0
    return {
        "temporal_corr": corr,
        "carried_variance": corr * corr,
        "expected_carried_variance": float(carried.mean()),
    }


def temporal_correlation(prev: np.ndarray, next: np.ndarray, tmap: np.ndarray) -> float:
    """Pearson r of frame t+1 with its conditional mean given frame t.

    Its square is the fraction of variance carried over along the motion; see
    :func:`temporal_metrics`, which returns both. 1 for the identity map and
    ``next == prev``; about 0 (within 1/sqrt(n)) for independent frames.
    """
    return temporal_metrics(prev, next, tmap)["temporal_corr"]


# ---------------------------------------------------------------------- collections


def frame_metrics(
    frame: np.ndarray, prev: np.ndarray | None = None, tmap: np.ndarray | None = None
) -> dict[str, float]:
    """All metrics of one frame: :func:`gaussianity`, plus :func:`temporal_metrics` given both
    ``prev`` (frame t) and ``tmap`` (the backward map from ``frame`` to ``prev``)."""
    if (prev is None) != (tmap is None):
        raise ValueError("temporal metrics need both prev and tmap (or neither)")
    out = gaussianity(frame)
    if prev is not None:
        out.update(temporal_metrics(prev, frame, tmap))
    return out


def _attr_value(value):
    """netCDF attributes hold strings and numbers; anything else is written as text."""
    if isinstance(value, (str, int, float, np.integer, np.floating)) and not isinstance(
        value, bool
    ):
        return value
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    return str(value)


def metrics_dataset(
    records: Sequence[Mapping],
    dims: Sequence[str] = ("frame",),
    attrs: Mapping | None = None,
):
    """Collect per-frame metric dictionaries into an ``xarray.Dataset``.

    Parameters
    ----------
    records : sequence of mapping
        One dict per frame (e.g. from :func:`frame_metrics`), statistic -> scalar.
        Keys named in ``dims`` give the coordinates; for a single dimension
        absent from the records, the coordinate is 0, 1, 2, ...
    dims : sequence of str
        Dimension names, e.g. ``("frame",)`` or ``("method", "frame")``;
        several dims form the full product grid, missing cells are nan.
    attrs : mapping, optional
        Extra dataset attributes (non-numeric values are stored as text).

    Returns
    -------
    xarray.Dataset
        One variable per statistic (the union over records; missing values are
        nan), each with a ``long_name`` where known. Save with
        ``ds.to_netcdf(path, engine="h5netcdf")``.
    """
    import pandas as pd
    import xarray as xr

    from noisewarp import __version__

    dims = tuple(dims)
    rows = [dict(record) for record in records]
    if len(dims) == 1 and not any(dims[0] in row for row in rows):
        for index, row in enumerate(rows):
            row[dims[0]] = index
    missing = [dim for dim in dims if not all(dim in row for row in rows)]
    if missing:
        raise ValueError(f"every record needs the dimension keys {dims}; missing {missing}")
    for row in rows:
        for key, value in row.items():
            if key in dims:
                continue
            if isinstance(value, (bool, np.bool_)):
                row[key] = int(value)
            elif value is None:
                row[key] = math.nan
            elif not isinstance(value, (Number, str, np.generic)):
                raise TypeError(f"metric {key!r} must be a scalar, got {type(value).__name__}")
    table = pd.DataFrame(rows)
    if table.duplicated(subset=list(dims)).any():
        raise ValueError(f"records repeat a coordinate of {dims}")
    dataset = xr.Dataset.from_dataframe(table.set_index(list(dims)))
    for name, variable in dataset.data_vars.items():
        if name in DESCRIPTIONS:
            variable.attrs["long_name"] = DESCRIPTIONS[name]
    dataset.attrs.update(
        {
            "title": "noisewarp noise metrics",
            "null_hypothesis": "every element i.i.d. N(0, 1)",
            "temporal_model": "particle area model (DESIGN section 4)",
            "noisewarp_version": __version__,
        }
    )
    for key, value in (attrs or {}).items():
        dataset.attrs[str(key)] = _attr_value(value)
    return dataset
