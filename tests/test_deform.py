"""Synthetic deformations: analytic values, the registry, inverses and injectivity."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from noisewarp.deform import (
    DEFORMATIONS,
    Compose,
    Deformation,
    Fold,
    Identity,
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
    get_deformation,
)

INJECTIVE = [
    "identity",
    "translate",
    "rotate",
    "zoom_in",
    "zoom_out",
    "shear",
    "swirl",
    "turbulence",
]
INVERTIBLE = ["identity", "translate", "rotate", "zoom_in", "zoom_out", "shear", "swirl"]


def sample_points(height: int, width: int, spacing: float) -> np.ndarray:
    """A lattice covering the closed frame [0, H] x [0, W] (centres, corners and between)."""
    rows = np.arange(0.0, height + 1e-9, spacing)
    cols = np.arange(0.0, width + 1e-9, spacing)
    return np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1)


def jacobian(deformation: Deformation, points, height, width, frame=0, eps=1e-4):
    """Central-difference Jacobian dT/dp [..., 2 (T component), 2 (row, col)]."""
    out = np.empty(points.shape + (2,))
    for axis in (0, 1):
        step = np.zeros(2)
        step[axis] = eps
        plus = deformation(points + step, height, width, frame)
        minus = deformation(points - step, height, width, frame)
        out[..., :, axis] = (plus - minus) / (2 * eps)
    return out


def jacobian_det(deformation, height, width, spacing):
    jac = jacobian(deformation, sample_points(height, width, spacing), height, width)
    return jac[..., 0, 0] * jac[..., 1, 1] - jac[..., 0, 1] * jac[..., 1, 0]


def quad_areas(corners: np.ndarray) -> np.ndarray:
    """Signed areas of the mapped pixel quads (shoelace, corners in cyclic order)."""
    quad = [corners[:-1, :-1], corners[:-1, 1:], corners[1:, 1:], corners[1:, :-1]]
    area = np.zeros(corners[:-1, :-1].shape[:2])
    for k in range(4):
        a, b = quad[k], quad[(k + 1) % 4]
        area += a[..., 1] * b[..., 0] - a[..., 0] * b[..., 1]  # (x, y) = (col, row)
    return 0.5 * area


# ---------------------------------------------------------------------- registry


def test_registry_names():
    assert set(DEFORMATIONS) == {
        "identity",
        "translate",
        "rotate",
        "zoom_in",
        "zoom_out",
        "shear",
        "swirl",
        "turbulence",
        "fold",
    }


@pytest.mark.parametrize("name", sorted(DEFORMATIONS))
def test_every_registered_deformation_builds_and_evaluates(name):
    deformation = get_deformation(name)
    assert isinstance(deformation, DEFORMATIONS[name])
    centres = deformation.map(12, 20)
    corners = deformation.corner_map(12, 20)
    assert centres.shape == (12, 20, 2) and centres.dtype == np.float64
    assert corners.shape == (13, 21, 2) and corners.dtype == np.float64
    assert centres.flags.c_contiguous and corners.flags.c_contiguous
    np.testing.assert_array_equal(centres, deformation(centre_points(12, 20), 12, 20))
    np.testing.assert_array_equal(corners, deformation(corner_points(12, 20), 12, 20))
    # Any leading shape of points, and the input is not modified.
    points = np.random.default_rng(1).uniform(-5, 25, (4, 3, 5, 2))
    before = points.copy()
    out = deformation(points, 12, 20)
    assert out.shape == points.shape
    np.testing.assert_array_equal(points, before)
    assert np.isfinite(out).all()


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown deformation 'twirl'") as info:
        get_deformation("twirl")
    for name in DEFORMATIONS:
        assert name in str(info.value)


def test_unknown_parameter_lists_valid_parameters():
    with pytest.raises(TypeError, match="'angle'") as info:
        get_deformation("rotate", angle=3.0)
    assert "degrees" in str(info.value) and "centre" in str(info.value)
    with pytest.raises(TypeError, match="valid parameters: rows, cols"):
        get_deformation("translate", dx=1.0)


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("zoom_in", {"factor": 0.0}, "factor must be > 0"),
        ("zoom_out", {"factor": -1.0}, "factor must be > 0"),
        ("swirl", {"radius": -0.1}, "radius must be > 0"),
        ("rotate", {"degrees": float("nan")}, "degrees must be finite"),
        ("rotate", {"centre": (0.5,)}, "centre must be"),
        ("fold", {"axis": "z"}, "axis must be one of"),
        ("shear", {"axis": "x"}, "axis must be one of"),
        ("turbulence", {"modes": 0}, "modes must be an integer"),
        ("turbulence", {"wavelength": 0.0}, "wavelength must be > 0"),
    ],
)
def test_invalid_parameter_values(name, params, match):
    with pytest.raises(ValueError, match=match):
        get_deformation(name, **params)


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("rotate", {"degrees": "5"}, "degrees must be a number, got '5'"),
        ("translate", {"rows": True}, "rows must be a number, got True"),
        ("turbulence", {"divergence_free": "false"}, "divergence_free must be true or false"),
        ("turbulence", {"modes": True}, "modes must be an integer"),
        ("turbulence", {"seed": "3"}, "seed must be an integer"),
    ],
)
def test_text_and_booleans_are_not_numbers(name, params, match):
    """A quoted number or a yes/no string would be kept as given and fail, or silently
    mean true, when the map is evaluated: refused when the deformation is made."""
    with pytest.raises((TypeError, ValueError), match=match):
        get_deformation(name, **params)


def test_parameters_and_equality():
    assert get_deformation("rotate", degrees=3) == Rotate(degrees=3.0)
    assert get_deformation("zoom_in").factor == pytest.approx(1.05)
    assert get_deformation("zoom_out").factor == pytest.approx(1 / 1.05)
    assert get_deformation("translate", rows=1.5).rows == 1.5
    assert Rotate(centre=[0.25, 0.75]).centre == (0.25, 0.75)  # lists (Hydra) become tuples
    with pytest.raises(dataclasses.FrozenInstanceError):
        Rotate().degrees = 5.0  # type: ignore[misc]


# ---------------------------------------------------------------------- analytic values


def test_identity_and_translate():
    np.testing.assert_array_equal(Identity().map(5, 7), centre_points(5, 7))
    shifted = Translate(rows=2, cols=-3).map(8, 8)
    np.testing.assert_array_equal(shifted[4, 4], [2.5, 7.5])  # (4.5 - 2, 4.5 + 3)
    np.testing.assert_array_equal(shifted[0, 0], [-1.5, 3.5])  # comes from outside the frame
    sub = Translate(rows=0.25, cols=1.5).corner_map(4, 4)
    np.testing.assert_allclose(sub - corner_points(4, 4), np.broadcast_to([-0.25, -1.5], sub.shape))


def test_rotate_direction_and_isometry():
    # 90 degrees counter-clockwise on screen (rows down): the point right of the centre
    # moves to the top, so the target above the centre comes from the right of it.
    tmap = Rotate(degrees=90).map(4, 4)
    np.testing.assert_allclose(tmap[0, 2], [2.5, 3.5], atol=1e-12)
    np.testing.assert_allclose(Rotate(90)(np.array([1.0, 2.0]), 4, 4), [2.0, 3.0], atol=1e-12)
    # About the frame centre (H/2, W/2), preserving distances to it; per-frame angle.
    height, width = 30, 50
    points = centre_points(height, width)
    out = Rotate(degrees=7.0).map(height, width)
    centre = np.array([15.0, 25.0])
    np.testing.assert_allclose(
        np.linalg.norm(out - centre, axis=-1), np.linalg.norm(points - centre, axis=-1)
    )
    before = np.arctan2(-(points[..., 0] - 15), points[..., 1] - 25)  # screen angle, y up
    after = np.arctan2(-(out[..., 0] - 15), out[..., 1] - 25)
    turn = np.angle(np.exp(1j * (before - after)))
    np.testing.assert_allclose(turn, math.radians(7.0), atol=1e-12)


def test_zoom_contracts_or_expands_about_the_centre():
    height, width = 40, 60
    centre = np.array([20.0, 30.0])
    points = centre_points(height, width)
    zoom_in = ZoomIn().map(height, width)
    zoom_out = ZoomOut().map(height, width)
    np.testing.assert_allclose(zoom_in - centre, (points - centre) / 1.05)
    np.testing.assert_allclose(zoom_out - centre, (points - centre) * 1.05)
    np.testing.assert_allclose(Zoom(2.0)(centre, height, width), centre)
    # zoom_in magnifies: the corners of the target frame come from inside the source frame.
    corners = ZoomIn().corner_map(height, width)
    assert corners[..., 0].min() > 0 and corners[..., 0].max() < height
    assert corners[..., 1].min() > 0 and corners[..., 1].max() < width
    corners = ZoomOut().corner_map(height, width)
    assert corners[..., 0].min() < 0 and corners[..., 1].max() > width


def test_shear():
    out = Shear(amount=0.1).map(10, 6)
    points = centre_points(10, 6)
    np.testing.assert_array_equal(out[..., 0], points[..., 0])
    np.testing.assert_allclose(out[..., 1], points[..., 1] - 0.1 * (points[..., 0] - 5.0))
    out = Shear(amount=0.1, axis="row").map(10, 6)
    np.testing.assert_allclose(out[..., 0], points[..., 0] - 0.1 * (points[..., 1] - 3.0))
    np.testing.assert_array_equal(out[..., 1], points[..., 1])


def test_swirl_turns_by_a_decaying_angle_and_keeps_radii():
    size = 64
    swirl = Swirl(degrees=30.0, radius=0.25)
    centre = np.array([32.0, 32.0])
    points = np.array([[32.0, 33.0], [32.0, 48.0], [32.0, 32.0 + 3 * 16.0]])
    out = swirl(points, size, size)
    np.testing.assert_allclose(
        np.linalg.norm(out - centre, axis=-1), np.linalg.norm(points - centre, axis=-1)
    )
    radius = np.array([1.0, 16.0, 48.0])
    expected = math.radians(30.0) * np.exp(-((radius / 16.0) ** 2))
    turn = np.arctan2(-(points[:, 0] - 32), points[:, 1] - 32) - np.arctan2(
        -(out[:, 0] - 32), out[:, 1] - 32
    )
    np.testing.assert_allclose(turn, expected, atol=1e-12)
    # Scales with the frame: the same relative point turns by the same angle at 256.
    np.testing.assert_allclose(swirl(points * 4, 256, 256), out * 4, atol=1e-12)


def test_turbulence_is_bounded_divergence_free_smooth_in_time_and_seeded():
    size = 64
    turbulence = Turbulence()
    points = sample_points(size, size, 0.5)
    displacement = turbulence(points, size, size) - points
    assert np.abs(displacement).max() > 0.2  # it does move
    assert np.linalg.norm(displacement, axis=-1).max() <= turbulence.amplitude + 1e-12
    jac = jacobian(turbulence, points, size, size)
    divergence = jac[..., 0, 0] + jac[..., 1, 1] - 2.0
    assert np.abs(divergence).max() < 1e-6
    gradient = jac - np.eye(2)
    assert np.linalg.norm(gradient, ord=2, axis=(-2, -1)).max() <= turbulence.lipschitz_bound(
        size, size
    )
    assert turbulence.lipschitz_bound(64, 64) == pytest.approx(1.5 * 2 * math.pi / 16)
    generic = Turbulence(divergence_free=False)
    jac = jacobian(generic, points, size, size)
    assert np.abs(jac[..., 0, 0] + jac[..., 1, 1] - 2.0).max() > 1e-3
    # Evolves smoothly with the frame: |d/dframe| <= amplitude * speed * 1.5.
    step = turbulence(points, size, size, frame=1) - turbulence(points, size, size, frame=0)
    assert 0 < np.abs(step).max() <= 1.5 * 0.2 * 1.5 + 1e-12
    # Reproducible from the seed alone.
    np.testing.assert_array_equal(Turbulence(seed=3).map(16, 16), Turbulence(seed=3).map(16, 16))
    assert np.abs(Turbulence(seed=3).map(16, 16) - Turbulence(seed=4).map(16, 16)).max() > 0.01


def test_fold_shape_and_triple_cover():
    size = 64
    fold = Fold()  # strength 2, band h = 0.1 * 64 = 6.4 px about col 32
    band = 6.4
    cols = np.linspace(0, size, 64001)
    points = np.stack([np.full_like(cols, 10.5), cols], axis=-1)
    out = fold(points, size, size)
    np.testing.assert_array_equal(out[:, 0], 10.5)  # rows untouched
    far = np.abs(cols - 32) > 6 * band
    np.testing.assert_allclose(out[far, 1], cols[far], atol=1e-5)
    slope = np.gradient(out[:, 1], cols)
    assert slope[np.argmin(np.abs(cols - 32))] == pytest.approx(-1.0, abs=1e-6)
    reversed_band = cols[slope < 0]
    assert reversed_band.min() == pytest.approx(32 - 0.6259 * band, abs=2e-3)
    assert reversed_band.max() == pytest.approx(32 + 0.6259 * band, abs=2e-3)

    # Sources within 0.403 h of the fold centre are reached from three targets.
    def preimages(source_col):
        return np.count_nonzero(np.diff(np.sign(out[:, 1] - source_col)) != 0)

    assert preimages(32.0 + 0.39 * band) == 3
    assert preimages(32.0 - 0.2 * band) == 3
    assert preimages(32.0 + 0.42 * band) == 1
    assert preimages(20.0) == 1


# ---------------------------------------------------------------------- inverse, compose


@pytest.mark.parametrize("name", INVERTIBLE)
def test_inverse_round_trip(name):
    deformation = get_deformation(
        name, **({"rows": 1.25, "cols": -0.5} if name == "translate" else {})
    )
    points = np.random.default_rng(0).uniform(-10, 60, (200, 2))
    there = deformation(points, 40, 50)
    back = deformation.inverse()(there, 40, 50)
    np.testing.assert_allclose(back, points, atol=1e-10)
    if name != "identity":
        assert np.abs(there - points).max() > 0.05


def test_no_inverse_for_turbulence_and_fold():
    for deformation in (Turbulence(), Fold()):
        with pytest.raises(NotImplementedError, match="no analytic inverse"):
            deformation.inverse()


def test_compose_applies_parts_in_order():
    # Content moves 1 px right, then turns 90 degrees about the centre of a 4 x 4 frame.
    composed = Compose((Translate(cols=1.0), Rotate(degrees=90.0)))
    points = centre_points(4, 4)
    expected = Translate(cols=1.0)(Rotate(90.0)(points, 4, 4), 4, 4)
    np.testing.assert_allclose(composed.map(4, 4), expected)
    # The other order differs (rotation and translation do not commute).
    other = Compose((Rotate(degrees=90.0), Translate(cols=1.0))).map(4, 4)
    assert np.abs(other - expected).max() > 0.5
    np.testing.assert_allclose(composed.inverse()(composed.map(4, 4), 4, 4), points, atol=1e-12)
    np.testing.assert_array_equal(Compose().map(3, 3), centre_points(3, 3))
    with pytest.raises(TypeError, match=r"parts\[1\] must be a Deformation"):
        Compose((Rotate(), "zoom"))


# ---------------------------------------------------------------------- injectivity


@pytest.mark.parametrize("size, spacing", [(64, 0.5), (512, 2.0)])
@pytest.mark.parametrize("name", INJECTIVE)
def test_injective_at_defaults(name, size, spacing):
    deformation = get_deformation(name, **({"cols": 0.5} if name == "translate" else {}))
    det = jacobian_det(deformation, size, size, spacing)
    assert det.min() > 0.5, f"{name} at {size}: det J min {det.min()}"
    # The mapped pixel quads (what grid integrates over) all keep their orientation.
    areas = quad_areas(deformation.corner_map(size, size))
    assert areas.min() > 0.5


@pytest.mark.parametrize(
    "deformation, det",
    [
        (Rotate(), 1.0),
        (Shear(), 1.0),
        (Swirl(), 1.0),
        (ZoomIn(), 1 / 1.05**2),
        (ZoomOut(), 1.05**2),
    ],
)
def test_jacobian_determinant_values(deformation, det):
    np.testing.assert_allclose(jacobian_det(deformation, 64, 64, 1.0), det, atol=1e-6)


@pytest.mark.parametrize("size", [64, 512])
def test_fold_is_not_injective(size):
    det = jacobian_det(Fold(), size, size, 0.5 if size == 64 else 2.0)
    assert det.min() == pytest.approx(-1.0, abs=0.01)
    assert (det < 0).mean() == pytest.approx(2 * 0.6259 * 0.1, abs=0.02)
    assert (quad_areas(Fold().corner_map(size, size)) < 0).any()
