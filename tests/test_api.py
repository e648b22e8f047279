"""Public API: validation at the boundary, clear errors, the stateful warper."""

import numpy as np
import pytest

import noisewarp as nw

H, W = 12, 10


@pytest.fixture
def noise():
    return nw.initial_noise(H, W, 3, seed=0)


@pytest.fixture
def tmap():
    return nw.deform.Translate(rows=0.25, cols=0.5).map(H, W)


def test_warp_returns_float32_frame(noise, tmap):
    out = nw.warp(noise, tmap, key=1)
    assert out.shape == (H, W, 3) and out.dtype == np.float32
    out64 = nw.warp(noise.astype(np.float64), tmap, key=1)
    np.testing.assert_array_equal(out, out64)


def test_deformation_object_accepted(noise):
    shift = nw.deform.Translate(rows=0.25, cols=0.5)
    np.testing.assert_array_equal(
        nw.warp(noise, shift, key=(0, 1)), nw.warp(noise, shift.map(H, W), key=(0, 1))
    )


def test_diagnostics(noise, tmap):
    _, diag = nw.warp(noise, tmap, key=1, return_diagnostics=True)
    assert isinstance(diag, nw.Diagnostics)
    record = diag.as_dict()
    for field in ("fresh_pixels", "overclaimed_sources", "unclaimed_sources", "area_mean"):
        assert field in record
    assert diag.fresh_pixels == 0 and 0 < diag.area_min <= diag.area_max


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (np.zeros((H, W)), ValueError, r"shape \[H, W, C\]"),
        (np.zeros((H, W, 0), np.float32), ValueError, "at least one channel"),
        (np.zeros((H, W, 3), np.int16), TypeError, "floating-point"),
        ([[0.0]], TypeError, "numpy array"),
        (np.full((H, W, 3), 1e300), ValueError, "beyond float32's range"),
    ],
)
def test_bad_noise(bad, error, message, tmap):
    with pytest.raises(error, match=message):
        nw.warp(bad, tmap)


def test_nonfinite_noise(noise, tmap):
    noise[2, 3, 1] = np.nan
    noise[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="2 non-finite"):
        nw.warp(noise, tmap)


def test_mismatched_map(noise):
    with pytest.raises(ValueError, match=r"H, W = \(12, 9\)"):
        nw.warp(noise, nw.flow.identity_map(H, W - 1))
    with pytest.raises(ValueError, match=r"\[H, W, 2\]"):
        nw.warp(noise, np.zeros((H, W, 3)))


def test_nonfinite_map_names_frame_and_count(noise, tmap):
    tmap[1, 1, 0] = np.nan
    tmap[4, 2, 1] = -np.inf
    tmap[5, 5, 1] = np.nan
    with pytest.raises(ValueError, match="frame 6 contains 3 non-finite"):
        nw.warp(noise, tmap, key=(0, 7))
    warper = nw.NoiseWarper(H, W, 3, seed=0, frame=4)
    with pytest.raises(ValueError, match="frame 4 contains 3 non-finite"):
        warper.step(tmap)
    # Nothing was consumed: the warper is still at frame 4 with its noise intact.
    assert warper.frame == 4 and np.isfinite(warper.noise).all()


def test_unknown_method_and_options(noise, tmap):
    with pytest.raises(ValueError, match="valid methods: particle"):
        nw.warp(noise, tmap, method="particles")
    with pytest.raises(TypeError, match="unknown option"):
        nw.warp(noise, tmap, method="particle", n=4)
    with pytest.raises(ValueError, match="valid backends"):
        nw.warp(noise, tmap, backend="gpu")


def test_cuda_backend_explains_itself(noise, tmap):
    with pytest.raises(RuntimeError, match="backend='cpu'"):
        nw.warp(noise, tmap, backend="cuda")


def test_warper_streams_lazily():
    consumed = []

    def maps():
        for t in range(1000):
            consumed.append(t)
            yield nw.deform.Translate(cols=0.5).map(8, 8)

    warper = nw.NoiseWarper(8, 8, 1, seed=1)
    stream = warper.warp_maps(maps())
    next(stream), next(stream)
    assert consumed == [0, 1] and warper.frame == 2


def test_warper_with_flows_matches_maps():
    shift = nw.deform.Translate(rows=0.5, cols=-0.25)
    flow_xy = np.zeros((H, W, 2))
    flow_xy[..., 0] = 0.25  # dx: backward flow points to where content came from
    flow_xy[..., 1] = -0.5  # dy
    a = list(nw.NoiseWarper(H, W, 2, seed=3).warp_flows([flow_xy] * 3))
    b = list(nw.NoiseWarper(H, W, 2, seed=3).warp_maps([shift] * 3))
    for x, y in zip(a, b, strict=False):
        np.testing.assert_array_equal(x, y)


def test_warper_initial_noise_shape_checked():
    with pytest.raises(ValueError, match="expected"):
        nw.NoiseWarper(8, 8, 2, noise=np.zeros((8, 8, 3), np.float32))


@pytest.mark.parametrize("key", [(1.7, 2.9), ("3", "1"), (True, 1), (2, -1)])
def test_keys_are_integers_in_range(noise, tmap, key):
    with pytest.raises((TypeError, ValueError), match="seed|frame"):
        nw.warp(noise, tmap, key=key)
    with pytest.raises((TypeError, ValueError), match="seed|frame"):
        nw.NoiseWarper(H, W, 3, seed=key[0], frame=key[1], noise=noise)


def test_setting_the_warper_noise_is_checked(noise):
    warper = nw.NoiseWarper(H, W, 3, seed=1)
    bad = noise.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        warper.noise = bad
    with pytest.raises(ValueError, match="expected"):
        warper.noise = noise[:, :, :1]
    warper.noise = noise.astype(np.float64)
    assert warper.noise.dtype == np.float32
    np.testing.assert_array_equal(warper.noise, noise)


def test_initial_noise_is_reproducible():
    np.testing.assert_array_equal(
        nw.initial_noise(8, 9, 2, seed=5), nw.initial_noise(8, 9, 2, seed=5)
    )
    assert not np.array_equal(nw.initial_noise(8, 9, 2, seed=5), nw.initial_noise(8, 9, 2, seed=6))
    with pytest.raises(ValueError, match="channels"):
        nw.initial_noise(8, 9, 0)
