"""Flow conventions, flow -> map conversion, corner maps, sampling and flow files."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from noisewarp.deform import (
    Compose,
    Rotate,
    Shear,
    Swirl,
    Translate,
    Turbulence,
    Zoom,
    ZoomIn,
    ZoomOut,
    centre_points,
    corner_points,
)
from noisewarp.flow import (
    FLO_MAGIC,
    FlowInversionWarning,
    bilinear_sample,
    corner_map_from_centres,
    flow_from_deformation,
    flow_from_map,
    identity_map,
    load_flow,
    map_from_backward_flow,
    map_from_flow,
    map_from_forward_flow,
    read_flo,
    write_flo,
)

DATA = Path(__file__).resolve().parents[1] / "noisewarp" / "data"

AFFINE = [
    Translate(rows=0.3, cols=-1.7),
    Translate(rows=2.0, cols=-3.0),
    Rotate(degrees=10.0),
    ZoomIn(),
    ZoomOut(),
    Shear(amount=0.1),
    Shear(amount=-0.2, axis="row"),
    Compose((Rotate(25.0), Zoom(1.3, centre=(0.2, 0.7)), Shear(0.3), Translate(1.5, 2.5))),
]
# For forward inversion |grad f| must stay well below 1 (the fixed point contracts by it
# per iteration), so the composition is milder than in AFFINE.
FORWARD = [
    *AFFINE[:-1],
    Compose((Rotate(8.0), Zoom(1.1, centre=(0.2, 0.7)), Shear(0.1), Translate(1.5, 2.5))),
]


def inside(tmap: np.ndarray, height: int, width: int) -> np.ndarray:
    """Targets whose exact source lies within the hull of the pixel centres (no clamping)."""
    return (
        (tmap[..., 0] >= 0.5)
        & (tmap[..., 0] <= height - 0.5)
        & (tmap[..., 1] >= 0.5)
        & (tmap[..., 1] <= width - 0.5)
    )


# ---------------------------------------------------------------------- identity, backward


def test_identity_map():
    tmap = identity_map(3, 5)
    assert tmap.shape == (3, 5, 2) and tmap.dtype == np.float64
    np.testing.assert_array_equal(tmap[2, 4], [2.5, 4.5])
    np.testing.assert_array_equal(tmap, centre_points(3, 5))
    with pytest.raises(ValueError, match="height must be an integer >= 1"):
        identity_map(0, 5)


def test_backward_flow_conventions():
    flow = np.zeros((4, 6, 2))
    flow[..., 0] = 2.0  # dx: the source is 2 px to the right (col)
    flow[..., 1] = -1.0  # dy: and 1 px up (row)
    tmap = map_from_backward_flow(flow)
    np.testing.assert_array_equal(tmap[1, 2], [0.5, 4.5])
    np.testing.assert_array_equal(map_from_backward_flow(flow[..., ::-1], order="rc"), tmap)
    np.testing.assert_array_equal(map_from_flow(flow), tmap)


@pytest.mark.parametrize("deformation", [*AFFINE, Swirl(), Turbulence()])
def test_backward_flow_to_map_is_exact(deformation):
    height, width = 24, 40
    flow_xy = flow_from_deformation(deformation, height, width)
    expected = deformation.map(height, width)
    np.testing.assert_allclose(map_from_backward_flow(flow_xy), expected, atol=1e-12, rtol=0)
    flow_rc = flow_from_deformation(deformation, height, width, order="rc")
    np.testing.assert_array_equal(flow_rc, flow_xy[..., ::-1])
    np.testing.assert_allclose(
        map_from_backward_flow(flow_rc, order="rc"), expected, atol=1e-12, rtol=0
    )
    # float32 and integer flows are accepted too.
    np.testing.assert_allclose(
        map_from_backward_flow(flow_xy.astype(np.float32)), expected, atol=1e-4, rtol=0
    )


def test_backward_stack_and_input_untouched():
    turbulence = Turbulence()
    stack = np.stack([flow_from_deformation(turbulence, 16, 20, frame=t) for t in range(3)])
    maps = map_from_backward_flow(stack)
    assert maps.shape == (3, 16, 20, 2)
    for t in range(3):
        np.testing.assert_allclose(maps[t], turbulence.map(16, 20, frame=t), atol=1e-12)
    flow_rc = np.ascontiguousarray(stack[0][..., ::-1])
    before = flow_rc.copy()
    map_from_backward_flow(flow_rc, order="rc")
    np.testing.assert_array_equal(flow_rc, before)
    integer = np.ones((2, 3, 2), dtype=np.int32)
    np.testing.assert_array_equal(map_from_backward_flow(integer), centre_points(2, 3) + 1)


def test_flow_from_map_inverts_map_from_backward_flow():
    tmap = Swirl().map(10, 12)
    np.testing.assert_allclose(map_from_backward_flow(flow_from_map(tmap)), tmap, atol=1e-12)
    np.testing.assert_allclose(flow_from_map(tmap, order="rc"), tmap - centre_points(10, 12))


def test_values_far_outside_the_frame_are_valid():
    flow = np.full((3, 4, 2), 1e7)
    np.testing.assert_allclose(map_from_backward_flow(flow), centre_points(3, 4) + 1e7)
    tmap = map_from_forward_flow(flow, iterations=3)
    assert np.isfinite(tmap).all()
    np.testing.assert_allclose(tmap, centre_points(3, 4) - 1e7)


# ---------------------------------------------------------------------- forward


@pytest.mark.parametrize("deformation", FORWARD)
def test_forward_flow_round_trip_affine(deformation):
    height, width = 64, 48
    forward = flow_from_deformation(deformation, height, width, direction="forward")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # converges: no FlowInversionWarning
        tmap, residual = map_from_forward_flow(forward, return_residual=True)
    expected = deformation.map(height, width)
    mask = inside(expected, height, width)
    assert mask.mean() > 0.5
    assert np.abs(tmap - expected)[mask].max() < 1e-3
    assert residual <= 1e-4
    # The reported residual is the true max |T + f(T) - p| of the returned map.
    f_rc = np.ascontiguousarray(forward[..., ::-1])
    actual = np.linalg.norm(
        tmap + bilinear_sample(f_rc, tmap) - centre_points(height, width), axis=-1
    )
    assert residual == pytest.approx(actual.max(), abs=1e-12)


def test_forward_flow_round_trip_swirl_quantified():
    """Bilinear sampling of a curved flow costs accuracy; in pixels it shrinks like 1/size."""
    errors = {}
    for size, degrees in [(128, 30.0), (512, 30.0), (512, 10.0)]:
        swirl = Swirl(degrees=degrees)
        forward = flow_from_deformation(swirl, size, size, direction="forward")
        tmap, residual = map_from_forward_flow(forward, return_residual=True)
        expected = swirl.map(size, size)
        mask = inside(expected, size, size)
        errors[size, degrees] = np.abs(tmap - expected)[mask].max()
        assert residual <= 1e-4
    assert 1e-3 < errors[128, 30.0] < 8e-3  # measured 5.6e-3
    assert errors[512, 30.0] < errors[128, 30.0] / 3  # measured 1.5e-3
    assert errors[512, 10.0] < 1e-3  # measured 5.4e-4


def test_forward_flow_rc_and_xy_agree_and_iterations_zero_is_the_first_guess():
    forward = flow_from_deformation(Rotate(5.0), 20, 30, direction="forward")
    np.testing.assert_array_equal(
        map_from_forward_flow(forward), map_from_forward_flow(forward[..., ::-1], order="rc")
    )
    with pytest.warns(FlowInversionWarning):
        first = map_from_forward_flow(forward, iterations=0)
    np.testing.assert_allclose(first, centre_points(20, 30) - forward[..., ::-1], atol=1e-12)


def test_forward_constant_flow_with_edge_clamping():
    flow = np.zeros((4, 6, 2))
    flow[..., 0] = 1.0  # content moves one pixel right
    tmap, residual = map_from_forward_flow(flow, return_residual=True)
    np.testing.assert_allclose(tmap, centre_points(4, 6) - [0.0, 1.0])
    assert residual == 0.0


def test_forward_stack_residuals_per_frame():
    stack = np.stack(
        [flow_from_deformation(Rotate(t + 1.0), 32, 32, direction="forward") for t in range(3)]
    )
    maps, residuals = map_from_forward_flow(stack, return_residual=True)
    assert maps.shape == (3, 32, 32, 2)
    assert residuals.shape == (3,) and (residuals <= 1e-4).all()
    for t in range(3):
        np.testing.assert_array_equal(maps[t], map_from_forward_flow(stack[t]))


def test_forward_non_contracting_flow_warns_with_frame_and_residual():
    # f = 2 (col - 16) (content spreads out 3x): the update T <- p - f(T) multiplies errors
    # by -2 each step, oscillates out to the clamped edges and never settles.
    cols = np.arange(32) + 0.5
    flow = np.zeros((8, 32, 2))
    flow[..., 0] = 2.0 * (cols - 16.0)
    with pytest.warns(FlowInversionWarning, match=r"at frame 3 not inverted.*256 of 256 pixels"):
        tmap, residual = map_from_forward_flow(flow, return_residual=True, frame=3)
    assert residual == pytest.approx(62.0)  # T alternates between p - 31 and p + 31
    assert np.isfinite(tmap).all()
    stack = np.stack([np.zeros((8, 32, 2)), flow])
    with pytest.warns(FlowInversionWarning, match="at frame 1 not inverted"):
        _, residuals = map_from_forward_flow(stack, return_residual=True)
    assert residuals[0] == 0.0 and residuals[1] == pytest.approx(62.0)


def test_forward_inversion_is_fast_at_1024():
    size = 1024
    forward = flow_from_deformation(Swirl(), size, size, direction="forward")
    map_from_forward_flow(forward[:16, :16])  # compile / load the cached kernel
    best = np.inf
    for _ in range(2):
        start = time.perf_counter()
        tmap = map_from_forward_flow(forward)
        best = min(best, time.perf_counter() - start)
    assert tmap.shape == (size, size, 2)
    assert best < 1.0, f"1024 x 1024 forward inversion took {best:.2f} s"


def test_map_from_flow_dispatch():
    forward = flow_from_deformation(ZoomIn(), 16, 16, direction="forward")
    np.testing.assert_array_equal(
        map_from_flow(forward, direction="forward"), map_from_forward_flow(forward)
    )
    np.testing.assert_array_equal(
        map_from_flow(forward, direction="backward", order="rc"),
        map_from_backward_flow(forward, order="rc"),
    )
    with pytest.raises(ValueError, match="direction must be one of 'backward'.*'forward'"):
        map_from_flow(forward, direction="sideways")
    with pytest.raises(ValueError, match="order must be one of 'xy'.*'rc'"):
        map_from_flow(forward, order="yx")
    with pytest.raises(ValueError, match="order must be one of"):
        map_from_forward_flow(forward, order="cr")


# ---------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "shape, match",
    [
        ((8, 8, 3), r"\[H, W, 2\] or \[T, H, W, 2\].*got shape \(8, 8, 3\)"),
        ((8, 8), "got shape"),
        ((1, 2, 8, 8, 2), "got shape"),
        ((2, 8, 8), "channels-first"),
        ((0, 8, 2), "H, W >= 1"),
    ],
)
@pytest.mark.parametrize("direction", ["backward", "forward"])
def test_wrong_shapes(shape, match, direction):
    with pytest.raises(ValueError, match=match):
        map_from_flow(np.zeros(shape), direction=direction)


def test_wrong_types():
    with pytest.raises(TypeError, match="numpy array"):
        map_from_flow([[[0.0, 0.0]]])
    with pytest.raises(TypeError, match="real-valued"):
        map_from_flow(np.zeros((2, 2, 2), dtype=complex))
    with pytest.raises(TypeError, match="real-valued"):
        map_from_flow(np.zeros((2, 2, 2), dtype=bool))


@pytest.mark.parametrize("direction", ["backward", "forward"])
def test_non_finite_names_frame_and_count(direction):
    stack = np.zeros((4, 5, 6, 2))
    stack[2, 1, 1, 0] = np.nan
    stack[2, 3, 4] = np.inf
    with pytest.raises(ValueError, match=r"at frame 2 contains 3 non-finite value\(s\)"):
        map_from_flow(stack, direction=direction)
    with pytest.raises(ValueError, match=r"at frame 7 contains 3 non-finite"):
        map_from_flow(stack[2], direction=direction, frame=7)
    single = np.zeros((3, 4, 2))
    single[0, 0, 1] = np.nan
    with pytest.raises(ValueError, match=r"flow contains 1 non-finite value\(s\) \(NaN or Inf\)"):
        map_from_flow(single, direction=direction)
    stack[2] = 0.0
    stack[2, 0, 0, 0] = -np.inf
    with pytest.raises(ValueError, match="at frame 2 contains 1 non-finite"):
        map_from_flow(stack, direction=direction)


def test_forward_parameter_validation():
    flow = np.zeros((2, 2, 2))
    with pytest.raises(ValueError, match="iterations must be an integer >= 0"):
        map_from_forward_flow(flow, iterations=-1)
    with pytest.raises(ValueError, match="tol must be a finite number >= 0"):
        map_from_forward_flow(flow, tol=float("nan"))


# ---------------------------------------------------------------------- corner maps


@pytest.mark.parametrize("size", [(64, 64), (5, 7), (2, 3)])
@pytest.mark.parametrize("deformation", AFFINE)
def test_corner_map_exact_for_affine(deformation, size):
    height, width = size
    corners = corner_map_from_centres(deformation.map(height, width))
    assert corners.shape == (height + 1, width + 1, 2) and corners.dtype == np.float64
    np.testing.assert_allclose(corners, deformation.corner_map(height, width), atol=1e-10, rtol=0)


def test_corner_map_is_the_mean_of_the_four_centres_inside():
    centres = np.random.default_rng(0).normal(size=(6, 9, 2))
    corners = corner_map_from_centres(centres)
    mean = 0.25 * (centres[:-1, :-1] + centres[:-1, 1:] + centres[1:, :-1] + centres[1:, 1:])
    np.testing.assert_allclose(corners[1:-1, 1:-1], mean, atol=1e-14)
    # Edges: linear extrapolation half a pixel beyond the outer centres.
    edge = 0.5 * (centres[0, :-1] + centres[0, 1:]) * 1.5 - 0.5 * (
        0.5 * (centres[1, :-1] + centres[1, 1:])
    )
    np.testing.assert_allclose(corners[0, 1:-1], edge, atol=1e-14)
    expected = 2.25 * centres[0, 0] - 0.75 * centres[0, 1] - 0.75 * centres[1, 0]
    np.testing.assert_allclose(corners[0, 0], expected + 0.25 * centres[1, 1], atol=1e-14)


@pytest.mark.parametrize(
    "deformation, bounds",
    [
        # (max corner error at 64 x 64, at 512 x 512), measured 1.13e-2 / 1.4e-3
        (Swirl(), (0.015, 0.002)),
        # measured 1.37e-2 / 2.2e-4
        (Turbulence(), (0.018, 4e-4)),
    ],
)
def test_corner_map_close_for_smooth_maps(deformation, bounds):
    errors = []
    for size in (64, 512):
        corners = corner_map_from_centres(deformation.map(size, size))
        errors.append(np.abs(corners - deformation.corner_map(size, size)).max())
    assert errors[0] < bounds[0] and errors[1] < bounds[1]
    assert errors[0] > 1e-3  # not trivially exact: the test would notice a wrong stencil


@pytest.mark.parametrize("size", [(1, 1), (1, 5), (4, 1)])
def test_corner_map_single_row_or_column(size):
    height, width = size
    shift = Translate(rows=0.75, cols=-2.0)
    corners = corner_map_from_centres(shift.map(height, width))
    np.testing.assert_allclose(corners, shift.corner_map(height, width), atol=1e-12)
    np.testing.assert_allclose(
        corner_map_from_centres(identity_map(height, width)), corner_points(height, width)
    )
    if width > 1:  # the multi-pixel axis is still interpolated exactly for affine maps
        rotated = corner_map_from_centres(Rotate(10.0).map(height, width))
        exact = Rotate(10.0).corner_map(height, width)
        np.testing.assert_allclose(
            rotated[..., 1].mean(axis=0), exact[..., 1].mean(axis=0), atol=1e-12
        )


def test_corner_map_bad_input():
    with pytest.raises(ValueError, match=r"\[H, W, 2\]"):
        corner_map_from_centres(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="H, W >= 1"):
        corner_map_from_centres(np.zeros((0, 4, 2)))
    bad = identity_map(4, 4)
    bad[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="1 non-finite"):
        corner_map_from_centres(bad)


# ---------------------------------------------------------------------- bilinear sampling


def test_bilinear_sample_exact_for_linear_fields_and_clamped_outside():
    rows, cols = np.meshgrid(np.arange(5) + 0.5, np.arange(7) + 0.5, indexing="ij")
    field = np.stack([2 * rows + 3 * cols, rows - cols], axis=-1)
    points = np.array([[0.5, 0.5], [1.25, 3.75], [4.5, 6.5], [2.0, 1.0]])
    expected = np.stack([2 * points[:, 0] + 3 * points[:, 1], points[:, 0] - points[:, 1]], -1)
    np.testing.assert_allclose(bilinear_sample(field, points), expected, atol=1e-12)
    outside = np.array([[-10.0, 3.5], [100.0, 100.0]])
    np.testing.assert_allclose(bilinear_sample(field, outside), [field[0, 3], field[4, 6]])
    scalar = bilinear_sample(field[..., 0], points.reshape(2, 2, 2))
    assert scalar.shape == (2, 2)
    np.testing.assert_allclose(scalar.ravel(), expected[:, 0], atol=1e-12)


def test_bilinear_sample_matches_scipy():
    rng = np.random.default_rng(5)
    field = rng.normal(size=(13, 17, 3))
    points = rng.uniform(-3, 20, size=(500, 2))
    ours = bilinear_sample(field, points)
    theirs = np.stack(
        [
            map_coordinates(field[..., k], (points - 0.5).T, order=1, mode="nearest")
            for k in range(3)
        ],
        axis=-1,
    )
    np.testing.assert_allclose(ours, theirs, atol=1e-12)
    with pytest.raises(ValueError, match="non-finite"):
        bilinear_sample(field, np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match=r"points must have shape \[..., 2\]"):
        bilinear_sample(field, np.zeros((4, 3)))


# ---------------------------------------------------------------------- files


def test_flo_round_trip(tmp_path):
    flow = np.random.default_rng(0).normal(scale=5, size=(7, 11, 2)).astype(np.float32)
    path = write_flo(tmp_path / "a.flo", flow)
    raw = path.read_bytes()
    assert raw[:4] == b"PIEH" and len(raw) == 12 + 7 * 11 * 8
    assert np.frombuffer(raw[4:12], "<i4").tolist() == [11, 7]  # width, then height
    back = read_flo(path)
    assert back.shape == (7, 11, 2) and back.dtype == np.float32
    np.testing.assert_array_equal(back, flow)
    write_flo(tmp_path / "b.flo", flow[..., ::-1], order="rc")
    np.testing.assert_array_equal(read_flo(tmp_path / "b.flo"), flow)
    np.testing.assert_array_equal(load_flow(str(tmp_path / "b.flo")), flow)
    with pytest.raises(ValueError, match="one frame"):
        write_flo(tmp_path / "c.flo", np.zeros((2, 3, 3, 2)))


def test_flo_errors(tmp_path):
    good = write_flo(tmp_path / "good.flo", np.ones((4, 5, 2))).read_bytes()
    missing = tmp_path / "missing.flo"
    with pytest.raises(FileNotFoundError, match="missing.flo"):
        read_flo(missing)
    short = tmp_path / "short.flo"
    short.write_bytes(good[:-9])
    with pytest.raises(ValueError, match=r"short\.flo.*truncated .flo file.*4 x 5.*172 bytes.*163"):
        read_flo(short)
    header = tmp_path / "header.flo"
    header.write_bytes(good[:7])
    with pytest.raises(ValueError, match=r"header\.flo.*truncated.*7 bytes"):
        read_flo(header)
    text = tmp_path / "text.flo"
    text.write_bytes(b"this is not a flow file at all")
    with pytest.raises(ValueError, match=r"text\.flo.*wrong magic number.*202021\.25"):
        read_flo(text)
    big = tmp_path / "big.flo"
    big.write_bytes(np.array([FLO_MAGIC], ">f4").tobytes() + good[4:])
    with pytest.raises(ValueError, match="big-endian"):
        read_flo(big)
    long = tmp_path / "long.flo"
    long.write_bytes(good + b"\0" * 8)
    with pytest.raises(ValueError, match="trailing bytes"):
        read_flo(long)
    negative = tmp_path / "negative.flo"
    negative.write_bytes(good[:4] + np.array([-4, 5], "<i4").tobytes() + good[12:])
    with pytest.raises(ValueError, match="width=-4"):
        read_flo(negative)
    with pytest.raises(ValueError, match="is not a regular file"):
        read_flo(tmp_path)


def test_load_flow_npy(tmp_path):
    single = np.random.default_rng(1).normal(size=(6, 8, 2))
    stack = np.random.default_rng(2).normal(size=(3, 6, 8, 2)).astype(np.float32)
    np.save(tmp_path / "single.npy", single)
    np.save(tmp_path / "stack.npy", stack)
    np.testing.assert_array_equal(load_flow(tmp_path / "single.npy"), single)
    np.testing.assert_array_equal(load_flow(tmp_path / "stack.npy"), stack)
    np.save(tmp_path / "bad.npy", np.zeros((6, 8, 3)))
    with pytest.raises(ValueError, match=r"bad\.npy.*got shape \(6, 8, 3\)"):
        load_flow(tmp_path / "bad.npy")
    (tmp_path / "flow.png").write_bytes(b"\x89PNG")
    with pytest.raises(ValueError, match=r"unsupported flow file extension '.png'.*\.flo.*\.npy"):
        load_flow(tmp_path / "flow.png")
    with pytest.raises(FileNotFoundError, match="nothing.npy"):
        load_flow(tmp_path / "nothing.npy")


def test_shipped_sample_flow():
    """noisewarp/data/swirl_forward_32x48.flo: the forward flow of the default swirl at 32 x 48,
    written with ``write_flo(path, flow_from_deformation(Swirl(), 32, 48, "forward"))``."""
    flow = load_flow(DATA / "swirl_forward_32x48.flo")
    assert flow.shape == (32, 48, 2)
    expected = flow_from_deformation(Swirl(), 32, 48, direction="forward")
    np.testing.assert_allclose(flow, expected, atol=1e-5)
    tmap = map_from_flow(flow, direction="forward")
    exact = Swirl().map(32, 48)
    assert np.abs(tmap - exact)[inside(exact, 32, 48)].max() < 0.03
