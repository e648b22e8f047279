"""E[Y | X] as each kernel reports it (``return_conditional``), against the oracles' models.

Every method reports the conditional mean of its own model and the fraction of each
pixel's variance the source frame explains; the run's temporal metrics use them. Here
they are checked against the independent records of ``tests/naive`` (particle's fuzzy
areas, grid's clipped polygons, hiwyn's sub-pixel counts) and against the frames the
kernels actually draw.
"""

import math

import numpy as np
import pytest
from naive import grid as naive_grid
from naive import hiwyn as naive_hiwyn
from naive.particle import particle_record, record_matrix

import noisewarp as nw
from noisewarp.deform import Compose, Fold, Rotate, Translate, Zoom

MAPS = {
    "rotate_zoom": Compose((Rotate(degrees=17.0), Zoom(factor=1.2))),
    "partly_outside": Translate(rows=1.3, cols=-2.6),
    "zoom_out": Zoom(factor=0.7),
    "fold": Fold(strength=2.5, width=0.15),
}


def linear_moments(a: np.ndarray, x: np.ndarray, area: np.ndarray):
    """mean = a x / sqrt(A), carried = sum_q a^2 / A for a dense [P, Q] area matrix."""
    live = area > 0
    root = np.sqrt(np.where(live, area, 1.0))
    mean = np.where(live[:, None], (a @ x) / root[:, None], 0.0)
    carried = np.where(live, (a**2).sum(axis=1) / np.where(live, area, 1.0), 0.0)
    return mean, carried


def oracle(method: str, deformation, x: np.ndarray, n: int = 2):
    """The oracle's (mean [P, C], carried [P]) for ``method`` on frame ``x`` [H, W, C]."""
    height, width, channels = x.shape
    flat = x.reshape(-1, channels).astype(np.float64)
    if method == "particle":
        a = record_matrix(particle_record(deformation.map(height, width)), height * width)
        return linear_moments(a, flat, a.sum(axis=1))
    if method == "grid":
        record, area_out = naive_grid.grid_record(deformation.corner_map(height, width))
        a = record_matrix(naive_grid.renormalised(record), height * width)
        mean, carried = linear_moments(a, flat, a.sum(axis=1) + area_out)
        live = a.sum(axis=1) > 0  # a target with no area in the frame is fresh noise
        return np.where(live[:, None], mean, 0.0), np.where(live, carried, 0.0)
    counts = naive_hiwyn.subpixel_counts(
        deformation.corner_map(height, width), deformation.map(height, width), n
    )
    mean = np.stack([naive_hiwyn.conditional_mean(flat[:, c], counts, n) for c in range(channels)])
    carried = np.zeros(len(counts))
    for p, (per_source, fresh, fallback) in enumerate(counts):
        total = sum(per_source.values()) + fresh
        if total:
            carried[p] = sum(k * k for k in per_source.values()) / (n * n * total)
        elif fallback is not None and fallback >= 0:
            carried[p] = 1.0 / (n * n)
    return mean.T, carried


@pytest.mark.parametrize("name", sorted(MAPS))
@pytest.mark.parametrize("method", ["particle", "grid", "hiwyn"])
def test_kernel_conditional_matches_oracle(method, name):
    height, width, channels = 9, 11, 3
    x = nw.initial_noise(height, width, channels, seed=5)
    options = {"n": 3} if method == "hiwyn" else {}
    out, cond = nw.warp(
        x, MAPS[name], method=method, key=nw.Key(0, 1), return_conditional=True, **options
    )
    plain = nw.warp(x, MAPS[name], method=method, key=nw.Key(0, 1), **options)
    np.testing.assert_array_equal(out, plain)  # asking for E[Y | X] changes nothing else
    mean, carried = oracle(method, MAPS[name], x, options.get("n", 2))
    assert cond.mean.shape == (height, width, channels) and cond.carried.shape == (height, width)
    assert cond.mean.dtype == np.float32
    np.testing.assert_allclose(cond.mean.reshape(-1, channels), mean, atol=2e-6)
    np.testing.assert_allclose(cond.carried.reshape(-1), carried, atol=2e-6)
    assert np.abs(mean).max() > 0.5 and carried.max() > 0.3  # the check has something to see


