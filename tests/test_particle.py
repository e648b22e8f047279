"""The particle method (docs/methods.md, Algorithm 3): exact statistics against the oracle."""

import numba
import numpy as np
import pytest
from naive.moments import moment_z_scores
from naive.particle import conditional_moments, record_matrix
from naive.particle import particle_record as naive_record

import noisewarp as nw
from noisewarp.cpu.particle import particle_record
from noisewarp.deform import centre_points

SIZE = 24


def rotate_zoom_map(height, width, degrees=17.0, scale=0.83):
    """T(p) = c + scale * R(degrees) (p - c): rotation plus magnification (contraction of T)."""
    p = centre_points(height, width)
    centre = np.array([height / 2, width / 2])
    t = np.deg2rad(degrees)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return centre + scale * (p - centre) @ rot.T


def fold_map(height, width, amplitude=2.5):
    """A non-injective map: d T_col / d col = 1 + 2 pi A / L cos(...) < 0 in bands."""
    p = centre_points(height, width)
    out = p.copy()
    out[..., 1] += amplitude * np.sin(2 * np.pi * p[..., 1] / 8.0)
    out[..., 0] += 0.37
    return out


def translate_map(height, width, rows, cols):
    p = centre_points(height, width)
    return p - np.array([rows, cols])


MAPS = {
    "subpixel_translate": lambda h, w: translate_map(h, w, 0.3, -0.45),
    "rotate_zoom": rotate_zoom_map,
    "fold": fold_map,
    "partly_outside": lambda h, w: translate_map(h, w, 3.5, -2.25),
}


@pytest.mark.parametrize("name", sorted(MAPS))
def test_partition_record_matches_oracle(name):
    tmap = MAPS[name](SIZE, SIZE + 3)
    target, source, area = particle_record(tmap)
    expected = naive_record(tmap)
    got = {(int(p), int(q)): a for p, q, a in zip(target, source, area, strict=False)}
    assert got.keys() == expected.keys()
    for pair, value in expected.items():
        assert abs(got[pair] - value) < 1e-12
    # Every requested source is split exactly: S_q = 1.
    sums = np.bincount(source, weights=area)
    assert np.allclose(sums[sums > 0], 1.0, atol=1e-12)


