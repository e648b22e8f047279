"""The HIWYN baseline (Chang et al. 2024) against its oracle, and its equivalence with grid."""

import tracemalloc

import numba
import numpy as np
import pytest
from naive import hiwyn as naive
from naive.moments import moment_z_scores
from naive.particle import conditional_moments

import noisewarp as nw
from noisewarp.core.rng import Key, Purpose
from noisewarp.cpu.grid import grid_record
from noisewarp.cpu.hiwyn import hiwyn_conditional_mean, hiwyn_warp
from noisewarp.cpu.workspace import release
from noisewarp.deform import Compose, Fold, Rotate, Swirl, Translate, Zoom
from noisewarp.metrics import assert_white_noise, white_noise_report

ROTATE_ZOOM = Compose((Rotate(degrees=17.0), Zoom(factor=1.2)))
MAPS = {
    "rotate_zoom": ROTATE_ZOOM,
    "partly_outside": Translate(rows=1.3, cols=-2.6),
    "zoom_out": Zoom(factor=0.7),
    "swirl": Swirl(degrees=50.0, radius=0.4),
    "fold": Fold(strength=2.5, width=0.15),
    "magnify": Zoom(factor=3.0),  # quads smaller than a sub-pixel at n = 2: empty K_p
}


def geometry(deformation, height, width):
    return deformation.corner_map(height, width), deformation.map(height, width)


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("name", sorted(MAPS))
def test_conditional_mean_and_counts_match_oracle(name, n):
    height, width = 9, 11
    corners, centres = geometry(MAPS[name], height, width)
    x = nw.initial_noise(height, width, 2, seed=4)
    mean, counts = hiwyn_conditional_mean(x, corners, centres, n)
    expected = naive.subpixel_counts(corners, centres, n)
    assert counts.tolist() == [sum(c.values()) + fresh for c, fresh, _ in expected]
    for channel in range(2):
        reference = naive.conditional_mean(x[..., channel].reshape(-1).astype(float), expected, n)
        np.testing.assert_allclose(mean[..., channel].reshape(-1), reference, atol=1e-6)
    if name == "magnify" and n == 2:
        assert (counts == 0).any()


def test_shared_edges_split_subpixels_exactly():
    """Neighbouring quads agree on their shared edges: for an injective map the targets
    count every sub-pixel centre inside the image of the frame exactly once."""
    height, width, n = 14, 12, 4
    corners, centres = geometry(Compose((Swirl(degrees=80.0, radius=0.3), Zoom(1.15))),
                                height, width)  # fmt: skip
    _, counts = hiwyn_conditional_mean(nw.initial_noise(height, width, 1), corners, centres, n)
    outline = naive.frame_outline(corners)
    rows = [v[0] for v in outline]
    cols = [v[1] for v in outline]
    covered = sum(
        naive.inside(outline, (sr + 0.5) / n, (sc + 0.5) / n)
        for sr in range(int(np.floor(min(rows) * n)) - 1, int(np.ceil(max(rows) * n)) + 1)
        for sc in range(int(np.floor(min(cols) * n)) - 1, int(np.ceil(max(cols) * n)) + 1)
    )
    assert counts.sum() == covered


def test_identity_reproduces_the_source():
    """Each pixel gets its own n^2 sub-pixels back: Y = sum(s) / n = x."""
    x = nw.initial_noise(20, 17, 3, seed=1)
    y = nw.warp(x, nw.deform.Identity(), method="hiwyn", n=4, key=2)
    np.testing.assert_allclose(y, x, atol=2e-6)


def test_exact_conditional_moments():
    """Sample mean and covariance over keys against the exact ones of the discretised
    areas a_pq = |K_pq| / n^2 (the grid formula, docs/methods.md, with HIWYN's areas)."""
    size, n, channels = 12, 4, 16
    deformation = MAPS["partly_outside"]
    corners, centres = geometry(deformation, size, size)
    x = nw.initial_noise(size, size, 1, seed=5)
    per_target = naive.subpixel_counts(corners, centres, n)
    npix = size * size
    a = np.zeros((npix, npix))
    fresh = np.zeros(npix)
    for p, (per_source, outside, _) in enumerate(per_target):
        for q, count in per_source.items():
            a[p, q] = count / n**2
        fresh[p] = outside / n**2
    mean, cov = conditional_moments(a, x.reshape(-1).astype(float), fresh)
    stacked = np.ascontiguousarray(np.repeat(x, channels, axis=2))
    samples = []
    for d in range(4000 // channels):
        key = Key(7, d + 1)
        y, _ = hiwyn_warp(stacked, corners, centres, n, key.stream(Purpose.SUBPIXEL),
                          key.stream(Purpose.FRESH))  # fmt: skip
        samples.append(np.moveaxis(y, 2, 0).reshape(channels, -1))
    samples = np.concatenate(samples).astype(float)
    mean_z, cov_z = moment_z_scores(samples, mean, cov)
    assert mean_z < 5.0 and cov_z < 5.0, (mean_z, cov_z)
    # The same check rejects a HIWYN that forgets to centre the sub-pixel noise
    # (s = x/n + z instead of x/n + z - mean(z)): each pixel's variance doubles.
    broken = mean + np.sqrt(2.0) * (samples - mean)
    assert max(moment_z_scores(broken, mean, cov)) > 5.0


def test_equivalence_with_grid_as_n_grows():
    """Deng et al.'s equivalence: E[Y | X] of hiwyn converges to grid's as n grows
    (|K_pq| / n^2 -> a_pq), max and RMS differences falling at least like 1/n."""
    height, width = 48, 48
    deformation = Compose((Swirl(degrees=40.0, radius=0.3), Rotate(degrees=7.0), Zoom(0.9)))
    corners, centres = geometry(deformation, height, width)
    x = nw.initial_noise(height, width, 2, seed=9)
    target, source, a, area_out = grid_record(corners, height, width)
    npix = height * width
    total = np.bincount(target, weights=a, minlength=npix) + area_out
    grid_mean = np.stack(
        [np.bincount(target, weights=a * x[..., c].reshape(-1)[source], minlength=npix)
         for c in range(2)], axis=-1,
    ) / np.sqrt(total)[:, None]  # fmt: skip
    rms, worst = [], []
    ns = [2, 4, 8, 16, 32]
    for n in ns:
        mean, _ = hiwyn_conditional_mean(x, corners, centres, n)
        diff = mean.reshape(npix, 2) - grid_mean
        rms.append(float(np.sqrt((diff**2).mean())))
        worst.append(float(np.abs(diff).max()))
    rms, worst = np.array(rms), np.array(worst)
    # Both fall with every doubling of n, at least as fast as 1/n: the log-log slopes
    # are at most -0.9 (measured here: about -1.5 for the RMS, -1.3 for the max, as
    # lattice-point counting errors along the quads' edges partly cancel).
    assert (np.diff(rms) < 0).all() and (np.diff(worst) < 0).all(), (rms, worst)
    slope_rms = np.polyfit(np.log(ns), np.log(rms), 1)[0]
    slope_max = np.polyfit(np.log(ns), np.log(worst), 1)[0]
    assert slope_rms < -0.9 and slope_max < -0.9, (slope_rms, slope_max, rms, worst)
    assert rms[-1] < 0.01 and worst[-1] < 0.05, (rms, worst)


def test_deterministic_across_thread_counts():
    x = nw.initial_noise(40, 36, 4, seed=8)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = nw.warp(x, MAPS["fold"], method="hiwyn", n=4, key=nw.Key(8, 1))
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = nw.warp(x, MAPS["fold"], method="hiwyn", n=4, key=nw.Key(8, 1))
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one, many)


