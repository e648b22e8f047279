"""Null laws of the spatial statistics and the white-noise report.

Under the null hypothesis every element of a noise frame [H, W, C] is i.i.d.
N(0, 1). Each statistic of :func:`~noisewarp.metrics.spatial.gaussianity`
comes with its expectation and standard error under that null
(:func:`null_expectations`, :func:`standard_errors`), so a deviation reads as a
z-score; :func:`white_noise_report` judges a frame statistic by statistic.

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

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from noisewarp.metrics._common import (
    _LAGS,
    DATASET_NAMES,
    SPATIAL_STATISTICS,
    _bartlett,
    _batch_shape,
    _lag_pairs,
    _spectrum_counts,
)
from noisewarp.metrics.spatial import gaussianity

__all__ = [
    "z_scores",
    "null_expectations",
    "standard_errors",
    "white_noise_report",
    "format_report",
    "assert_white_noise",
]


# ----------------------------------------------------------------------- null laws


def _tail(n_sigma: float) -> float:
    """Two-sided normal tail probability of ``n_sigma``."""
    return float(2.0 * stats.norm.sf(n_sigma))


def _z_from_pvalue(pvalue: float) -> float:
    """Equivalent two-sided z of a p-value (inf for p = 0, nan for nan)."""
    if not np.isfinite(pvalue):
        return math.nan
    return float(stats.norm.isf(min(max(pvalue, 0.0), 1.0) / 2.0))


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
    for name in _LAGS:  # each channel is centred over all T frames
        expected[name] = -1.0 / (frames * height * width)
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
    if "acf_max" in stats_:  # the report's own (not a metrics.nc statistic)
        p_row("acf_max", stats_["acf_max_pvalue"], nan, 1.0, applicable=height * width > 2)
    failed = [name for name, row in rows.items() if not row["passed"]]
    return {
        "passed": not failed,
        "failed": failed,
        "n_sigma": float(n_sigma),
        "tail_probability": tail,
        "shape": tuple(int(s) for s in shape),
        "statistics": rows,
    }


def circular_acf_max(frame: np.ndarray) -> tuple[float, float]:
    """The largest |circular autocorrelation| of a frame [H, W, C] over every non-zero
    lag, in standard errors, and its Sidak p-value over the distinct lags.

    r(k) = sum_p,c x_p,c x_p+k,c / n (n = H W C, lags wrap around) is N(0, 1/n) under the
    null, N(0, 2/n) for a lag that is its own negative (2k = 0 modulo the size); k and -k
    are one lag. Catches noise copied anywhere in the frame, which the lag-1 figures miss.
    """
    x = np.asarray(frame, dtype=np.float64)
    x = x[..., None] if x.ndim == 2 else x
    height, width, channels = x.shape
    n = height * width * channels
    spectrum = np.fft.rfft2(x, axes=(0, 1))
    power = (spectrum.real**2 + spectrum.imag**2).sum(axis=2)
    acf = np.fft.irfft2(power, s=(height, width)) / n
    own = np.logical_and.outer(2 * np.arange(height) % height == 0,
                               2 * np.arange(width) % width == 0)  # fmt: skip
    z = np.abs(acf) * math.sqrt(n) / np.where(own, math.sqrt(2.0), 1.0)
    z[0, 0] = 0.0
    lags = (height * width - int(own.sum())) // 2 + int(own.sum()) - 1
    worst = float(z.max())
    single = float(2.0 * stats.norm.sf(worst))
    return worst, float(-np.expm1(lags * np.log1p(-min(single, 1.0 - 1e-16))))


def white_noise_report(frame: np.ndarray, n_sigma: float = 5.0) -> dict:
    """Judge a frame against the i.i.d. N(0, 1) null, statistic by statistic.

    Parameters
    ----------
    frame : np.ndarray
        Float array [H, W, C] (or [H, W]), or a stack [T, H, W, C] judged frame by
        frame, each at tail / T (the report is the first failing frame's, with ``frame``
        and ``failed_frames``; frames of a video are not independent, so not pooled).
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
          Gamma tail replacing the normal one where bins are small;
        - ``acf_max``: the largest |circular autocorrelation| over all lags, in
          standard errors (:func:`circular_acf_max`), Sidak over the lags, p >= tail
          (noise duplicated anywhere in the frame; not a ``metrics.nc`` statistic).

        For p-value criteria ``z`` is the equivalent two-sided z, so
        |z| <= n_sigma reads the same across the table. Statistics with no data
        (``acf_row`` when W = 1, cross-channel when C = 1) are marked ``n/a``.
    """
    frame = np.asarray(frame)
    if frame.ndim == 4 and frame.shape[0] > 1:
        return _stack_report(frame, n_sigma)
    values = gaussianity(frame)
    if values["nonfinite"] == 0:
        values["acf_max"], values["acf_max_pvalue"] = circular_acf_max(
            frame[0] if frame.ndim == 4 else frame
        )
    return _judge(values, frame.shape, n_sigma)


def _stack_report(stack: np.ndarray, n_sigma: float) -> dict:
    """A stack [T, H, W, C] judged frame by frame (frames of a warped video are correlated
    in time, so pooling them is no i.i.d. sample), each at the tail divided by T; the
    report of the first failing frame, or of the frame with the largest |z|."""
    frames = stack.shape[0]
    per_frame = _z_from_pvalue(_tail(n_sigma) / frames)
    reports = [white_noise_report(frame, per_frame) for frame in stack]

    def largest(report):
        return max((abs(row["z"]) for row in report["statistics"].values()
                    if np.isfinite(row["z"])), default=0.0)  # fmt: skip

    failing = [i for i, r in enumerate(reports) if not r["passed"]]
    index = failing[0] if failing else max(range(frames), key=lambda i: largest(reports[i]))
    return {**reports[index], "shape": tuple(int(s) for s in stack.shape), "frame": index,
            "failed_frames": failing, "n_sigma": float(n_sigma),
            "tail_probability": _tail(n_sigma)}  # fmt: skip


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
        Float array [H, W, C] (or [H, W], or a stack [T, H, W, C], judged frame by frame).
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
        if report.get("failed_frames"):
            where += f" (frames {report['failed_frames']} of {report['shape'][0]} fail)"
        raise AssertionError(
            f"noise{where} of shape {report['shape']} is not white N(0,1) at {n_sigma:g} sigma; "
            f"failed: {', '.join(report['failed'])}\n{format_report(report, only_failed=True)}"
        )
    return report


def z_scores(dataset, n_sigma: float = 5.0):
    """Every judged statistic of a metrics Dataset as the white-noise report's z-score.

    ``dataset`` is one run's ``metrics.nc`` or a collected sweep (it needs the
    statistics, ``height``, ``width`` and ``channels``). Each frame is judged by
    :func:`white_noise_report`'s rules against its own exact null: (value - E) / SE
    (skewness and kurtosis through their normalising transforms), N(0, 1) under the null;
    statistics judged by a p-value give Phi^-1(1 - p/2), distributed as |N(0, 1)|.
    Returns a Dataset of the same dims, one variable per statistic (NaN where a frame was
    not measured), with ``n_sigma`` (the report's threshold) as an attribute.
    """
    import xarray as xr

    names = [n for n in SPATIAL_STATISTICS if DATASET_NAMES.get(n, n) in dataset]
    values = [dataset[DATASET_NAMES.get(n, n)] for n in names]
    shape = [dataset[k] for k in ("height", "width", "channels")]
    *values, height, width, channels = xr.broadcast(*values, *shape)
    template = values[0]
    judged = [n for n in ("mean", "std", "skewness", "excess_kurtosis", *_LAGS, "ks_stat",
                          "spectrum_flatness", "cross_channel_corr", "spectrum_max_dev")
              if n in names or f"{n[:-5]}_pvalue" in names]  # fmt: skip
    out = {n: np.full(template.shape, np.nan) for n in judged}
    flat = [np.asarray(v.values, dtype=np.float64).ravel() for v in values]
    sizes = [np.asarray(a.values, dtype=np.float64).ravel() for a in (height, width, channels)]
    for index in range(template.size):
        record = {name: column[index] for name, column in zip(names, flat, strict=True)}
        size = tuple(column[index] for column in sizes)
        if not (np.isfinite(record.get("nonfinite", np.nan)) and np.isfinite(size).all()):
            continue  # a frame not measured, or a run that is missing
        rows = _judge(record, tuple(int(n) for n in size), n_sigma)["statistics"]
        for name in judged:
            out[name].flat[index] = rows[name]["z"]
    result = xr.Dataset(
        {DATASET_NAMES.get(n, n): (template.dims, z) for n, z in out.items()},
        coords=template.coords,
    )
    for name, variable in result.data_vars.items():
        variable.attrs.update(long_name=f"z-score of {name} against the i.i.d. N(0, 1) null",
                              units="1")  # fmt: skip
    result.attrs["n_sigma"] = float(n_sigma)
    return result
