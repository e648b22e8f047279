"""Optical flow: accuracy on known motion, occlusion, footprint averaging, blend, cache."""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2", reason='flow tests need OpenCV: pip install -e ".[video]"')
pytest.importorskip("skimage", reason='flow tests need scikit-image: pip install -e ".[video]"')
pytest.importorskip("av", reason='flow tests need PyAV: pip install -e ".[video]"')

import noisewarp as nw  # noqa: E402
from noisewarp import flowcheck  # noqa: E402
from noisewarp import opticalflow as of  # noqa: E402
from noisewarp.flow import identity_map  # noqa: E402
from noisewarp.metrics import assert_white_noise  # noqa: E402
from noisewarp.video import open_video  # noqa: E402

CLIP = Path(__file__).resolve().parent.parent / "noisewarp" / "data" / "bigbuckbunny.mp4"
SIZE = 256
# Mean EPE bounds (px); measured on this clip: dis 0.09-0.16, farneback 0.14-0.42, tvl1 < 0.08.
BOUNDS = {"dis": 0.5, "farneback": 0.75, "tvl1": 0.3}


@pytest.fixture(scope="module")
def photo():
    """scikit-image's astronaut, grey, 256 x 256, values in [0, 255]."""
    return flowcheck.photo(SIZE)


@pytest.mark.parametrize("method", sorted(BOUNDS))
@pytest.mark.parametrize("motion", sorted(flowcheck.MOTIONS))
def test_flow_accuracy_on_known_motion(photo, method, motion):
    first, second, truth = flowcheck.known_pair(photo, flowcheck.MOTIONS[motion])
    assert np.abs(truth).max() > 1.0  # the motion is larger than the bound
    flow = of.estimate(first, second, method)
    assert flow.shape == (SIZE, SIZE, 2) and flow.dtype == np.float32
    assert flowcheck.interior_epe(flow, truth) < BOUNDS[method], (method, motion)
    # The forward flow is the backward one of the swapped pair.
    np.testing.assert_array_equal(of.forward(second, first, method), flow)


def test_rgb_input_and_settings(photo):
    first, second, truth = flowcheck.known_pair(photo, flowcheck.MOTIONS["pan"])
    rgb = [np.repeat(image[..., None], 3, axis=2) for image in (first, second)]
    assert flowcheck.interior_epe(of.estimate(*rgb, preset="fast"), truth) < 0.5
    with pytest.raises(ValueError, match="ultrafast, fast, medium|one of"):
        of.estimate(*rgb, preset="slow")
    with pytest.raises(ValueError, match="unknown setting.*winsize.*valid: preset"):
        of.estimate(*rgb, winsize=9)
    with pytest.raises(ValueError, match="unknown flow method 'pwc'"):
        of.estimate(*rgb, method="pwc")
    with pytest.raises(ValueError, match="local weights file.*never downloads"):
        of.estimate(*rgb, method="raft")


def test_missing_dependency_names_the_extra(monkeypatch, photo):
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[video\]"'):
        of.estimate(photo, photo)


def moving_square_flows(height=64, width=96, shift=6):
    """Exact flows of a 20 x 20 square moving ``shift`` px right over a static background."""
    top, left = 22, 30
    backward = np.zeros((height, width, 2), np.float32)
    forward = np.zeros((height, width, 2), np.float32)
    forward[top : top + 20, left : left + 20, 0] = shift
    backward[top : top + 20, left + shift : left + shift + 20, 0] = -shift
    return forward, backward, (top, left, shift)


def test_occlusion_mask_exact_flows():
    forward, backward, (top, left, shift) = moving_square_flows()
    appears = occlusion = of.occlusion_mask(forward, backward)
    # Uncovered background (frame t+1): the strip the square left.
    assert appears[top : top + 20, left : left + shift].all()
    appears_rest = appears.copy()
    appears_rest[top : top + 20, left : left + shift] = False
    assert not appears_rest.any()
    # Covered background (frame t): the strip the square moves onto.
    disappears = of.occlusion_mask(forward, backward, frame="prev")
    assert disappears[top : top + 20, left + 20 : left + 20 + shift].all()
    assert disappears.sum() == 20 * shift
    # Flow from outside the frame is flagged too, even where f (edge-clamped) agrees.
    backward[:, :2, 0] = -3.0
    forward[:, :2, 0] = 3.0
    assert of.occlusion_mask(forward, backward)[:, 0].all() and occlusion.dtype == np.bool_


