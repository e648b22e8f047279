"""The CUDA particle kernels compute the CPU kernels' law with the same draws."""

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
    "fold": Fold(),
    # Half the frame maps outside it: fresh noise there, unclaimed sources here.
    "out_of_frame": Translate(rows=-4.3, cols=8.6),
    # Tens of targets gathered into each of a few source cells: buckets past the insertion
    # sort's size, heap-sorted.
    "gather": Zoom(factor=8.0),
}


def _both(noise, deformation, key):
    cpu = nw.warp(noise, deformation, key=key, backend="cpu", return_diagnostics=True,
                  return_conditional=True)  # fmt: skip
    gpu = nw.warp(noise, deformation, key=key, backend="cuda", return_diagnostics=True,
                  return_conditional=True)  # fmt: skip
    return cpu, gpu


@pytest.mark.parametrize("name", MAPS)
def test_same_frame_as_the_cpu_to_float32_rounding(name):
    noise = nw.initial_noise(H, W, C, seed=4)
    (a, da, ca), (b, db, cb) = _both(noise, MAPS[name], nw.Key(9, 3))
    assert isinstance(b, np.ndarray) and b.dtype == np.float32 and b.shape == a.shape
    # A few float32 ulps of values of order 1: every draw and every piece agrees.
    np.testing.assert_allclose(b, a, rtol=0, atol=2e-6)
    np.testing.assert_allclose(cb.mean, ca.mean, rtol=0, atol=2e-6)
    np.testing.assert_allclose(cb.carried, ca.carried, rtol=0, atol=2e-6)
    assert (db.fresh_pixels, db.unclaimed_sources) == (da.fresh_pixels, da.unclaimed_sources)
    np.testing.assert_allclose([db.area_min, db.area_mean, db.area_max],
                               [da.area_min, da.area_mean, da.area_max], rtol=1e-6)  # fmt: skip
    if name == "out_of_frame":
        assert da.fresh_pixels > 0 and da.unclaimed_sources > 0


@pytest.mark.parametrize("name", ["rotate", "out_of_frame"])
def test_conditional_matches_the_independent_record(name):
    """E[Y | X] against ``tests/naive``'s record, not the CPU: both backends sum it with
    ``core.particle.conditional_target``, so parity alone would not see an error there."""
    from naive.particle import particle_record, record_matrix

    noise = nw.initial_noise(H, W, C, seed=7)
    _, cond = nw.warp(noise, MAPS[name], key=(3, 1), backend="cuda", return_conditional=True)
    a = record_matrix(particle_record(MAPS[name].map(H, W)), H * W)
    area = a.sum(axis=1)
    root = np.sqrt(np.where(area > 0, area, 1.0))
    mean = (a @ noise.reshape(-1, C).astype(np.float64)) / root[:, None]
    carried = (a**2).sum(axis=1) / root**2
    np.testing.assert_allclose(cond.mean.reshape(-1, C), mean, atol=2e-6)
    np.testing.assert_allclose(cond.carried.reshape(-1), carried, atol=2e-6)
    assert np.abs(mean).max() > 0.5 and carried.max() > 0.3  # something to see


def test_integer_translation_is_exact_and_keys_matter():
    noise = nw.initial_noise(H, W, C, seed=1)
    shift = Translate(rows=2.0, cols=-3.0)
    out = nw.warp(noise, shift, key=(0, 1), backend="cuda")
    np.testing.assert_array_equal(out[2:, :-3], noise[:-2, 3:])
    # Fresh noise where nothing comes in, from the key: another key, other values.
    other = nw.warp(noise, shift, key=(0, 2), backend="cuda")
    assert not np.array_equal(out[:2], other[:2])
    np.testing.assert_array_equal(out[:2], nw.warp(noise, shift, key=(0, 1), backend="cpu")[:2])


def test_device_arrays_in_device_arrays_out():
    noise = nw.initial_noise(H, W, C, seed=2)
    tmap = Rotate(degrees=9.0).map(H, W)
    host = nw.warp(noise, tmap, key=(1, 1), backend="cuda")
    out = nw.warp(cuda.to_device(noise), cuda.to_device(tmap), key=(1, 1), backend="auto")
    assert not isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out.copy_to_host(), host)
    with pytest.raises(TypeError, match="on the GPU but the cpu backend"):
        nw.warp(cuda.to_device(noise), tmap, backend="cpu")
    with pytest.raises(TypeError, match="float32"):
        nw.warp(cuda.to_device(noise.astype(np.float64)), tmap, backend="cuda")
    bad = noise.copy()
    bad[3, 4, 1] = np.nan
    with pytest.raises(ValueError, match="noise on the GPU contains non-finite"):
        nw.warp(cuda.to_device(bad), tmap, backend="cuda")
    with pytest.raises(ValueError, match=r"map on the GPU has shape \(11, 13, 2\)"):
        nw.warp(
            cuda.to_device(noise),
            cuda.to_device(np.ascontiguousarray(tmap[:, :-1])),
            backend="cuda",
        )


