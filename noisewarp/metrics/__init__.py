"""Is it white noise, and how much of it moves with the motion? (docs/outputs.md.)

Two families of figures:

**Spatial Gaussianity** (:func:`gaussianity`, :func:`white_noise_report`,
:func:`assert_white_noise`). Under the null hypothesis every element of a noise
frame [H, W, C] is i.i.d. N(0, 1). Each statistic comes with its expectation and
standard error under that null (:func:`null_expectations`,
:func:`standard_errors`), so a deviation reads as a z-score.

**Temporal carry-over** (:func:`carried_metrics`, :func:`conditional_mean`,
:func:`temporal_correlation`, :func:`temporal_metrics`). Each method's kernel
reports the best prediction of frame t+1 from frame t under its own model,
E[Y_p | X] = sum_q a_pq x_q / sqrt(A_p) with its own areas; the correlation of the
actual frame t+1 with it says how much of the noise travels along the motion.

:func:`frame_metrics` bundles both for one frame and :func:`metrics_dataset`
turns a list of them into an ``xarray.Dataset`` for ``to_netcdf``.

Conventions
-----------
Frames are float arrays [H, W, C]; a 2-D array is one channel, and a 4-D stack
[T, H, W, C] is pooled by :func:`gaussianity` (every statistic uses all T frames; spatial
neighbours and spectra stay within a frame) but judged frame by frame by the report.
Maps are backward maps T [H, W, 2] in (row, col) pixel units with pixel (i, j) centred
at (i + 0.5, j + 0.5).

The lag-1 autocorrelations and the radial power spectrum are defined in
:mod:`~noisewarp.metrics.spatial`; the pass criteria of the report in
:mod:`~noisewarp.metrics.nulls`.

Modules: :mod:`~noisewarp.metrics.spatial` (the statistics and
:func:`gaussianity`), :mod:`~noisewarp.metrics.nulls` (their null laws and the
white-noise report), :mod:`~noisewarp.metrics.temporal` (carry-over along the
motion) and :mod:`~noisewarp.metrics.dataset` (per-frame records as an
``xarray.Dataset``). Every public name is re-exported here.
"""

# ruff: noqa: F401  (re-exports)
from noisewarp.metrics._common import (
    _LAGS,
    DATASET_NAMES,
    DESCRIPTIONS,
    SPATIAL_STATISTICS,
    TEMPORAL_STATISTICS,
    _as_batch,
    _batch_shape,
    _lag_pairs,
    _radial_layout,
    _spectrum_counts,
)
from noisewarp.metrics.dataset import frame_metrics, metrics_dataset
from noisewarp.metrics.nulls import (
    assert_white_noise,
    circular_acf_max,
    format_report,
    null_expectations,
    standard_errors,
    white_noise_report,
    z_scores,
)
from noisewarp.metrics.spatial import gaussianity
from noisewarp.metrics.temporal import (
    carried_metrics,
    conditional_mean,
    temporal_correlation,
    temporal_metrics,
)

__all__ = [
    "SPATIAL_STATISTICS",
    "TEMPORAL_STATISTICS",
    "gaussianity",
    "null_expectations",
    "standard_errors",
    "white_noise_report",
    "z_scores",
    "format_report",
    "assert_white_noise",
    "carried_metrics",
    "conditional_mean",
    "temporal_metrics",
    "temporal_correlation",
    "frame_metrics",
    "metrics_dataset",
]
