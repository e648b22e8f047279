"""The fast ``gaussianity`` path against the numpy reference and ``scipy.stats.kstest``.

Bounds: the KS statistic is the same number (rel 1e-12); moments, autocorrelations
and the cross-channel correlation agree within 1e-10 absolute (float64 sums in a
different order). The spectrum of a float64 frame agrees within rel 1e-9; for a
float32 frame ``scipy.fft`` works in complex64 and each radial bin's power sum S_b
is within 1e-6 (S_b + n_b) of the float64 one (measured: at most 2.2e-7 S_b up to
2048 x 2048), which bounds the spectrum statistics as below.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
import scipy.fft
from scipy import ndimage, stats

from noisewarp.metrics import _as_batch, _radial_layout, gaussianity
from noisewarp.metrics import spatial as s
from noisewarp.metrics._kernels import BLOCKS, radial_sums

FFT32_BOUND = 1e-6  # |S_b(float32 FFT) - S_b| <= FFT32_BOUND (S_b + n_b)
EXACT = ("mean", "std", "skewness", "excess_kurtosis", "acf_row", "acf_col", "acf_diag")
EXACT += ("acf_antidiag", "cross_channel_corr")


def normal(shape, seed, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _blurred(rng):
    return ndimage.gaussian_filter(rng.standard_normal((48, 56, 4)), (0.8, 0.8, 0))


def _duplicated_half(rng):
    frame = rng.standard_normal((64, 40, 3))
    frame[32:] = frame[:32]
    return frame


def _constant_channel(rng):
    frame = rng.standard_normal((32, 45, 4))
    frame[..., 2] = 0.7
    return frame


BROKEN = {
    "blurred": _blurred,
    "scaled": lambda rng: 1.1 * rng.standard_normal((50, 64, 4)),
    "shifted_mean": lambda rng: rng.standard_normal((64, 33, 3)) + 0.25,
    "heavy_tailed": lambda rng: rng.standard_t(3, (40, 64, 4)),
    "duplicated_half": _duplicated_half,
    "constant_channel": _constant_channel,
}


def _reference_sums(batch):
    """Each radial bin's sum of |X_k|^2 with numpy's float64 FFT (the reference's sums)."""
    flat_index, bin_index, count = _radial_layout(*batch.shape[1:3])
    coefficients = np.fft.rfft2(batch.astype(np.float64), axes=(1, 2), norm="ortho")
    power = (coefficients.real**2 + coefficients.imag**2).sum(axis=(0, 3))
    return np.bincount(bin_index, power.ravel()[flat_index], minlength=count.size)


def assert_matches_reference(frame):
    fast = gaussianity(frame)
    batch = _as_batch(frame)
    reference = s._gaussianity_reference(batch)
    assert set(fast) == set(reference)
    ks = stats.kstest(batch.astype(np.float64).ravel(), "norm")
    assert fast["ks_stat"] == pytest.approx(reference["ks_stat"], rel=1e-12, abs=0)
    assert fast["ks_stat"] == pytest.approx(ks.statistic, rel=1e-12, abs=0)
    assert fast["ks_pvalue"] == pytest.approx(reference["ks_pvalue"], rel=1e-9, abs=1e-300)
    for name in EXACT:
        if math.isnan(reference[name]):
            assert math.isnan(fast[name]), name
        else:
            assert abs(fast[name] - reference[name]) <= 1e-10, (name, fast[name], reference[name])
    pvalue = reference["cross_channel_pvalue"]
    assert fast["cross_channel_pvalue"] == pytest.approx(pvalue, rel=1e-6, abs=1e-12, nan_ok=True)
    assert fast["nonfinite"] == reference["nonfinite"] == 0

    frames, height, width, channels = batch.shape
    count = _radial_layout(height, width)[2] * (frames * channels)
    sums = _reference_sums(batch)
    profile = sums / count
    if batch.dtype == np.float64:
        for name in s._SPECTRUM_NAMES:
            assert fast[name] == pytest.approx(reference[name], rel=1e-9, abs=1e-12), name
        return
    # float32: bound each bin, then carry the bound to the statistics.
    fft = scipy.fft.rfft2(np.ascontiguousarray(batch), axes=(1, 2), norm="ortho")
    fast_sums = radial_sums(fft, s._bin_map(height, width), count.size, BLOCKS)
    assert np.all(np.abs(fast_sums - sums) <= FFT32_BOUND * (sums + count))
    profile_error = FFT32_BOUND * (profile + 1.0)
    max_dev_tol = float(np.max(profile_error * np.sqrt(count)))
    assert abs(fast["spectrum_max_dev"] - reference["spectrum_max_dev"]) <= max_dev_tol
    # flatness = exp(sum w log P) / sum w P over profiles within the bin bounds
    weights = count / count.sum()
    with np.errstate(divide="ignore"):
        low = weights @ np.log(np.maximum(profile - profile_error, 0.0))
        high = weights @ np.log(profile + profile_error)
    flatness_low = math.exp(low) / float(weights @ (profile + profile_error))
    flatness_high = math.exp(high) / float(weights @ (profile - profile_error))
    assert flatness_low <= fast["spectrum_flatness"] <= flatness_high
    assert flatness_low <= reference["spectrum_flatness"] <= flatness_high


@pytest.mark.parametrize(
    "shape, seed",
    [
        ((64, 64, 4), 0),
        ((33, 47, 3), 1),
        ((3, 20, 31, 4), 2),
        ((40, 41), 3),
        ((17, 64, 1), 4),
        ((1, 9, 2), 5),
        ((2, 1, 7, 3), 6),
    ],
)
def test_fast_path_matches_reference_on_white_noise(shape, seed):
    assert_matches_reference(normal(shape, seed))


def test_fast_path_matches_reference_in_float64():
    assert_matches_reference(normal((37, 52, 4), 7, np.float64))
    assert_matches_reference(normal((2, 24, 19, 3), 8, np.float64))


@pytest.mark.parametrize("defect", list(BROKEN))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_path_matches_reference_on_broken_frames(defect, dtype):
    assert_matches_reference(BROKEN[defect](np.random.default_rng(30)).astype(dtype))


def test_ks_exact_at_histogram_edges_ties_and_overflow():
    """Values on and a hair either side of the bin edges, many ties, beyond +-8."""
    rng = np.random.default_rng(9)
    edges = np.round(rng.standard_normal(3000) * 2**14) / 2**14
    frame = np.concatenate([edges, edges - 1e-15, np.nextafter(edges, np.inf), edges])
    frame = np.concatenate([frame, [-9.0, -8.0, 8.0, 12.0, -8.0 - 1e-13, 8.0 - 1e-13]])
    frame = frame[: frame.size // 6 * 6].reshape(-1, 6, 1)
    assert_matches_reference(frame)
    assert_matches_reference(frame.astype(np.float32))
    # Every value in one bin (its moments are rounding noise: KS only), and all beyond +-8.
    constant = np.full((8, 8, 2), 0.3)
    assert gaussianity(constant)["ks_stat"] == stats.kstest(constant.ravel(), "norm").statistic
    assert_matches_reference(np.linspace(9.0, 30.0, 96).reshape(8, 6, 2))


def test_fast_path_is_independent_of_thread_count():
    frame = normal((3, 70, 53, 4), 10)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = gaussianity(frame)
        numba.set_num_threads(threads)
        several = gaussianity(frame)
    finally:
        numba.set_num_threads(threads)
    assert single == several


def test_nonfinite_frames_take_the_reference_path():
    frame = normal((16, 16, 2), 11)
    frame[3, 4, 1] = np.inf
    assert s._gaussianity_fast(_as_batch(frame)) is None
    values = gaussianity(frame)
    assert values["nonfinite"] == 1 and math.isnan(values["spectrum_flatness"])
    assert values == s._gaussianity_reference(_as_batch(frame))
