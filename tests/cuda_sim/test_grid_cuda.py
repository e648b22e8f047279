"""The CUDA grid kernels compute the CPU grid kernels' law with the same draws: the same
record, areas, piece order and counters, so the same frame for the same key."""

import os

import numpy as np
import pytest
from numba import cuda

import noisewarp as nw
from noisewarp.deform import Fold, Rotate, Translate, Zoom
from noisewarp.metrics import assert_white_noise

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
H, W, C = 11, 14, 4

MAPS = {
    "rotate": Rotate(degrees=17.0),
    "zoom_in": Zoom(factor=1.6),
    "zoom_out": Zoom(factor=0.6),
    "fold": Fold(),  # over-claimed sources, bow-tie quads
    # Half the frame maps outside it: quads cut by the border (A_out), unclaimed sources.
    "out_of_frame": Translate(rows=-4.3, cols=8.6),
    # Everything far outside (cell ranges clamped before any conversion): all fresh.
    "far_out": Translate(rows=3.0e9, cols=-1.0e12),
    # Tens of targets gathered into each of a few source cells: buckets past the insertion
    # sort's size, heap-sorted.
    "gather": Zoom(factor=8.0),
}


def _assert_same(got, expected):
    """Bit for bit under the simulator (the kernels run the CPU's arithmetic); a few
    float32 ulps on a GPU, where NVVM fuses multiply-adds in the float64 areas."""
    if SIMULATED:
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)


def _both(noise, deformation, key):
    kwargs = dict(method="grid", key=key, return_diagnostics=True, return_conditional=True)
    return (
        nw.warp(noise, deformation, backend="cpu", **kwargs),
        nw.warp(noise, deformation, backend="cuda", **kwargs),
    )


def _assert_same_diagnostics(got, expected):
    counts = ("fresh_pixels", "overclaimed_sources", "unclaimed_sources")
    assert [getattr(got, k) for k in counts] == [getattr(expected, k) for k in counts]
    assert got.extra == expected.extra  # entries: the same record
    areas = [expected.area_min, expected.area_mean, expected.area_max]
    np.testing.assert_allclose([got.area_min, got.area_mean, got.area_max], areas,
                               rtol=0 if SIMULATED else 1e-12)  # fmt: skip


@pytest.mark.parametrize("name", MAPS)
def test_same_frame_as_the_cpu(name):
    noise = nw.initial_noise(H, W, C, seed=4)
    (a, da, ca), (b, db, cb) = _both(noise, MAPS[name], nw.Key(9, 3))
    assert isinstance(b, np.ndarray) and b.dtype == np.float32 and b.shape == a.shape
    _assert_same(b, a)
    _assert_same(cb.mean, ca.mean)
    _assert_same(cb.carried, ca.carried)
    _assert_same_diagnostics(db, da)
    if name == "fold":
        assert da.overclaimed_sources > 0
    if name == "out_of_frame":
        assert 0 < da.fresh_pixels < H * W and da.unclaimed_sources > 0
    if name == "far_out":
        assert da.fresh_pixels == da.unclaimed_sources == H * W


def test_rows_wider_than_a_warp():
    """Rows of several 32-pixel tiles: the per-row diagnostics fold the tiles in pixel
    order, as the CPU."""
    noise = nw.initial_noise(3, 75, 2, seed=3)
    (a, da, ca), (b, db, cb) = _both(noise, Rotate(degrees=31.0), nw.Key(4, 2))
    _assert_same(b, a)
    _assert_same(cb.carried, ca.carried)
    _assert_same_diagnostics(db, da)
    assert da.fresh_pixels > 0 and da.unclaimed_sources > 0


