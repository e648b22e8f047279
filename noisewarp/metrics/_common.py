"""Names, shapes and the radial-spectrum layout shared by the metrics modules.

The statistic names and descriptions, the lag-1 neighbour offsets, the views of
a frame as a batch [B, H, W, C], the coefficient layout of the radial power
profile, and the two p-value helpers (Sidak, Bartlett) used both by the
statistics (:mod:`noisewarp.metrics.spatial`) and by their null laws
(:mod:`noisewarp.metrics.nulls`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

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
    "temporal_corr": "Pearson r of frame t+1 with E[frame t+1 | frame t] (the method's own model)",
    "carried_variance": "temporal_corr^2: fraction of variance carried along the motion",
    "expected_carried_variance": "mean of sum_q a_pq^2 / A_p: carried variance the map predicts",
}

# Statistics whose names are Dataset methods (ds.mean, ds.std): their names in a Dataset.
DATASET_NAMES = {"mean": "noise_mean", "std": "noise_std"}

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


# ------------------------------------------------------------------ p-value helpers


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
