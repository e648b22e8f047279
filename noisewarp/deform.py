"""Analytic deformations: backward maps T evaluable anywhere (centres and corners).

A deformation describes one frame step: for a point p of frame t+1 it returns
T(p), the position in frame t that p came from, in (row, col) pixel units
(docs/conventions.md). Being analytic, it can be evaluated at pixel centres (for
particle and the baselines) and exactly at pixel corners (for grid and hiwyn).

Parameters are per frame step and scale with the frame: centres of rotation,
zoom and swirl are fractions of (H, W) (default the frame centre (H/2, W/2));
swirl radii, turbulence wavelengths and fold widths are fractions of the frame;
translations and turbulence amplitudes are in pixels; angles in degrees.
Angles follow the screen: rows grow downwards, and a positive angle turns the
content counter-clockwise as displayed.

>>> import noisewarp as nw
>>> swirl = nw.deform.get_deformation("swirl", degrees=20.0)
>>> swirl.map(32, 32).shape, swirl.corner_map(32, 32).shape
((32, 32, 2), (33, 33, 2))
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Deformation",
    "Identity",
    "Translate",
    "Rotate",
    "Zoom",
    "ZoomIn",
    "ZoomOut",
    "Shear",
    "Swirl",
    "Turbulence",
    "Fold",
    "Compose",
    "centre_points",
    "corner_points",
    "DEFORMATIONS",
    "get_deformation",
]


def centre_points(height: int, width: int) -> np.ndarray:
    """Pixel centres (i + 0.5, j + 0.5) as float64 [H, W, 2] in (row, col) order."""
    rows = np.arange(height, dtype=np.float64) + 0.5
    cols = np.arange(width, dtype=np.float64) + 0.5
    out = np.empty((height, width, 2))
    out[..., 0] = rows[:, None]
    out[..., 1] = cols[None, :]
    return out


def corner_points(height: int, width: int) -> np.ndarray:
    """Pixel corners (i, j), i <= H, j <= W, as float64 [H+1, W+1, 2] in (row, col) order."""
    rows = np.arange(height + 1, dtype=np.float64)
    cols = np.arange(width + 1, dtype=np.float64)
    out = np.empty((height + 1, width + 1, 2))
    out[..., 0] = rows[:, None]
    out[..., 1] = cols[None, :]
    return out


class Deformation:
    """A backward map T for one frame step, defined at every point of the plane.

    Subclasses implement ``__call__(points, height, width, frame)``, mapping
    points [..., 2] of frame ``frame + 1`` to frame ``frame``. ``height`` and
    ``width`` let a deformation scale with the frame (centre of rotation, etc.);
    ``frame`` lets it change over time. Subclasses with an analytic inverse
    (the forward map, frame t to t+1) also implement ``inverse()``.
    ``time_varying`` says whether the map depends on ``frame`` (a stationary one is
    evaluated once per video).
    """

    name = "deformation"
    time_varying = False

    def __call__(
        self, points: np.ndarray, height: int, width: int, frame: int = 0
    ) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def map(self, height: int, width: int, frame: int = 0) -> np.ndarray:
        """T at the pixel centres, float64 [H, W, 2]."""
        return np.ascontiguousarray(self(centre_points(height, width), height, width, frame))

    def corner_map(self, height: int, width: int, frame: int = 0) -> np.ndarray:
        """T at the pixel corners, float64 [H+1, W+1, 2] (exact, not interpolated)."""
        return np.ascontiguousarray(self(corner_points(height, width), height, width, frame))

    def inverse(self) -> Deformation:
        """The forward map (frame t to t+1) as a deformation, where it is known analytically.

        Raises ``NotImplementedError`` for deformations without a closed-form
        inverse (turbulence) or that are not invertible (fold).
        """
        raise NotImplementedError(f"deformation {self.name!r} has no analytic inverse")


def _points(points) -> np.ndarray:
    """Points [..., 2] as a float64 array (a copy the caller may modify)."""
    out = np.array(points, dtype=np.float64, copy=True)
    if out.ndim < 1 or out.shape[-1] != 2:
        raise ValueError(f"points must have shape [..., 2] (row, col), got shape {out.shape}")
    return out


def _check_number(owner: str, field: str, value, *, positive: bool = False) -> float:
    """``value`` as a finite float (and > 0 if ``positive``), else a ValueError naming it.
    Text and booleans are refused: the map would compute with the value as given."""
    if isinstance(value, (str, bytes, bool, np.bool_)):
        raise TypeError(f"{owner}: {field} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{owner}: {field} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{owner}: {field} must be finite, got {value!r}")
    if positive and number <= 0:
        raise ValueError(f"{owner}: {field} must be > 0, got {value!r}")
    return number


def _check_centre(owner: str, centre) -> tuple[float, float]:
    """A (row, col) centre given as fractions of (H, W), as a tuple of two finite floats."""
    try:
        row, col = centre
    except (TypeError, ValueError):
        raise ValueError(
            f"{owner}: centre must be (row, col) fractions of (H, W), got {centre!r}"
        ) from None
    return (_check_number(owner, "centre[0]", row), _check_number(owner, "centre[1]", col))


def _check_axis(owner: str, axis: str) -> str:
    if axis not in ("row", "col"):
        raise ValueError(f"{owner}: axis must be one of 'row', 'col', got {axis!r}")
    return axis


def _rotate_about(points: np.ndarray, centre: tuple[float, float], angle) -> np.ndarray:
    """Rotate ``points`` about ``centre`` by -angle (radians), i.e. T of a rotation by +angle.

    Content turning counter-clockwise on screen (rows downwards) by ``angle``
    comes from the point turned clockwise by ``angle``.
    """
    drow = points[..., 0] - centre[0]
    dcol = points[..., 1] - centre[1]
    cos, sin = np.cos(angle), np.sin(angle)
    out = np.empty_like(points)
    out[..., 0] = centre[0] + drow * cos + dcol * sin
    out[..., 1] = centre[1] + dcol * cos - drow * sin
    return out


@dataclass(frozen=True)
class Identity(Deformation):
    """T(p) = p: nothing moves."""

    name = "identity"

    def __call__(self, points, height, width, frame=0):
        return _points(points)

    def inverse(self) -> Identity:
        return self


@dataclass(frozen=True)
class Translate(Deformation):
    """Content moves by (``rows``, ``cols``) pixels per frame: T(p) = p - shift."""

    rows: float = 0.0
    cols: float = 0.0
    name = "translate"

    def __post_init__(self):
        _check_number("translate", "rows", self.rows)
        _check_number("translate", "cols", self.cols)

    def __call__(self, points, height, width, frame=0):
        out = _points(points)
        out[..., 0] -= self.rows
        out[..., 1] -= self.cols
        return out

    def inverse(self) -> Translate:
        return Translate(rows=-self.rows, cols=-self.cols)


@dataclass(frozen=True)
class Rotate(Deformation):
    """Content turns by ``degrees`` per frame about ``centre``: T(p) = c + R(-theta) (p - c).

    ``centre`` is a fraction of (H, W), default the frame centre (H/2, W/2).
    Positive ``degrees`` turn the content counter-clockwise on screen (rows
    downwards). An isometry: det J = 1.
    """

    degrees: float = 2.0
    centre: tuple[float, float] = (0.5, 0.5)
    name = "rotate"

    def __post_init__(self):
        _check_number("rotate", "degrees", self.degrees)
        object.__setattr__(self, "centre", _check_centre("rotate", self.centre))

    def __call__(self, points, height, width, frame=0):
        centre = (self.centre[0] * height, self.centre[1] * width)
        return _rotate_about(_points(points), centre, math.radians(self.degrees))

    def inverse(self) -> Rotate:
        return Rotate(degrees=-self.degrees, centre=self.centre)


@dataclass(frozen=True)
class Zoom(Deformation):
    """Content scales by ``factor`` per frame about ``centre``: T(p) = c + (p - c) / factor.

    ``factor > 1`` zooms in (T contracts towards the centre, content is
    magnified and leaves the frame), ``factor < 1`` zooms out (content shrinks,
    fresh noise enters at the border). ``centre`` is a fraction of (H, W),
    default the frame centre. det J = 1 / factor**2.
    """

    factor: float = 1.05
    centre: tuple[float, float] = (0.5, 0.5)
    name = "zoom"

    def __post_init__(self):
        _check_number(self.name, "factor", self.factor, positive=True)
        object.__setattr__(self, "centre", _check_centre(self.name, self.centre))

    def __call__(self, points, height, width, frame=0):
        out = _points(points)
        centre = (self.centre[0] * height, self.centre[1] * width)
        for axis in (0, 1):
            out[..., axis] = centre[axis] + (out[..., axis] - centre[axis]) / self.factor
        return out

    def inverse(self) -> Zoom:
        return Zoom(factor=1.0 / self.factor, centre=self.centre)


@dataclass(frozen=True)
class ZoomIn(Zoom):
    """``Zoom`` registered as ``zoom_in``: magnifies by 5% per frame by default."""

    factor: float = 1.05
    name = "zoom_in"


@dataclass(frozen=True)
class ZoomOut(Zoom):
    """``Zoom`` registered as ``zoom_out``: shrinks by 1/1.05 per frame by default."""

    factor: float = 1.0 / 1.05
    name = "zoom_out"


@dataclass(frozen=True)
class Shear(Deformation):
    """Shear about the frame centre: each line slides in proportion to its offset from it.

    ``axis="col"`` (horizontal shear): the content of row r moves right by
    ``amount * (r - c_row)`` pixels, T(p) = (row, col - amount * (row - c_row)).
    ``axis="row"`` (vertical shear): T(p) = (row - amount * (col - c_col), col).
    ``centre`` is a fraction of (H, W). Area preserving: det J = 1.
    """

    amount: float = 0.05
    axis: str = "col"
    centre: tuple[float, float] = (0.5, 0.5)
    name = "shear"

    def __post_init__(self):
        _check_number("shear", "amount", self.amount)
        _check_axis("shear", self.axis)
        object.__setattr__(self, "centre", _check_centre("shear", self.centre))

    def __call__(self, points, height, width, frame=0):
        out = _points(points)
        centre = (self.centre[0] * height, self.centre[1] * width)
        if self.axis == "col":
            out[..., 1] -= self.amount * (out[..., 0] - centre[0])
        else:
            out[..., 0] -= self.amount * (out[..., 1] - centre[1])
        return out

    def inverse(self) -> Shear:
        return Shear(amount=-self.amount, axis=self.axis, centre=self.centre)


@dataclass(frozen=True)
class Swirl(Deformation):
    """A vortex: content turns by an angle that decays with the distance from the centre.

    T(p) = c + R(-theta(r)) (p - c), r = |p - c|, theta(r) = degrees *
    exp(-(r / R)^2), R = ``radius`` * min(H, W). ``centre`` is a fraction of
    (H, W). In polar coordinates T is (r, phi) -> (r, phi - theta(r)), a
    smooth bijection with det J = 1 everywhere, for every strength; its
    inverse is the swirl with ``-degrees``.
    """

    degrees: float = 30.0
    radius: float = 0.25
    centre: tuple[float, float] = (0.5, 0.5)
    name = "swirl"

    def __post_init__(self):
        _check_number("swirl", "degrees", self.degrees)
        _check_number("swirl", "radius", self.radius, positive=True)
        object.__setattr__(self, "centre", _check_centre("swirl", self.centre))

    def __call__(self, points, height, width, frame=0):
        points = _points(points)
        centre = (self.centre[0] * height, self.centre[1] * width)
        scale = self.radius * min(height, width)
        radius2 = (points[..., 0] - centre[0]) ** 2 + (points[..., 1] - centre[1]) ** 2
        angle = math.radians(self.degrees) * np.exp(-radius2 / scale**2)
        return _rotate_about(points, centre, angle)

    def inverse(self) -> Swirl:
        return Swirl(degrees=-self.degrees, radius=self.radius, centre=self.centre)


@dataclass(frozen=True)
class Turbulence(Deformation):
    """Smooth random motion: T(p) = p + d(p, frame), a sum of a few random Fourier modes.

    d(p) = sum_k a_k u_k cos(k . p + phi_k + omega_k * frame), with wave
    vectors k of random direction and wavelength between ``wavelength`` and
    2 * ``wavelength`` (fractions of min(H, W)), weights a_k >= 0 summing to
    ``amplitude`` (pixels, so |d| <= amplitude), phases phi_k and phase speeds
    |omega_k| in [0.5, 1.5] * ``speed`` (radians per frame: the field evolves
    smoothly with ``frame``). ``divergence_free=True`` takes u_k perpendicular
    to k (the field is the curl of a stream function: incompressible, det J
    close to 1); otherwise u_k are random unit vectors. All random draws come
    from ``seed`` alone, so the field is analytic and reproducible.
    With ``speed`` 0 the field does not change over time.

    Injectivity: |grad d| <= amplitude * 2 pi / (wavelength * min(H, W)) =
    ``lipschitz_bound(H, W)``; below 1 the map is a bijection (det J > 0).
    The defaults give 0.59 at 64 x 64 and 0.074 at 512 x 512; at 16 x 16 the
    bound exceeds 1 and the map may fold.
    """

    amplitude: float = 1.5
    wavelength: float = 0.25
    modes: int = 4
    speed: float = 0.2
    divergence_free: bool = True
    seed: int = 0

    name = "turbulence"

    @property
    def time_varying(self) -> bool:
        return self.speed != 0

    def __post_init__(self):
        _check_number("turbulence", "amplitude", self.amplitude)
        _check_number("turbulence", "wavelength", self.wavelength, positive=True)
        _check_number("turbulence", "speed", self.speed)
        for field, value in (("modes", self.modes), ("seed", self.seed)):
            minimum = 1 if field == "modes" else 0
            if (isinstance(value, (str, bytes, bool, np.bool_)) or int(value) != value
                    or value < minimum):  # fmt: skip
                raise ValueError(
                    f"turbulence: {field} must be an integer >= {minimum}, got {value!r}"
                )
        if not isinstance(self.divergence_free, (bool, np.bool_)):
            raise TypeError(
                f"turbulence: divergence_free must be true or false, got {self.divergence_free!r}"
            )

    def lipschitz_bound(self, height: int, width: int) -> float:
        """An upper bound on |grad d| (spectral norm); < 1 guarantees injectivity."""
        return abs(self.amplitude) * 2.0 * math.pi / (self.wavelength * min(height, width))

    def _modes(self):
        """Per-mode unit wave directions, wavelength multipliers, weights, phases, speeds."""
        rng = np.random.default_rng(int(self.seed))
        modes = int(self.modes)
        theta = rng.uniform(0.0, 2.0 * math.pi, modes)
        direction = np.stack([np.cos(theta), np.sin(theta)], axis=-1)
        stretch = rng.uniform(1.0, 2.0, modes)
        weight = rng.dirichlet(np.ones(modes))
        phase = rng.uniform(0.0, 2.0 * math.pi, modes)
        speed = rng.uniform(0.5, 1.5, modes) * rng.choice([-1.0, 1.0], modes)
        psi = rng.uniform(0.0, 2.0 * math.pi, modes)
        if self.divergence_free:
            vector = np.stack([direction[:, 1], -direction[:, 0]], axis=-1)
        else:
            vector = np.stack([np.cos(psi), np.sin(psi)], axis=-1)
        return direction, stretch, weight, phase, speed, vector

    def __call__(self, points, height, width, frame=0):
        points = _points(points)
        out = points.copy()
        direction, stretch, weight, phase, speed, vector = self._modes()
        base = self.wavelength * min(height, width)
        for k in range(len(weight)):
            wavenumber = 2.0 * math.pi / (base * stretch[k])
            argument = wavenumber * (
                direction[k, 0] * points[..., 0] + direction[k, 1] * points[..., 1]
            )
            argument += phase[k] + self.speed * speed[k] * frame
            wave = self.amplitude * weight[k] * np.cos(argument)
            out[..., 0] += vector[k, 0] * wave
            out[..., 1] += vector[k, 1] * wave
        return out


@dataclass(frozen=True)
class Fold(Deformation):
    """A fold-over (non-injective) map: a band of the frame is mirrored onto its surroundings.

    With axis "col", u = col - ``centre`` * W and h = ``width`` * W (axis
    "row": rows and H): T(p) = (row, col - strength * u * exp(-u^2 / (2 h^2))). The
    displacement vanishes far from the band; the slope dT/du is 1 - strength
    at the band centre, so ``strength > 1`` folds. At the default
    strength = 2: dT/du = -1 at the centre and dT/du < 0 for |u| < 0.625 h
    (det J < 0 there), and every source in |u| < 0.403 h is reached from three
    separate targets (three sheets). Default width 0.1: at 64 x 64 the
    reversed target band is about 8 px wide. Such maps break the bridge in
    grid (over-claimed sources, S_q > 1) and exercise the fold-over handling.
    """

    strength: float = 2.0
    width: float = 0.1
    axis: str = "col"
    centre: float = 0.5
    name = "fold"

    def __post_init__(self):
        _check_number("fold", "strength", self.strength)
        _check_number("fold", "width", self.width, positive=True)
        _check_number("fold", "centre", self.centre)
        _check_axis("fold", self.axis)

    def __call__(self, points, height, width, frame=0):
        out = _points(points)
        axis, size = (1, width) if self.axis == "col" else (0, height)
        band = self.width * size
        offset = out[..., axis] - self.centre * size
        out[..., axis] -= self.strength * offset * np.exp(-0.5 * (offset / band) ** 2)
        return out


@dataclass(frozen=True)
class Compose(Deformation):
    """Several motions in one frame step, ``parts[0]`` first: T = T_0 o T_1 o ... o T_n.

    Content first moves by ``parts[0]``, then by ``parts[1]``, ...; so the
    backward map applies the last part's T first: T(p) = T_0(T_1(...T_n(p))).
    An empty composition is the identity.
    """

    parts: tuple[Deformation, ...] = ()
    name = "compose"

    def __post_init__(self):
        parts = tuple(self.parts)
        for index, part in enumerate(parts):
            if not isinstance(part, Deformation):
                raise TypeError(
                    f"compose: parts[{index}] must be a Deformation, got {type(part).__name__}"
                )
        object.__setattr__(self, "parts", parts)

    @property
    def time_varying(self) -> bool:
        return any(part.time_varying for part in self.parts)

    def __call__(self, points, height, width, frame=0):
        out = _points(points)
        for part in reversed(self.parts):
            out = part(out, height, width, frame)
        return out

    def inverse(self) -> Compose:
        return Compose(tuple(part.inverse() for part in reversed(self.parts)))


DEFORMATIONS: dict[str, type[Deformation]] = {
    "identity": Identity,
    "translate": Translate,
    "rotate": Rotate,
    "zoom_in": ZoomIn,
    "zoom_out": ZoomOut,
    "shear": Shear,
    "swirl": Swirl,
    "turbulence": Turbulence,
    "fold": Fold,
}


def get_deformation(name: str, **params) -> Deformation:
    """Build the deformation registered as ``name`` with keyword parameters.

    Parameters
    ----------
    name : str
        A key of ``DEFORMATIONS``: identity, translate, rotate, zoom_in,
        zoom_out, shear, swirl, turbulence, fold.
    **params
        The dataclass fields of that deformation; omitted ones take their
        defaults, so ``get_deformation(name)`` always works.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones) or an invalid value.
    TypeError
        For a parameter the deformation does not have (the message lists the valid ones).
    """
    try:
        cls = DEFORMATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown deformation {name!r}; valid names: {', '.join(sorted(DEFORMATIONS))}"
        ) from None
    valid = [field.name for field in dataclasses.fields(cls)]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise TypeError(
            f"deformation {name!r} has no parameter(s) {', '.join(map(repr, unknown))}; "
            f"valid parameters: {', '.join(valid) if valid else '(none)'}"
        )
    return cls(**params)