def test_corners_interpolated_on_the_device():
    """A map given at the centres only: the device interpolates the corners as the CPU."""
    noise = nw.initial_noise(H, W, C, seed=6)
    tmap = Rotate(degrees=23.0).map(H, W) + [0.3, -0.2]
    (a, da, ca), (b, db, cb) = _both(noise, tmap, nw.Key(2, 7))
    _assert_same(b, a)
    _assert_same(cb.mean, ca.mean)
    _assert_same_diagnostics(db, da)
    on_device = nw.warp(cuda.to_device(noise), cuda.to_device(tmap), method="grid", key=(2, 7))
    np.testing.assert_array_equal(on_device.copy_to_host(), b)


def test_integer_translation_is_exact_and_keys_matter():
    noise = nw.initial_noise(H, W, C, seed=1)
    shift = Translate(rows=2.0, cols=-3.0)
    out = nw.warp(noise, shift, method="grid", key=(0, 1), backend="cuda")
    np.testing.assert_array_equal(out[2:, :-3], noise[:-2, 3:])
    # Fresh noise where nothing comes in, from the key: another key, other values.
    other = nw.warp(noise, shift, method="grid", key=(0, 2), backend="cuda")
    assert not np.array_equal(out[:2], other[:2])
    cpu = nw.warp(noise, shift, method="grid", key=(0, 1), backend="cpu")
    np.testing.assert_array_equal(out, cpu)


def test_record_grows_between_frames():
    """The record's buffers are kept and regrown when a frame needs more slots; every
    frame still matches the CPU."""
    from noisewarp.cuda import arrays, grid

    arrays.release()  # start from an empty record
    noise = nw.initial_noise(H, W, C, seed=8)
    sizes = []
    for deformation in (Translate(rows=0.5), Zoom(factor=0.5), Rotate(degrees=40.0)):
        (a, da, _), (b, db, _) = _both(noise, deformation, nw.Key(1, 4))
        _assert_same(b, a)
        assert db.extra == da.extra
        sizes.append(grid.workspace(H, W, C).capacity)
    assert sizes[0] < sizes[2]


def test_device_resident_warper_streams_like_the_cpu():
    deformation = Rotate(degrees=11.0)
    cpu = nw.NoiseWarper(H, W, C, method="grid", seed=5, backend="cpu")
    gpu = nw.NoiseWarper(H, W, C, method="grid", seed=5, backend="cuda")
    resident = nw.NoiseWarper(H, W, C, method="grid", seed=5, backend="cuda",
                              noise=cuda.to_device(nw.initial_noise(H, W, C, seed=5)))  # fmt: skip
    for _ in range(3):
        a = cpu.step(deformation, conditional=True)
        b = gpu.step(deformation, conditional=True)
        c = resident.step(deformation, conditional=True)
        if SIMULATED:
            np.testing.assert_array_equal(b, a)
        else:  # each frame warps the previous one: rounding may grow a few ulps a frame
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)
        np.testing.assert_allclose(gpu.conditional.carried, cpu.conditional.carried, atol=1e-5)
        np.testing.assert_array_equal(c.copy_to_host(), b)
        np.testing.assert_array_equal(resident.conditional.mean.copy_to_host(),
                                      gpu.conditional.mean)  # fmt: skip
        assert resident.diagnostics == gpu.diagnostics
    assert gpu.frame == 3 and isinstance(gpu.noise, np.ndarray)


def test_too_many_channels_is_refused():
    noise = nw.initial_noise(4, 5, 17, seed=0)
    with pytest.raises(ValueError, match="at most 16 channels"):
        nw.warp(noise, Rotate(degrees=3.0), method="grid", backend="cuda")


def test_gaussianity_battery_on_the_cuda_path():
    """Frames warped by the CUDA grid kernels pass the white-noise battery (pooled over a
    short video)."""
    size, channels, frames = 24, 4, 3
    warper = nw.NoiseWarper(size, size, channels, method="grid", seed=11, backend="cuda")
    deformation = Zoom(factor=0.8)  # contraction: many pieces per source, many bridges
    video = np.stack([warper.step(deformation) for _ in range(frames)])
    assert_white_noise(video, label="grid on CUDA")
