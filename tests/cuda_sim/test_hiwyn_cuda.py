"""The CUDA hiwyn kernels compute the CPU hiwyn's law with the same draws: the same
field, the same sub-pixel spans and the same counters, so the same frame for the same
key."""

import os

import numpy as np
import pytest
from numba import cuda

import noisewarp as nw
from noisewarp.deform import Fold, Rotate, Translate, Zoom
from noisewarp.metrics import assert_white_noise

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
H, W, C = 9, 12, 3

MAPS = {
    "rotate": Rotate(degrees=17.0),
    "zoom_in": Zoom(factor=4.0),  # quads smaller than a sub-pixel: some contain no centre
    "zoom_out": Zoom(factor=0.6),  # quads of several sources: sum_q |K_pq|^2 over columns
    "fold": Fold(),  # bow-tie quads (even-odd spans)
    "out_of_frame": Translate(rows=-3.3, cols=5.6),  # fresh sub-pixels outside the frame
    "far_out": Translate(rows=3.0e9, cols=-1.0e12),  # whole targets fresh
}


def _assert_same(got, expected):
    """Bit for bit under the simulator (the CPU's arithmetic in Python); a few float32
    ulps on a GPU, where NVVM fuses multiply-adds."""
    if SIMULATED:
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)


def _both(noise, deformation, key, n):
    kwargs = dict(method="hiwyn", key=key, n=n, return_diagnostics=True,
                  return_conditional=True)  # fmt: skip
    return (
        nw.warp(noise, deformation, backend="cpu", **kwargs),
        nw.warp(noise, deformation, backend="cuda", **kwargs),
    )


@pytest.mark.parametrize("name", MAPS)
def test_same_frame_as_the_cpu(name):
    noise = nw.initial_noise(H, W, C, seed=4)
    (a, da, ca), (b, db, cb) = _both(noise, MAPS[name], nw.Key(9, 3), n=3)
    assert isinstance(b, np.ndarray) and b.dtype == np.float32 and b.shape == a.shape
    _assert_same(b, a)
    _assert_same(cb.mean, ca.mean)
    np.testing.assert_allclose(cb.carried, ca.carried, rtol=1e-6, atol=0)
    assert db == da  # |K_p| and the fresh flags: the same integers, reduced the same way
    if name == "zoom_in":
        assert da.extra["empty_targets"] > 0
    if name == "out_of_frame":
        assert 0 < da.fresh_pixels < H * W
    if name == "far_out":
        assert da.fresh_pixels == H * W


def test_corners_interpolated_on_the_device_and_frames_on_the_device():
    """A map given at the centres only: the device interpolates the corners as the CPU;
    a device frame in, a device frame out."""
    noise = nw.initial_noise(H, W, C, seed=6)
    tmap = Rotate(degrees=23.0).map(H, W) + [0.3, -0.2]
    (a, da, ca), (b, db, cb) = _both(noise, tmap, nw.Key(2, 7), n=2)
    _assert_same(b, a)
    _assert_same(cb.mean, ca.mean)
    on_device = nw.warp(cuda.to_device(noise), cuda.to_device(tmap), method="hiwyn", n=2,
                        key=(2, 7))  # fmt: skip
    np.testing.assert_array_equal(on_device.copy_to_host(), b)


def test_gaussianity_battery_on_the_cuda_path():
    """Frames warped by the CUDA hiwyn kernels pass the white-noise battery."""
    size, channels, frames = 16, 2, 3
    warper = nw.NoiseWarper(size, size, channels, method="hiwyn", seed=11, backend="cuda", n=2)
    video = np.stack([warper.step(Rotate(degrees=9.0)) for _ in range(frames)])
    assert_white_noise(video, label="hiwyn on CUDA")
