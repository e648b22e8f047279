"""Marginal law: after 50 warps of every synthetic deformation, frames are white N(0, 1).

docs/methods.md: every output frame is i.i.d. N(0, 1) over pixels and channels. The
battery (noisewarp.metrics.assert_white_noise) checks mean, std, skewness,
kurtosis, KS, lag-1 autocorrelations, cross-channel correlation and spectral
flatness within 5 standard errors.
"""

import numpy as np
import pytest

import noisewarp as nw
from noisewarp.metrics import assert_white_noise, white_noise_report

RES, CHANNELS, FRAMES = 512, 4, 50


def run_frames(method, name, frames=FRAMES, res=RES, **options):
    deformation = nw.deform.get_deformation(name)
    warper = nw.NoiseWarper(res, res, CHANNELS, method=method, seed=2024, **options)
    for t in range(frames):
        frame = warper.step(deformation)
        assert np.isfinite(frame).all(), f"{method}/{name}: non-finite values at frame {t + 1}"
    return frame


@pytest.mark.slow
@pytest.mark.parametrize("name", list(nw.deform.DEFORMATIONS))
def test_particle_marginal_law(name):
    frame = run_frames("particle", name)
    assert_white_noise(frame, n_sigma=5.0, label=f"particle/{name} after {FRAMES} frames")


def nearest_warp(frame, tmap):
    """Nearest-neighbour resampling: the naive warp integral warping replaces."""
    height, width = frame.shape[:2]
    rows = np.clip(np.floor(tmap[..., 0]).astype(int), 0, height - 1)
    cols = np.clip(np.floor(tmap[..., 1]).astype(int), 0, width - 1)
    return frame[rows, cols]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rotate", "zoom_in", "swirl"])
def test_battery_rejects_nearest_neighbour_warping(name):
    """The same battery fails a broken warp: duplicated pixels correlate neighbours."""
    deformation = nw.deform.get_deformation(name)
    frame = nw.initial_noise(RES, RES, CHANNELS, seed=2024)
    tmap = deformation.map(RES, RES)
    for _ in range(FRAMES):
        frame = nearest_warp(frame, tmap)
    report = white_noise_report(frame, n_sigma=5.0)
    assert not report["passed"]
    with pytest.raises(AssertionError):
        assert_white_noise(frame, n_sigma=5.0, label=f"nearest/{name}")