def test_memory_grows_as_n_squared():
    """HIWYN materialises the n x n upsampled field: its peak memory is ~ H W C n^2 floats."""
    x = nw.initial_noise(128, 128, 4, seed=0)
    peaks = {}
    for n in (2, 4, 8):
        nw.warp(x, ROTATE_ZOOM, method="hiwyn", n=n, key=1)  # compile outside the trace
        release()  # the field is kept between frames: make the traced frame build it
        tracemalloc.start()
        nw.warp(x, ROTATE_ZOOM, method="hiwyn", n=n, key=1)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    field = 128 * 128 * 4 * 4  # float32 bytes per sub-pixel layer
    for n, peak in peaks.items():
        assert field * n * n <= peak < field * n * n * 1.3 + 4e6, (n, peak)


def test_field_too_large_is_a_clear_error():
    x = nw.initial_noise(64, 64, 4)
    with pytest.raises(MemoryError, match="upsampled field"):
        nw.warp(x, nw.deform.Identity(), method="hiwyn", n=2**12, key=1)
    with pytest.raises(ValueError, match="positive integer"):
        nw.warp(x, nw.deform.Identity(), method="hiwyn", n=0, key=1)


def test_empty_and_outside_targets_are_fresh_and_finite():
    x = nw.initial_noise(16, 16, 4, seed=3)
    y, diag = nw.warp(x, Translate(rows=1e12, cols=-1e30), method="hiwyn", n=4, key=1,
                      return_diagnostics=True)  # fmt: skip
    assert diag.fresh_pixels == 16 * 16 and np.isfinite(y).all()
    y, diag = nw.warp(x, Zoom(factor=5.0), method="hiwyn", n=2, key=1, return_diagnostics=True)
    assert diag.extra["empty_targets"] > 0 and np.isfinite(y).all()


# ----------------------------------------------------------------------- marginal law

MARGINAL_N = 2  # n = 8 at 512 x 512 x 4 takes ~1 s per frame here; n = 2 tests the same code


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in nw.deform.DEFORMATIONS if n != "fold"])
def test_hiwyn_marginal_law(name):
    deformation = nw.deform.get_deformation(name)
    warper = nw.NoiseWarper(512, 512, 4, method="hiwyn", seed=2024, n=MARGINAL_N)
    for t in range(50):
        frame = warper.step(deformation)
        assert np.isfinite(frame).all(), f"hiwyn/{name}: non-finite values at frame {t + 1}"
    assert_white_noise(frame, n_sigma=5.0, label=f"hiwyn n={MARGINAL_N}/{name} after 50 frames")


@pytest.mark.slow
def test_hiwyn_fold_is_finite_but_not_white():
    """HIWYN has no fold-over handling: sub-pixels inside two quads are counted by both
    targets. One warp of white noise still has unit variance per pixel (every
    sub-pixel is N(0, 1)), but neighbours become correlated, and warping that
    correlated output again lets the variance drift (grid renormalises the
    over-claimed sources and stays white: test_grid.test_grid_marginal_law[fold])."""
    x = nw.initial_noise(512, 512, 4, seed=2024)
    once = nw.warp(x, Fold(), method="hiwyn", n=MARGINAL_N, key=nw.Key(2024, 1))
    report = white_noise_report(once)
    assert abs(report["statistics"]["std"]["z"]) < 5.0
    assert any(name.startswith("acf") for name in report["failed"]), report["failed"]
    warper = nw.NoiseWarper(512, 512, 4, method="hiwyn", seed=2024, n=MARGINAL_N)
    for t in range(50):
        frame = warper.step(Fold())
        assert np.isfinite(frame).all(), f"hiwyn/fold: non-finite values at frame {t + 1}"
    assert white_noise_report(frame)["statistics"]["std"]["value"] > 1.02