def test_device_resident_warper_streams_like_the_cpu():
    deformation = Rotate(degrees=11.0)
    cpu = nw.NoiseWarper(H, W, C, seed=5, backend="cpu")
    gpu = nw.NoiseWarper(H, W, C, seed=5, backend="cuda")
    resident = nw.NoiseWarper(H, W, C, seed=5, backend="cuda",
                              noise=cuda.to_device(nw.initial_noise(H, W, C, seed=5)))  # fmt: skip
    for _ in range(3):
        a = cpu.step(deformation, conditional=True)
        b = gpu.step(deformation, conditional=True)
        c = resident.step(deformation, conditional=True)
        # Each frame warps the previous one, so rounding may grow by a few ulps a frame.
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)
        np.testing.assert_allclose(gpu.conditional.carried, cpu.conditional.carried, atol=1e-5)
        np.testing.assert_array_equal(c.copy_to_host(), b)
        np.testing.assert_array_equal(resident.conditional.mean.copy_to_host(),
                                      gpu.conditional.mean)  # fmt: skip
    assert gpu.frame == 3 and isinstance(gpu.noise, np.ndarray)


def test_conditional_sums_on_the_device_match_the_cpu():
    """``return_conditional="sums"`` and ``step(conditional="sums")`` on the CUDA backend
    (its E[Y | X] reduced on the host), host or device-resident, agree with the CPU's."""
    noise = nw.initial_noise(H, W, C, seed=6)
    deformation = Rotate(degrees=13.0)
    _, cpu = nw.warp(noise, deformation, key=(2, 1), backend="cpu", return_conditional="sums")
    _, gpu = nw.warp(noise, deformation, key=(2, 1), backend="cuda", return_conditional="sums")
    np.testing.assert_allclose(gpu, cpu, rtol=1e-5, atol=1e-5)
    resident = nw.NoiseWarper(H, W, C, seed=2, backend="cuda", noise=cuda.to_device(noise))
    resident.step(deformation, conditional="sums")
    assert isinstance(resident.conditional, nw.ConditionalSums)
    np.testing.assert_allclose(resident.conditional, cpu, rtol=1e-5, atol=1e-5)


def test_gaussianity_battery_on_the_cuda_path():
    """Frames warped on the GPU pass the white-noise battery (pooled over a short video)."""
    size, channels, frames = 24, 4, 3
    warper = nw.NoiseWarper(size, size, channels, seed=11, backend="cuda")
    deformation = Zoom(factor=0.8)  # contraction: many pieces per source, many bridges
    video = np.stack([warper.step(deformation) for _ in range(frames)])
    assert_white_noise(video, label="particle on CUDA")


def test_torch_cuda_tensors_in_and_out_without_copies():
    """On a real GPU: a torch CUDA tensor is warped in place and the result wraps as a
    torch tensor over the same device memory."""
    torch = pytest.importorskip("torch")
    if SIMULATED or not torch.cuda.is_available():
        pytest.skip("needs torch with a real CUDA device")
    noise = nw.initial_noise(H, W, C, seed=3)
    tmap = Rotate(degrees=13.0).map(H, W)
    expected = nw.warp(noise, tmap, key=(2, 5), backend="cpu")
    source = torch.from_numpy(noise).cuda()
    out = nw.warp(source, torch.from_numpy(tmap).cuda(), key=(2, 5), backend="auto")
    frame = torch.as_tensor(out, device="cuda")
    assert frame.data_ptr() == out.__cuda_array_interface__["data"][0]
    np.testing.assert_array_equal(frame.cpu().numpy(), expected)
    warper = nw.NoiseWarper(H, W, C, seed=3, noise=source, backend="cuda")
    step = torch.as_tensor(warper.step(tmap), device="cuda")
    np.testing.assert_array_equal(step.cpu().numpy(), nw.warp(noise, tmap, key=(3, 1)))


def test_device_frames_stay_valid_and_rewrapped_noise_is_not_overwritten():
    """A resident warper's frames are new each step: those returned earlier keep their
    values, and its frame set back under another wrapper (a view, a torch tensor of the
    same memory) is never the target it is read from."""
    deformation = Zoom(factor=0.7)  # contraction: fresh targets beside read sources
    cpu = nw.NoiseWarper(H, W, C, seed=3, backend="cpu")
    resident = nw.NoiseWarper(H, W, C, seed=3, backend="cuda",
                              noise=cuda.to_device(nw.initial_noise(H, W, C, seed=3)))  # fmt: skip
    first = resident.step(deformation)
    kept = first.copy_to_host()
    resident.noise = first.reshape(H, W, C)  # the same memory, another wrapper
    frames = [resident.step(deformation).copy_to_host() for _ in range(2)]
    np.testing.assert_array_equal(first.copy_to_host(), kept)
    expected = [cpu.step(deformation) for _ in range(3)]
    np.testing.assert_allclose(np.stack([kept, *frames]), np.stack(expected), rtol=0, atol=1e-5)


def test_an_out_frame_sharing_the_source_is_refused():
    from noisewarp.cuda.adapter import warp_on_device

    noise = cuda.to_device(nw.initial_noise(H, W, C, seed=1))
    tmap = Rotate(degrees=5.0).map(H, W)
    with pytest.raises(ValueError, match="out shares memory with noise"):
        warp_on_device(None, noise, tmap, None, False, out=noise.reshape(H, W, C))
