"""Work arrays kept between frames: reuse must never leak one frame's data into the next."""

import numpy as np

import noisewarp as nw
from noisewarp.core.rng import Key, Purpose
from noisewarp.cpu import workspace
from noisewarp.cpu.grid import grid_warp
from noisewarp.cpu.hiwyn import hiwyn_warp
from noisewarp.deform import Fold, Rotate, Zoom, corner_points


def test_grow_reuses_until_too_small():
    workspace.release()
    a = workspace.grow("test", "x", 100, np.float64)
    assert a.shape == (100,) and a.dtype == np.float64
    b = workspace.grow("test", "x", 60, np.float64)
    assert b.shape == (60,) and np.shares_memory(a, b)
    c = workspace.grow("test", "x", 1000, np.float64)
    assert c.shape == (1000,) and not np.shares_memory(a, c)
    d = workspace.grow("test", "x", 50, np.int32)
    assert d.dtype == np.int32 and d.shape == (50,)
    workspace.release()
    e = workspace.grow("test", "x", 50, np.int32)
    assert not np.shares_memory(d, e)
    workspace.release()


def _grid(noise, deformation, frame):
    height, width = noise.shape[:2]
    corners = deformation(corner_points(height, width), height, width)
    key = Key(7, frame)
    return grid_warp(noise, corners, key.stream(Purpose.BRIDGE), key.stream(Purpose.FRESH), 2)


def test_grid_frames_with_reused_arrays_equal_fresh_ones():
    """Records of different sizes in turn (a zoom-out's is larger, a fold's smaller and
    with over-claimed sources) reuse the held arrays; every frame must equal the
    same frame computed from freshly allocated arrays."""
    noise = nw.initial_noise(48, 56, 3, seed=5)
    maps = [Rotate(degrees=3.0), Zoom(factor=0.4), Fold(), Rotate(degrees=3.0), Zoom(factor=2.5)]
    fresh = []
    for frame, deformation in enumerate(maps):
        workspace.release()
        fresh.append(_grid(noise, deformation, frame))
    workspace.release()
    for frame, deformation in enumerate(maps):
        out, stats = _grid(noise, deformation, frame)
        np.testing.assert_array_equal(out, fresh[frame][0])
        assert stats == fresh[frame][1]
    workspace.release()


def test_hiwyn_frames_with_a_kept_field_equal_fresh_ones():
    """hiwyn keeps its upsampled field between frames of one shape and builds a new
    one when the frame size or n changes; no frame may see another's sub-pixels."""
    frames = [(48, 56, 2), (48, 56, 2), (48, 56, 4), (40, 56, 2), (48, 56, 2)]
    deformation = Rotate(degrees=3.0)

    def run(height, width, n, frame):
        noise = nw.initial_noise(height, width, 3, seed=frame)
        geometry = nw.Geometry.from_input(deformation, height, width)
        key = Key(7, frame)
        return hiwyn_warp(noise, np.ascontiguousarray(geometry.corner_map()),
                          np.ascontiguousarray(geometry.centres), n,
                          key.stream(Purpose.SUBPIXEL), key.stream(Purpose.FRESH))  # fmt: skip

    fresh = []
    for frame, (height, width, n) in enumerate(frames):
        workspace.release()
        fresh.append(run(height, width, n, frame))
    workspace.release()
    for frame, (height, width, n) in enumerate(frames):
        out, stats = run(height, width, n, frame)
        np.testing.assert_array_equal(out, fresh[frame][0])
        assert stats == fresh[frame][1]
    workspace.release()