def test_baseline_conditionals():
    height, width, channels = 12, 10, 2
    x = nw.initial_noise(height, width, channels, seed=6)
    shift = Translate(rows=0.0, cols=2.0)  # integer: nearest copies, bilinear copies too
    for method in ("nearest", "bilinear"):
        out, cond = nw.warp(x, shift, method=method, key=nw.Key(0, 1), return_conditional=True)
        inside = np.zeros((height, width), dtype=bool)
        inside[:, 2:] = True  # target column j reads column j - 2
        np.testing.assert_allclose(cond.mean[inside], out[inside], atol=1e-6)
        assert np.all(cond.mean[~inside] == 0) and np.all(cond.carried[~inside] == 0)
        np.testing.assert_allclose(cond.carried[inside], 1.0, atol=1e-6)
    # Half a pixel: bilinear (renormalised) mixes two sources with weights 1/2 / sqrt(1/2).
    _, cond = nw.warp(x, Translate(cols=0.5), method="bilinear", key=nw.Key(0, 1),
                      return_conditional=True)  # fmt: skip
    expected = (x[:, :-1] + x[:, 1:]) * (0.5 / math.sqrt(0.5))
    np.testing.assert_allclose(cond.mean[:, 1:], expected, atol=1e-6)
    np.testing.assert_allclose(cond.carried[:, 1:], 1.0, atol=1e-6)
    _, cond = nw.warp(x, shift, method="fixed", key=nw.Key(0, 1), return_conditional=True)
    np.testing.assert_array_equal(cond.mean, x)
    _, cond = nw.warp(x, shift, method="random", key=nw.Key(0, 1), return_conditional=True)
    assert not cond.mean.any() and not cond.carried.any()


@pytest.mark.parametrize("method", ["particle", "grid", "hiwyn"])
def test_drawn_frames_carry_what_the_model_predicts(method):
    """Cov(Y, E[Y|X]) = Var E[Y|X], so corr(Y, E[Y|X])^2 = mean carried over a frame."""
    size = 128
    x = nw.initial_noise(size, size, 4, seed=7)
    deformation = Compose((Rotate(degrees=9.0), Zoom(factor=0.8)))
    out, cond = nw.warp(x, deformation, method=method, key=nw.Key(1, 1), return_conditional=True)
    r = np.corrcoef(out.ravel(), cond.mean.ravel())[0, 1]
    assert r * r == pytest.approx(float(cond.carried.mean()), abs=0.015)


def test_models_differ_under_contraction():
    """On a zoom out particle's fuzzy areas under-represent contraction: its expected
    carry-over differs from grid's exact areas' by far more than the test's tolerance."""
    size = 96
    x = nw.initial_noise(size, size, 4, seed=8)
    carried = {}
    for method in ("particle", "grid"):
        _, cond = nw.warp(x, Zoom(factor=0.6), method=method, key=nw.Key(0, 1),
                          return_conditional=True)  # fmt: skip
        carried[method] = float(cond.carried.mean())
    assert abs(carried["particle"] - carried["grid"]) > 0.1, carried


@pytest.mark.parametrize("method", sorted(nw.METHODS))
@pytest.mark.parametrize("name", ["rotate_zoom", "partly_outside"])
@pytest.mark.parametrize("channels", [3, 4])  # particle sums four channels in registers
def test_sums_give_the_metrics_of_the_arrays(method, name, channels):
    """``return_conditional="sums"`` (the run's path: a kernel's own per-row sums, or the
    arrays reduced) gives the temporal metrics of the full ``Conditional`` to rounding,
    and the same frame; so does ``NoiseWarper.step(conditional="sums")``."""
    from noisewarp.metrics import carried_metrics, frame_metrics

    x = nw.initial_noise(40, 56, channels, seed=4)
    key = nw.Key(2, 1)
    out, cond = nw.warp(x, MAPS[name], method=method, key=key, return_conditional=True)
    again, sums = nw.warp(x, MAPS[name], method=method, key=key, return_conditional="sums")
    np.testing.assert_array_equal(again, out)
    assert isinstance(sums, nw.ConditionalSums)
    expected = carried_metrics(out, cond)
    # frame_metrics takes sum y and sum y^2 from the Gaussianity passes.
    for metrics in (carried_metrics(out, sums), frame_metrics(out, conditional=sums)):
        for field, value in expected.items():
            assert metrics[field] == pytest.approx(value, rel=1e-6, abs=1e-9), field
    np.testing.assert_allclose(
        sums, nw.ConditionalSums.of(out, cond), rtol=1e-6, atol=1e-6 * out.size
    )
    warper = nw.NoiseWarper(40, 56, channels, method=method, seed=2, noise=x)
    frame = warper.step(MAPS[name], conditional="sums")
    np.testing.assert_array_equal(frame, out)
    np.testing.assert_allclose(warper.conditional, sums, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="sums"):
        nw.warp(x, MAPS[name], method=method, return_conditional="mean")
