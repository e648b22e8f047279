"""The simple baselines fail the way the literature says; integral warping does not.

nearest duplicates pixels (spatial correlation), bilinear without renormalisation
loses variance (and with it keeps unit variance but blurs), fixed does not move,
random does not carry anything over. The same white-noise battery and temporal
figure pass grid on the same maps, so each failure is the baseline's, not the
check's.
"""

import numpy as np
import pytest

import noisewarp as nw
from noisewarp.deform import Rotate, Translate, Zoom
from noisewarp.metrics import assert_white_noise, temporal_correlation, white_noise_report

RES, CHANNELS, FRAMES = 256, 4, 10
BASELINES = ["random", "fixed", "nearest", "bilinear"]


def run(method, deformation, frames=FRAMES, **options):
    """(first frame, last frame, last-but-one frame) of ``frames`` warps."""
    warper = nw.NoiseWarper(RES, RES, CHANNELS, method=method, seed=7, **options)
    first = warper.noise.copy()
    previous = first
    for _ in range(frames):
        previous, frame = warper.noise.copy(), warper.step(deformation)
        assert np.isfinite(frame).all()
    return first, frame, previous


@pytest.mark.parametrize("name", BASELINES)
def test_registered_with_the_common_interface(name):
    assert name in nw.METHODS
    x = nw.initial_noise(24, 20, 3, seed=1)
    y, diag = nw.warp(x, Rotate(degrees=5.0), method=name, key=nw.Key(1, 1),
                      return_diagnostics=True)  # fmt: skip
    assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    assert isinstance(diag, nw.Diagnostics)
    # Deterministic: a pure function of its inputs and key.
    np.testing.assert_array_equal(y, nw.warp(x, Rotate(degrees=5.0), method=name, key=(1, 1)))


def test_nearest_duplicates_pixels_and_correlates_neighbours():
    _, frame, _ = run("nearest", Zoom(factor=1.05))
    report = white_noise_report(frame)
    assert not report["passed"]
    assert {"acf_row", "acf_col"} <= set(report["failed"]), report["failed"]
    # One warp already copies some sources to two targets and drops others.
    x = nw.initial_noise(RES, RES, CHANNELS, seed=7)
    y, diag = nw.warp(x, Rotate(degrees=10.0), method="nearest", key=1, return_diagnostics=True)
    assert diag.overclaimed_sources > 0 and diag.unclaimed_sources > 0
    values, counts = np.unique(y[..., 0], return_counts=True)
    assert (counts > 1).sum() > 0.01 * RES * RES
    assert_white_noise(run("grid", Zoom(factor=1.05))[1], label="grid, same map")


def test_bilinear_without_renormalisation_loses_variance():
    _, frame, _ = run("bilinear", Translate(rows=0.5, cols=0.5), frames=3, renormalize=False)
    report = white_noise_report(frame)
    assert "std" in report["failed"]
    # Half-pixel shifts average four values: std (1/4)^(3/2) after three steps... far below 1.
    assert report["statistics"]["std"]["value"] < 0.5
    assert_white_noise(run("grid", Translate(rows=0.5, cols=0.5), frames=3)[1], label="grid")


def test_bilinear_renormalised_keeps_variance_but_blurs():
    # One step from white noise: each pixel has unit variance, but neighbours share
    # sources, so the frame is spatially correlated.
    _, frame, _ = run("bilinear", Rotate(degrees=3.0), frames=1, renormalize=True)
    report = white_noise_report(frame)
    assert abs(report["statistics"]["std"]["value"] - 1.0) < 0.01
    assert not report["passed"]
    assert {"acf_row", "acf_col"} <= set(report["failed"]), report["failed"]
    # The renormalisation assumes independent inputs; iterated on its own correlated
    # output it over-corrects and the variance grows frame after frame.
    _, frame, _ = run("bilinear", Rotate(degrees=3.0), frames=10, renormalize=True)
    assert white_noise_report(frame)["statistics"]["std"]["value"] > 2.0


def test_fixed_does_not_move_and_random_carries_nothing():
    shift = Translate(rows=3.0, cols=-5.0)
    tmap = shift.map(RES, RES)
    _, fixed, fixed_prev = run("fixed", shift)
    np.testing.assert_array_equal(fixed, fixed_prev)  # the noise sticks to the screen
    _, rand, rand_prev = run("random", shift)
    _, grid, grid_prev = run("grid", shift)
    # Along the motion: grid carries everything over, fixed and random nothing.
    assert temporal_correlation(grid_prev, grid, tmap) > 0.95  # 3% of pixels enter fresh
    assert abs(temporal_correlation(fixed_prev, fixed, tmap)) < 0.02
    assert abs(temporal_correlation(rand_prev, rand, tmap)) < 0.02
    # Both are white noise: what they get wrong is the time axis, not the frame.
    assert_white_noise(fixed, label="fixed")
    assert_white_noise(rand, label="random")
