"""Tests of noisewarp.metrics: calibrated on white noise, sensitive to each defect."""

from __future__ import annotations

import math
import time
from collections import defaultdict

import numpy as np
import pytest
import xarray as xr
from naive.particle import conditional_moments, particle_record, record_matrix
from scipy import ndimage

from noisewarp import metrics
from noisewarp.deform import Zoom

SE_STATISTICS = ("mean", "std", "skewness", "excess_kurtosis", *metrics._LAGS)
PVALUE_STATISTICS = (
    "ks_pvalue",
    "cross_channel_pvalue",
    "spectrum_flatness_pvalue",
    "spectrum_pvalue",
)
TAIL_5SIGMA = 5.733e-7


def white(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def centres(height, width):
    rows, cols = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    return np.stack([rows, cols], axis=-1)


# --------------------------------------------------------------------- null calibration


@pytest.mark.parametrize(
    "shape, seed",
    [((64, 64, 4), 0), ((48, 33, 3), 1), ((3, 32, 32, 4), 2), ((40, 40), 3), ((17, 64, 1), 4)],
)
def test_white_noise_statistics_within_standard_errors(shape, seed):
    frame = white(shape, seed)
    values = metrics.gaussianity(frame)
    expected = metrics.null_expectations(shape)
    errors = metrics.standard_errors(shape)
    for name in SE_STATISTICS:
        assert abs(values[name] - expected[name]) <= 5 * errors[name], (name, values[name])
    for name in PVALUE_STATISTICS:
        if name == "cross_channel_pvalue" and (len(shape) == 2 or shape[-1] == 1):
            assert math.isnan(values[name])  # one channel: no pair, not applicable
            continue
        assert values[name] >= TAIL_5SIGMA, (name, values[name])
    assert (
        abs(values["spectrum_flatness"] - expected["spectrum_flatness"])
        <= 5 * errors["spectrum_flatness"]
    )
    assert 0.9 < expected["spectrum_flatness"] < 1
    assert values["nonfinite"] == 0
    report = metrics.assert_white_noise(frame, label=f"white {shape}")
    assert report["passed"] and report["failed"] == []
    assert set(report["statistics"]) >= {"nonfinite", "ks_stat", "spectrum_max_dev", *SE_STATISTICS}


def test_standard_errors_values():
    n = 64 * 64 * 4
    errors = metrics.standard_errors((64, 64, 4))
    assert errors["mean"] == pytest.approx(1 / math.sqrt(n))
    assert errors["std"] == pytest.approx(1 / math.sqrt(2 * n), rel=1e-3)
    assert errors["skewness"] == pytest.approx(math.sqrt(6 / n), rel=1e-3)
    assert errors["excess_kurtosis"] == pytest.approx(math.sqrt(24 / n), rel=2e-3)
    assert errors["acf_row"] == pytest.approx(1 / math.sqrt(4 * 64 * 63))
    assert errors["acf_diag"] == pytest.approx(1 / math.sqrt(4 * 63 * 63))
    assert errors["cross_channel_corr"] == pytest.approx(1 / math.sqrt(64 * 64 - 1))
    # A stack pools its frames.
    assert metrics.standard_errors((5, 64, 64, 4))["mean"] == pytest.approx(1 / math.sqrt(5 * n))
    assert math.isnan(metrics.standard_errors((8, 1, 3))["acf_row"])


def test_standard_errors_match_monte_carlo():
    """The SEs are the real spread (not, say, 10x too wide) and p-values are uniform."""
    shape = (16, 16, 2)
    rng = np.random.default_rng(11)
    samples = defaultdict(list)
    for _ in range(600):
        for name, value in metrics.gaussianity(rng.standard_normal(shape)).items():
            samples[name].append(value)
    errors = metrics.standard_errors(shape)
    expected = metrics.null_expectations(shape)
    for name in (*SE_STATISTICS, "cross_channel_corr", "spectrum_flatness"):
        values = np.asarray(samples[name])
        if name == "cross_channel_corr":  # one pair: |r| is half-normal
            spread = np.sqrt(np.mean(values**2))
        else:
            spread = values.std()
            assert abs(values.mean() - expected[name]) < 0.2 * errors[name], name
        assert spread == pytest.approx(errors[name], rel=0.12), name
    for name in PVALUE_STATISTICS:
        below = np.mean(np.asarray(samples[name]) < 0.1)
        assert 0.06 < below < 0.14, (name, below)


def test_spectrum_layout_counts_each_conjugate_pair_once():
    for height, width in [(8, 8), (7, 9), (6, 5), (1, 10), (9, 1), (16, 12)]:
        flat_index, bin_index, count = metrics._radial_layout(height, width)
        self_conjugate = (1 + (height % 2 == 0)) * (1 + (width % 2 == 0))
        assert flat_index.size == (height * width - self_conjugate) // 2
        assert count.sum() == flat_index.size and count.min() >= 1
        assert np.array_equal(np.unique(bin_index), np.arange(count.size))


def test_spectrum_statistics_against_full_fft():
    """Oracle: the full fft2 holds each used coefficient twice, at the same radius."""
    height, width, channels = 12, 10, 3
    frame = white((height, width, channels), 5) * np.linspace(0.8, 1.3, width)[None, :, None]
    power = (np.abs(np.fft.fft2(frame.astype(np.float64), axes=(0, 1))) ** 2).sum(-1)
    power /= height * width
    rows = np.fft.fftfreq(height)[:, None]
    cols = np.fft.fftfreq(width)[None, :]
    self_conjugate = ((rows == 0) | (rows == -0.5)) & ((cols == 0) | (cols == -0.5))
    radius_bin = np.rint(np.hypot(rows, cols) * max(height, width)).astype(int)
    profile, counts = [], []
    for b in np.unique(radius_bin[~self_conjugate]):
        inside = (radius_bin == b) & ~self_conjugate
        profile.append(power[inside].mean() / channels)
        counts.append(inside.sum() / 2 * channels)
    profile, counts = np.array(profile), np.array(counts)
    values = metrics.gaussianity(frame)
    assert values["spectrum_max_dev"] == pytest.approx(
        np.max(np.abs(profile - 1) * np.sqrt(counts)), rel=1e-5
    )
    weights = counts / counts.sum()
    flatness = np.exp(weights @ np.log(profile)) / (weights @ profile)
    assert values["spectrum_flatness"] == pytest.approx(flatness, rel=1e-6)


# ------------------------------------------------------------------------ defects


def _blurred(rng):
    frame = ndimage.gaussian_filter(rng.standard_normal((64, 64, 4)), (0.7, 0.7, 0))
    return frame / frame.std()


def _nearest_upsampled(rng):
    return np.repeat(np.repeat(rng.standard_normal((32, 32, 4)), 2, axis=0), 2, axis=1)


def _correlated_channels(rng):
    frame = rng.standard_normal((64, 64, 4))
    frame[..., 2] = 0.3 * frame[..., 0] + math.sqrt(1 - 0.09) * frame[..., 2]
    return frame


def _skewed(rng):
    return (rng.chisquare(8, (64, 64, 4)) - 8) / 4.0


def _with_nan(rng):
    frame = rng.standard_normal((64, 64, 4))
    frame[3, 5, 1] = np.nan
    frame[10, 0, 0] = np.inf
    return frame


def _copied_patch(rng):
    """A 24 x 24 patch of the noise copied elsewhere (a fold or wrap-around bug): no
    neighbour is touched, so only the all-lags autocorrelation sees it."""
    frame = rng.standard_normal((64, 64, 4))
    frame[36:60, 30:54] = frame[2:26, 5:29]
    return frame


MARGINAL = {"mean", "std", "skewness", "excess_kurtosis", "ks_stat"}
SPATIAL = {*metrics._LAGS, "spectrum_flatness", "spectrum_max_dev", "cross_channel_corr"}

# name: (build, statistics that must fail, statistics that must pass, value checks)
DEFECTS = {
    "blurred": (
        _blurred,
        {*metrics._LAGS, "spectrum_flatness", "spectrum_max_dev"},
        MARGINAL | {"cross_channel_corr"},
        {"acf_row": (0.45, 0.7), "acf_col": (0.45, 0.7), "spectrum_flatness": (0.2, 0.6)},
    ),
    "scaled": (
        lambda rng: 0.8 * rng.standard_normal((64, 64, 4)),
        {"std", "ks_stat", "spectrum_max_dev"},
        {"mean", "skewness", "excess_kurtosis", *metrics._LAGS, "spectrum_flatness"},
        {"std": (0.79, 0.81), "spectrum_flatness": (0.99, 1.0)},
    ),
    "nearest_upsampled": (
        _nearest_upsampled,
        {*metrics._LAGS, "spectrum_flatness", "spectrum_max_dev"},
        MARGINAL | {"cross_channel_corr"},
        {"acf_row": (0.45, 0.55), "acf_col": (0.45, 0.55), "acf_diag": (0.2, 0.3)},
    ),
    "uniform": (
        lambda rng: rng.uniform(-math.sqrt(3), math.sqrt(3), (64, 64, 4)),
        {"excess_kurtosis", "ks_stat"},
        {"mean", "std", "skewness"} | SPATIAL,
        {"excess_kurtosis": (-1.25, -1.15)},
    ),
    "correlated_channels": (
        _correlated_channels,
        {"cross_channel_corr"},
        MARGINAL | SPATIAL - {"cross_channel_corr"},
        {"cross_channel_corr": (0.22, 0.38)},
    ),
    "skewed": (
        _skewed,
        {"skewness", "excess_kurtosis", "ks_stat"},
        {"mean", "std"} | SPATIAL,
        {"skewness": (0.9, 1.1)},
    ),
    "copied_patch": (
        _copied_patch,
        {"acf_max"},
        MARGINAL | {*metrics._LAGS, "cross_channel_corr"},
        {},
    ),
    "nan": (
        _with_nan,
        {"nonfinite"},
        MARGINAL | {*metrics._LAGS, "cross_channel_corr"},
        {"nonfinite": (2, 2), "std": (0.97, 1.03)},
    ),
}


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_each_defect_is_detected(defect):
    build, must_fail, must_pass, ranges = DEFECTS[defect]
    frame = build(np.random.default_rng(21)).astype(np.float32)
    values = metrics.gaussianity(frame)
    for name, (low, high) in ranges.items():
        assert low <= values[name] <= high, (name, values[name])
    report = metrics.white_noise_report(frame)
    assert not report["passed"]
    assert set(report["failed"]) >= must_fail
    assert not set(report["failed"]) & must_pass, report["failed"]
    with pytest.raises(AssertionError) as error:
        metrics.assert_white_noise(frame, label=f"{defect} defect")
    message = str(error.value)
    assert f"{defect} defect" in message
    for name in must_fail:
        assert any(line.startswith(name) and "FAILED" in line for line in message.splitlines())


def test_a_stack_is_judged_frame_by_frame():
    """White frames correlated in time (a warped video) pass, where pooling them as one
    i.i.d. sample rejected them; one bad frame fails and is named."""
    rng = np.random.default_rng(4)
    frames = [rng.standard_normal((18, 32, 4))]
    for _ in range(9):
        frames.append(0.9 * frames[-1] + math.sqrt(1 - 0.81) * rng.standard_normal((18, 32, 4)))
    report = metrics.assert_white_noise(np.stack(frames))
    assert report["failed_frames"] == [] and report["shape"] == (10, 18, 32, 4)
    frames[6] = 1.3 * frames[6]
    with pytest.raises(AssertionError, match=r"frames \[6\] of 10 fail"):
        metrics.assert_white_noise(np.stack(frames))


def test_nan_frame_does_not_crash():
    frame = np.full((8, 8, 2), np.nan, dtype=np.float32)
    values = metrics.gaussianity(frame)
    assert values["nonfinite"] == frame.size
    assert math.isnan(values["mean"]) and math.isnan(values["acf_row"])
    assert metrics.white_noise_report(frame)["failed"][0] == "nonfinite"
    assert metrics.white_noise_report(np.zeros((8, 8, 2)))["passed"] is False


def test_nonfinite_elements_are_left_out():
    """Statistics of a frame half NaN equal those of its finite half."""
    frame = white((40, 64, 3), 7)
    frame[:, :30] = np.nan
    partial, finite = metrics.gaussianity(frame), metrics.gaussianity(frame[:, 30:])
    assert partial["nonfinite"] == 40 * 30 * 3
    for name in ("mean", "std", "skewness", "ks_stat", *metrics._LAGS, "cross_channel_corr"):
        assert partial[name] == pytest.approx(finite[name], rel=1e-9, abs=1e-12), name


def test_single_channel_and_degenerate_shapes():
    values = metrics.gaussianity(white((32, 32, 1), 8))
    assert math.isnan(values["cross_channel_corr"]) and math.isnan(values["cross_channel_pvalue"])
    row = metrics.white_noise_report(white((32, 32, 1), 8))["statistics"]["cross_channel_corr"]
    assert row["criterion"] == "n/a" and row["passed"]
    column = metrics.white_noise_report(white((50, 1, 2), 9))
    assert column["passed"] and column["statistics"]["acf_row"]["criterion"] == "n/a"
    assert metrics.white_noise_report(white((1, 1, 1), 9))["passed"]


def test_invalid_input():
    with pytest.raises(TypeError, match="floating"):
        metrics.gaussianity(np.zeros((4, 4, 1), dtype=np.int32))
    with pytest.raises(ValueError, match="shape"):
        metrics.gaussianity(np.zeros((2, 2, 4, 4, 1)))


def test_gaussianity_is_fast():
    frame = white((512, 512, 4), 12)
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        metrics.gaussianity(frame)
        best = min(best, time.perf_counter() - start)
    assert best < 1.0  # about 0.1 s; the bound catches Python loops over pixels, not jitter


# ----------------------------------------------------------------------- temporal


def oracle_conditional_mean(prev, tmap):
    """The particle model from the independent record of ``tests/naive`` (docs/methods.md)."""
    height, width, channels = prev.shape
    a = record_matrix(particle_record(tmap), height * width)
    flat = prev.reshape(-1, channels).astype(np.float64)
    return np.stack(
        [conditional_moments(a, flat[:, c])[0] for c in range(channels)], axis=-1
    ).reshape(prev.shape)


@pytest.mark.parametrize("outside", [False, True])
def test_conditional_mean_matches_oracle(outside):
    rng = np.random.default_rng(31 + outside)
    prev = rng.standard_normal((8, 7, 3))
    tmap = centres(8, 7) + rng.uniform(-1.7, 1.7, (8, 7, 2))
    if outside:
        tmap[:3, :, 0] -= 2.5  # top rows come from above the frame
        tmap[5:, 4:, 1] += 40.0  # far outside
        tmap[0, 0] = (-1e9, 3.0)
    expected = oracle_conditional_mean(prev.astype(np.float32), tmap)
    assert np.abs(expected).max() > 0.5
    if outside:
        assert np.all(expected[5:, 4:] == 0) and np.all(expected[0, 0] == 0)
    # The kernel warps float32 noise: agreement to float32 rounding.
    np.testing.assert_allclose(metrics.conditional_mean(prev, tmap), expected, atol=1e-6)
    np.testing.assert_allclose(
        metrics.conditional_mean(prev[..., 1], tmap), expected[..., 1], atol=1e-6
    )


def test_conditional_mean_of_translations():
    prev = white((10, 12, 2), 40).astype(np.float64)
    shifted = centres(10, 12) + np.array([2.0, -1.0])  # content moves up 2, right 1
    mean = metrics.conditional_mean(prev, shifted)
    np.testing.assert_array_equal(mean[:8, 1:], prev[2:, :11].astype(np.float32))
    assert np.all(mean[8:] == 0) and np.all(mean[:, 0] == 0)
    # Half a pixel: interior sources are split between two targets (a = 1/2), A_p = 1.
    half = metrics.conditional_mean(prev, centres(10, 12) + np.array([0.0, 0.5]))
    np.testing.assert_allclose(half[:, 1:-1], 0.5 * (prev[:, 1:-1] + prev[:, 2:]), atol=1e-6)
    expected = metrics.temporal_metrics(prev, prev, centres(10, 12) + np.array([0.0, 0.5]))
    assert expected["expected_carried_variance"] == pytest.approx(0.5, abs=0.03)


def test_temporal_correlation_identity_and_independent():
    prev = white((64, 64, 4), 50)
    identity = centres(64, 64)
    assert metrics.temporal_correlation(prev, prev, identity) == pytest.approx(1.0, abs=1e-12)
    result = metrics.temporal_metrics(prev, prev, identity)
    assert result["carried_variance"] == pytest.approx(1.0, abs=1e-12)
    for method in ("grid", "hiwyn", "nearest", "fixed"):  # every model carries all of it
        result = metrics.temporal_metrics(prev, prev, identity, method)
        assert result["carried_variance"] == pytest.approx(1.0, abs=1e-6), method
        assert result["expected_carried_variance"] == pytest.approx(1.0, abs=1e-6), method
    assert result["expected_carried_variance"] == pytest.approx(1.0)
    independent = metrics.temporal_correlation(prev, white((64, 64, 4), 51), identity)
    assert abs(independent) < 4 / math.sqrt(prev.size)
    away = metrics.temporal_metrics(prev, prev, identity + 1000.0)
    assert away == {"temporal_corr": 0.0, "carried_variance": 0.0, "expected_carried_variance": 0.0}


def test_temporal_correlation_of_a_model_sample():
    """Y = E[Y|X] + noise of the right size: r^2 recovers the predicted carried variance."""
    rng = np.random.default_rng(60)
    prev = rng.standard_normal((96, 96, 4))
    tmap = centres(96, 96) + np.array([0.3, -0.6]) + rng.uniform(-0.2, 0.2, (96, 96, 2))
    mean = metrics.conditional_mean(prev, tmap)
    result = metrics.temporal_metrics(prev, prev, tmap)
    residual = math.sqrt(1 - result["expected_carried_variance"])
    following = mean + residual * rng.standard_normal(mean.shape)
    carried = metrics.temporal_metrics(prev, following, tmap)["carried_variance"]
    assert 0.2 < result["expected_carried_variance"] < 0.8
    assert carried == pytest.approx(result["expected_carried_variance"], abs=0.02)


def test_each_method_is_scored_under_its_own_model():
    """On a zoom out, particle's fuzzy areas and grid's exact ones predict different
    carry-over. A grid frame correlates with grid's E[Y|X] as grid's map predicts
    (r^2 = expected carried variance), and not as particle's model would say."""
    size = 96
    prev = white((size, size, 4), 80)
    zoom = Zoom(factor=0.6)
    tmap = zoom.map(size, size)
    import noisewarp as nw

    following = nw.warp(prev, zoom, method="grid", key=nw.Key(3, 1))
    own = metrics.temporal_metrics(prev, following, tmap, "grid")
    other = metrics.temporal_metrics(prev, following, tmap, "particle")
    assert own["carried_variance"] == pytest.approx(own["expected_carried_variance"], abs=0.02)
    assert abs(own["expected_carried_variance"] - other["expected_carried_variance"]) > 0.1
    assert abs(other["carried_variance"] - other["expected_carried_variance"]) > 0.05


def test_temporal_input_checks():
    prev = white((6, 5, 2), 70)
    with pytest.raises(ValueError, match="shape"):
        metrics.temporal_metrics(prev, white((6, 4, 2), 71), centres(6, 5))
    with pytest.raises(ValueError):
        metrics.conditional_mean(prev, centres(5, 5))
    with pytest.raises(ValueError, match="unknown method"):
        metrics.temporal_metrics(prev, prev, centres(6, 5), "warpdrive")
    with pytest.raises(ValueError, match="both"):
        metrics.frame_metrics(prev, prev=prev)


# ---------------------------------------------------------------------- collections


def test_frame_metrics_and_dataset_round_trip(tmp_path):
    frames = [white((32, 32, 4), seed) for seed in range(3)]
    identity = centres(32, 32)
    records = [metrics.frame_metrics(frames[0])]
    records += [metrics.frame_metrics(frames[t], frames[t - 1], identity) for t in (1, 2)]
    assert set(records[0]) == set(metrics.SPATIAL_STATISTICS)
    assert set(records[1]) == set(metrics.SPATIAL_STATISTICS) | set(metrics.TEMPORAL_STATISTICS)
    dataset = metrics.metrics_dataset(records, attrs={"method": "particle", "seed": 3})
    assert dataset.sizes == {"frame": 3}
    assert list(dataset["frame"].values) == [0, 1, 2]
    assert math.isnan(dataset["temporal_corr"][0]) and abs(dataset["temporal_corr"][1]) < 0.05
    np.testing.assert_allclose(dataset["noise_std"].values, [r["std"] for r in records])
    # ds.std and ds.mean are Dataset methods: the statistics never take those names.
    assert "std" not in dataset and "mean" not in dataset and "noise_mean" in dataset
    assert dataset["acf_row"].attrs["long_name"].startswith("lag-1")
    path = tmp_path / "metrics.nc"
    dataset.to_netcdf(path, engine="h5netcdf")
    with xr.open_dataset(path, engine="h5netcdf") as loaded:
        np.testing.assert_allclose(loaded["ks_pvalue"].values, dataset["ks_pvalue"].values)
        assert loaded.attrs["method"] == "particle" and loaded.attrs["seed"] == 3


def test_dataset_with_several_dims():
    records = [
        {"method": method, "frame": frame, "std": 1.0 + frame, "nonfinite": 0}
        for method in ("grid", "particle")
        for frame in range(3)
        if (method, frame) != ("grid", 2)
    ]
    dataset = metrics.metrics_dataset(records, dims=("method", "frame"))
    assert dataset["noise_std"].dims == ("method", "frame")
    # ``method`` is also a keyword of ``sel``: select with a dict.
    assert dataset["noise_std"].sel({"method": "particle", "frame": 2}) == 3.0
    assert math.isnan(dataset["noise_std"].sel({"method": "grid", "frame": 2}))
    with pytest.raises(ValueError, match="repeat"):
        metrics.metrics_dataset(records + records[:1], dims=("method", "frame"))
    with pytest.raises(ValueError, match="missing"):
        metrics.metrics_dataset([{"frame": 0, "std": 1.0}], dims=("method", "frame"))


def test_z_scores_of_a_metrics_dataset_are_the_reports():
    """z_scores judges each frame of a Dataset as white_noise_report judges the frame."""
    frames = [white((24, 40, 3), seed) for seed in range(3)]
    frames[2] = frames[2] * 0.9  # too narrow: std's z about -19
    dataset = metrics.metrics_dataset([metrics.frame_metrics(f) for f in frames])
    dataset = dataset.assign(height=24, width=40).assign_coords(channels=3)
    z = metrics.z_scores(dataset)
    for index, frame in enumerate(frames):
        report = metrics.white_noise_report(frame)["statistics"]
        for name in ("mean", "std", "skewness", "excess_kurtosis", "acf_row", "ks_stat"):
            column = metrics.DATASET_NAMES.get(name, name)
            assert z[column].values[index] == pytest.approx(report[name]["z"], rel=1e-12)
    assert abs(z["noise_std"].values[:2]).max() < 5 < abs(z["noise_std"].values[2])
    assert z.attrs["n_sigma"] == 5.0 and z["noise_std"].dims == ("frame",)