def sample_warps(x, tmap, draws, method="particle", channels=16, **options):
    """``draws`` independent warps of the single-channel frame ``x``, as [draws, H*W].

    Channels are independent and share the geometry, so a frame holding ``x`` in
    each of ``channels`` channels yields that many independent samples per key.
    """
    stacked = np.repeat(x, channels, axis=2)
    out = []
    for d in range(-(-draws // channels)):
        y = nw.warp(stacked, tmap, method=method, key=nw.Key(11, d + 1), **options)
        out.append(np.moveaxis(y, 2, 0).reshape(channels, -1))
    return np.concatenate(out)[:draws].astype(np.float64)


@pytest.mark.parametrize("name", sorted(MAPS))
def test_exact_conditional_moments(name):
    """Sample mean and covariance over keys, source fixed, within 5 standard errors."""
    x = nw.initial_noise(SIZE, SIZE, 1, seed=5)
    tmap = MAPS[name](SIZE, SIZE)
    a = record_matrix(naive_record(tmap), SIZE * SIZE)
    mean, cov = conditional_moments(a, x.reshape(-1).astype(np.float64))
    samples = sample_warps(x, tmap, 6000)
    mean_z, cov_z = moment_z_scores(samples, mean, cov)
    assert mean_z < 5.0, f"{name}: conditional mean off by {mean_z:.1f} SE"
    assert cov_z < 5.0, f"{name}: conditional covariance off by {cov_z:.1f} SE"


def test_moment_check_rejects_broken_warps():
    """The same check fails a warp with wrong variance and nearest-neighbour resampling."""
    x = nw.initial_noise(SIZE, SIZE, 1, seed=5)
    tmap = rotate_zoom_map(SIZE, SIZE)
    a = record_matrix(naive_record(tmap), SIZE * SIZE)
    mean, cov = conditional_moments(a, x.reshape(-1).astype(np.float64))
    samples = sample_warps(x, tmap, 2000)
    # Forgetting the 1/sqrt(A_p) normalisation changes mean and variance.
    areas = a.sum(axis=1)
    unnormalised = samples * np.sqrt(np.where(areas > 0, areas, 1.0))
    assert max(moment_z_scores(unnormalised, mean, cov)) > 5.0
    # Dropping the bridge (each piece gets the mean a_pq x_q, no randomness) collapses variance.
    no_bridge = np.broadcast_to(mean, samples.shape) + 0.2 * (samples - mean)
    assert max(moment_z_scores(no_bridge, mean, cov)) > 5.0
    # Nearest-neighbour resampling: deterministic given X, so its covariance is zero.
    idx = np.clip(np.floor(tmap).astype(int), 0, SIZE - 1)
    nearest = x[idx[..., 0], idx[..., 1], 0].reshape(-1)
    jitter = np.random.default_rng(0).normal(0, 1e-3, samples.shape)
    assert max(moment_z_scores(nearest + jitter, mean, cov)) > 5.0


def test_integer_translation_is_bit_exact():
    x = nw.initial_noise(40, 50, 3, seed=2)
    y, diag = nw.warp(x, translate_map(40, 50, 3, -4), key=nw.Key(2, 1), return_diagnostics=True)
    # Content moved down 3 rows and left 4 columns.
    np.testing.assert_array_equal(y[3:, :-4], x[:-3, 4:])
    # Fresh noise only where content enters: the top 3 rows and the right 4 columns.
    assert diag.fresh_pixels == 40 * 50 - 37 * 46
    entering = np.ones((40, 50), bool)
    entering[3:, :-4] = False
    assert not np.isin(y[entering], x).any()
    assert np.isfinite(y).all()


def test_identity_is_bit_exact():
    x = nw.initial_noise(33, 17, 2, seed=4)
    np.testing.assert_array_equal(nw.warp(x, nw.flow.identity_map(33, 17), key=3), x)


def test_far_outside_map_gives_fresh_noise():
    x = nw.initial_noise(16, 16, 2, seed=4)
    tmap = translate_map(16, 16, 1e12, -1e30)
    y, diag = nw.warp(x, tmap, key=1, return_diagnostics=True)
    assert diag.fresh_pixels == 16 * 16
    assert diag.unclaimed_sources == 16 * 16
    assert np.isfinite(y).all() and abs(y.std() - 1) < 0.2


def test_deterministic_across_thread_counts():
    x = nw.initial_noise(96, 80, 4, seed=8)
    tmap = rotate_zoom_map(96, 80)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = nw.warp(x, tmap, key=nw.Key(8, 1))
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = nw.warp(x, tmap, key=nw.Key(8, 1))
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one, many)
    assert not np.array_equal(one, nw.warp(x, tmap, key=nw.Key(8, 2)))


@pytest.mark.parametrize("name", sorted(MAPS))
def test_diagnostics_match_the_record(name):
    """Unclaimed sources (no particle requests them) and fresh pixels (no neighbour
    in the frame), counted inside the kernel's chunks, equal the record's counts."""
    height, width = SIZE + 5, SIZE
    tmap = MAPS[name](height, width)
    if name == "rotate_zoom":
        tmap = rotate_zoom_map(height, width, scale=2.5)  # particles 2.5 px apart: gaps
    target, source, _ = particle_record(tmap)
    x = nw.initial_noise(height, width, 2, seed=5)
    _, diag = nw.warp(x, tmap, key=2, return_diagnostics=True)
    assert diag.unclaimed_sources == height * width - np.unique(source).size
    assert diag.fresh_pixels == height * width - np.unique(target).size
    if name in ("rotate_zoom", "partly_outside"):
        assert diag.unclaimed_sources > 0


def test_chunking_does_not_change_output():
    from noisewarp.core.rng import Key, Purpose
    from noisewarp.cpu.particle import particle_warp

    x = nw.initial_noise(64, 48, 2, seed=1)
    tmap = fold_map(64, 48)
    key = Key(1, 1)
    runs = [
        particle_warp(x, tmap, key.stream(Purpose.BRIDGE), key.stream(Purpose.FRESH), n)
        for n in (1, 2, 3, 7)
    ]
    for out, stats in runs[1:]:
        np.testing.assert_array_equal(runs[0][0], out)
        assert stats == runs[0][1]  # the diagnostics too, area_mean to the last bit
    # A swirl whose area sum changed in the last bit with the chunking while it was
    # summed per chunk.
    tmap = np.ascontiguousarray(nw.deform.Swirl().map(128, 128))
    x = nw.initial_noise(128, 128, 4, seed=1)
    stats = [
        particle_warp(x, tmap, key.stream(Purpose.BRIDGE), key.stream(Purpose.FRESH), n)[1]
        for n in (1, 2, 3, 5, 8)
    ]
    assert all(s == stats[0] for s in stats[1:]), stats


def test_resumed_run_equals_uninterrupted_run():
    height, width = 40, 36
    maps = [rotate_zoom_map(height, width, degrees=3.0 * (t + 1), scale=1.01) for t in range(6)]
    full = nw.NoiseWarper(height, width, 3, seed=21)
    frames = list(full.warp_maps(maps))
    resumed = nw.NoiseWarper(height, width, 3, seed=21, noise=frames[2].copy(), frame=3)
    tail = list(resumed.warp_maps(maps[3:]))
    for a, b in zip(frames[3:], tail, strict=False):
        np.testing.assert_array_equal(a, b)
    assert resumed.frame == full.frame == 6


def test_fold_is_finite_and_reported():
    x = nw.initial_noise(64, 64, 4, seed=3)
    y, diag = nw.warp(x, fold_map(64, 64), key=1, return_diagnostics=True)
    assert np.isfinite(y).all()
    assert diag.overclaimed_sources == 0  # particle normalises per source: never over-claims
    assert diag.area_max > 1.0  # targets in the fold draw from more than one unit of area