def test_occlusion_mask_estimated():
    """DIS on a textured square moving over a textured background."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(3)
    height, width, top, left, side, shift = 96, 128, 30, 40, 32, 6

    def texture():
        field = gaussian_filter(rng.standard_normal((height, width)), 1.5)
        return np.clip(128 + 600 * field, 0, 255).astype(np.uint8)

    background, square = texture(), texture()
    frames = []
    for offset in (0, shift):
        frame = background.copy()
        frame[top : top + side, left + offset : left + offset + side] = square[:side, :side]
        frames.append(frame)
    step = next(of.video_flows(frames))
    appeared = step.occlusion[top + 4 : top + side - 4, left + 1 : left + shift - 1]
    assert appeared.mean() > 0.5
    moved = step.occlusion[top + 4 : top + side - 4, left + shift + 4 : left + shift + side - 4]
    assert moved.mean() < 0.05  # the square itself has a consistent source
    far = np.ones((height, width), bool)
    far[top - 16 : top + side + 16, left - 16 : left + side + shift + 16] = False
    assert step.occlusion[far].mean() < 0.02


def analytic_flow(rows, cols):
    """A smooth, non-linear flow (dx, dy): dx varies along columns, dy along rows."""
    return 4.0 * np.sin(2 * np.pi * cols / 64), 2.0 * np.cos(2 * np.pi * rows / 40)


def test_footprint_average_matches_analytic_mean():
    height, width, factor = 80, 128, 8
    centres = identity_map(height, width)
    dx, dy = analytic_flow(centres[..., 0], centres[..., 1])
    tmap = of.flow_to_noise_map(np.stack([dx, dy], -1), height // factor, width // factor)
    got = (tmap - identity_map(height // factor, width // factor)) * factor  # video px, (r, c)
    # The mean of sin(2 pi x / L) over [a, a + k] is (L / 2 pi k) (cos(2 pi a/L) - cos(...)).
    low = np.arange(width // factor) * factor
    mean_dx = (
        4.0
        * 64
        / (2 * np.pi * factor)
        * (np.cos(2 * np.pi * low / 64) - np.cos(2 * np.pi * (low + factor) / 64))
    )
    low = np.arange(height // factor) * factor
    mean_dy = (
        2.0
        * 40
        / (2 * np.pi * factor)
        * (np.sin(2 * np.pi * (low + factor) / 40) - np.sin(2 * np.pi * low / 40))
    )
    np.testing.assert_allclose(got[..., 1], np.broadcast_to(mean_dx, got.shape[:2]), atol=5e-3)
    np.testing.assert_allclose(
        got[..., 0], np.broadcast_to(mean_dy[:, None], got.shape[:2]), atol=5e-3
    )
    # Point sampling at the noise pixel centres differs (the flow is not linear).
    noise_centres = identity_map(height // factor, width // factor) * factor
    point_dx, point_dy = analytic_flow(noise_centres[..., 0], noise_centres[..., 1])
    assert np.abs(point_dx - got[..., 1]).max() > 0.05
    assert np.abs(point_dy - got[..., 0]).max() > 0.05


def test_footprint_average_non_integer_factor():
    """Factor 7.5: the area average equals block means on a 2x nearest-upsampled flow."""
    rng = np.random.default_rng(1)
    flow = rng.standard_normal((60, 90, 2))
    tmap = of.flow_to_noise_map(flow, 8, 12)
    fine = np.repeat(np.repeat(flow, 2, axis=0), 2, axis=1)  # 120 x 180, factor 15
    blocks = fine.reshape(8, 15, 12, 15, 2).mean(axis=(1, 3))
    expected = identity_map(8, 12) + blocks[..., ::-1] / 7.5
    np.testing.assert_allclose(tmap, expected, atol=1e-12)


def test_translation_map_convention():
    flow = np.zeros((64, 96, 2))
    flow[..., 0], flow[..., 1] = 5.0, -3.0  # (dx, dy): source 5 px right, 3 px up
    tmap = of.flow_to_noise_map(flow, 8, 12)
    np.testing.assert_allclose(tmap, identity_map(8, 12) + [-3.0 / 8, 5.0 / 8], atol=1e-12)
    assert of.noise_size(360, 640, 80) == (45, 80)


@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.7, 1.0])
def test_blend_stays_white_and_correlates(gamma):
    warped = nw.initial_noise(128, 128, 4, seed=5)
    blended = of.blend_fresh(warped, gamma, nw.Key(5, 1))
    assert blended.dtype == warped.dtype and blended.shape == warped.shape
    assert_white_noise(blended, label=f"blend gamma={gamma}")
    corr = np.corrcoef(blended.ravel(), warped.ravel())[0, 1]
    assert abs(corr - math.sqrt(1 - gamma**2)) < 5 / math.sqrt(warped.size)
    # Fresh noise is its own stream: not the warp's initial noise of the same key.
    fresh = of.blend_fresh(warped, 1.0, nw.Key(5, 1))
    initial = nw.initial_noise(128, 128, 4, seed=5)
    assert abs(np.corrcoef(fresh.ravel(), initial.ravel())[0, 1]) < 0.02
    with pytest.raises(ValueError, match="gamma"):
        of.blend_fresh(warped, 1.5, 0)


def test_video_flows_and_cache(tmp_path, monkeypatch):
    path = tmp_path / "flows.h5"
    reader = open_video(CLIP, frames=4, size=96)
    first = list(of.video_flows(reader, cache=path))
    assert len(first) == 3
    assert first[0].backward.shape == (54, 96, 2) and first[0].occlusion.dtype == np.bool_

    # A rerun reads: no estimator is called, the video is not decoded.
    calls = []
    real = dict(of._ESTIMATORS)
    for name, function in real.items():
        monkeypatch.setitem(of._ESTIMATORS, name, lambda *a, f=function: calls.append(1) or f(*a))
    monkeypatch.setattr(
        "noisewarp.video.VideoReader._decode", lambda self: (_ for _ in ()).throw(AssertionError)
    )
    cache = of.FlowCache(path)
    again = list(of.video_flows(open_video(CLIP, frames=4, size=96), cache=cache))
    assert (cache.hits, cache.misses, len(calls)) == (3, 0, 0)
    for a, b in zip(first, again, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    monkeypatch.undo()
    # A longer run reuses the stored steps and estimates the rest.
    cache = of.FlowCache(path)
    assert len(list(of.video_flows(open_video(CLIP, frames=5, size=96), cache=cache))) == 4
    assert (cache.hits, cache.misses) == (3, 1)
    # Changed settings, size or stride: new keys, estimated again.
    for reader, settings in (
        (open_video(CLIP, frames=4, size=96), {"preset": "fast"}),
        (open_video(CLIP, frames=4, size=64), {}),
        (open_video(CLIP, frames=4, size=96, stride=2), {}),
    ):
        cache = of.FlowCache(path)
        list(of.video_flows(reader, cache=cache, **settings))
        assert (cache.hits, cache.misses) == (0, 3)
    entries = of.FlowCache(path).entries()
    assert len(entries) == 4
    assert {e["settings"]["preset"] for e in entries.values()} == {"medium", "fast"}
    # Explicit defaults resolve to the same key.
    cache = of.FlowCache(path)
    list(of.video_flows(open_video(CLIP, frames=4, size=96), cache=cache, preset="medium"))
    assert cache.misses == 0


RAFT_CHECK = Path(__file__).resolve().parent / "raft_check.py"


def test_raft_from_local_weights(tmp_path):
    """torchvision's RAFT with randomly initialised weights from a local file (the check
    itself is ``tests/raft_check.py``, in a subprocess: a torchvision installed beside a
    torch it was not built for must not reach this process, where diffusers would import
    it). ``NOISEWARP_TEST_TORCHVISION`` names a folder holding torchvision (CI installs
    it there with ``pip --target``)."""
    env = dict(os.environ)
    extra = env.get("NOISEWARP_TEST_TORCHVISION")
    if extra:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra, env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, str(RAFT_CHECK), str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    if result.returncode == 77:
        pytest.skip(result.stdout.strip())
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert "raft ok" in result.stdout


def test_clip_to_warped_noise_end_to_end():
    """Bundled clip -> DIS flows -> 1/8 noise maps -> particle warp -> blend: stays white."""
    reader = open_video(CLIP, frames=4, size=256)
    height, width = of.noise_size(*reader.size, 32)
    warper = nw.NoiseWarper(height, width, 4, method="particle", seed=2)
    frames = []
    for index, step in enumerate(of.video_flows(reader)):
        warped = warper.step(of.flow_to_noise_map(step.backward, height, width))
        frames.append(of.blend_fresh(warped, 0.2, nw.Key(2, index + 1)))
    assert len(frames) == 3 and frames[0].shape == (18, 32, 4)
    assert_white_noise(np.stack(frames), label="clip end to end")


def test_a_cache_held_by_another_process_is_skipped_with_a_warning(tmp_path):
    """While another process writes the cache file (HDF5 locks it), flows are estimated
    without it, with a warning, and equal the cached ones."""
    import subprocess
    import sys

    from noisewarp.motion import BUNDLED_CLIP
    from noisewarp.video import open_video

    path = tmp_path / "flows.h5"
    expected = [s.backward for s in of.video_flows(open_video(BUNDLED_CLIP, frames=3, size=64),
                                                     "dis", path)]  # fmt: skip
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time, h5py; f = h5py.File(sys.argv[1], 'a'); "
         "print('held', flush=True); time.sleep(60)", str(path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        reader = open_video(BUNDLED_CLIP, frames=4, size=64)
        with pytest.warns(RuntimeWarning, match="not usable"):
            held = [s.backward for s in of.video_flows(reader, "dis", path)]
    finally:
        holder.kill()
        holder.wait()
    assert len(held) == 3
    for first, second in zip(expected, held[:2], strict=True):
        np.testing.assert_array_equal(first, second)


def test_a_step_another_job_stored_meanwhile_is_not_an_error(tmp_path):
    """Two sweep jobs on one clip: the second to finish a step finds it stored and goes on."""
    path = tmp_path / "flows.h5"
    steps = list(of.video_flows(open_video(CLIP, frames=3, size=48), cache=path))
    cache = of.FlowCache(path)
    (key,) = cache.entries()
    description = {k: v for k, v in cache.entries()[key].items() if k not in ("count", "complete")}
    cache.put(key, 0, steps[0], description)  # already stored by the first job
    cache.put(key, 5, steps[0], description)  # a gap: not appended either
    assert cache.status(key) == (2, False)


def test_a_cache_file_that_is_not_hdf5_is_set_aside(tmp_path):
    path = tmp_path / "flows.h5"
    path.write_bytes(b"not an HDF5 file")
    with pytest.warns(RuntimeWarning, match="not an HDF5 file"):
        steps = list(of.video_flows(open_video(CLIP, frames=3, size=48), cache=path))
    assert (tmp_path / "flows.h5.unreadable").read_bytes() == b"not an HDF5 file"
    cache = of.FlowCache(path)
    assert [e["count"] for e in cache.entries().values()] == [len(steps)] == [2]


def test_non_finite_flow_in_the_cache_names_the_file(tmp_path):
    import h5py

    path = tmp_path / "flows.h5"
    list(of.video_flows(open_video(CLIP, frames=3, size=48), cache=path))
    with h5py.File(path, "a") as h5:
        (group,) = h5.values()
        group["backward"][1, 3, 4, 0] = np.nan
    with pytest.raises(of.FlowCacheError, match=r"flows\.h5.*non-finite flow at step 1"):
        list(of.video_flows(open_video(CLIP, frames=3, size=48), cache=path))


@pytest.mark.parametrize(
    ("method", "settings", "message"),
    [
        ("farneback", {"levels": "x"}, "levels must be an integer >= 0"),
        ("farneback", {"pyr_scale": 2.0}, r"pyr_scale must be a number > 0.0 and < 1.0"),
        ("farneback", {"winsize": 0}, "winsize must be an integer >= 1"),
        ("farneback", {"iterations": 2.5}, "iterations must be an integer"),
        ("tvl1", {"num_iter": "a"}, "num_iter must be an integer >= 1"),
        ("tvl1", {"tol": float("nan")}, "tol must be a number > 0"),
        ("tvl1", {"prefilter": 1}, "prefilter must be true or false"),
    ],
)
def test_estimator_settings_are_checked_before_any_estimate(method, settings, message):
    with pytest.raises(ValueError, match=message):
        of.resolve_settings(method, **settings)
    assert of.resolve_settings(method)  # the defaults pass
