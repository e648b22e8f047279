"""Analytic deformations: backward maps T evaluable anywhere (centres and corners).

A deformation describes one frame step: for a point p of frame t+1 it returns
T(p), the position in frame t that p came from, in (row, col) pixel units
(DESIGN section 2). Being analytic, it can be evaluated at pixel centres (for
particle and the baselines) and exactly at pixel corners (for grid and hiwyn).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Deformation",
    "Identity",
    "Translate",
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
    ``frame`` lets it change over time.
    """

    name = "deformation"

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


@dataclass(frozen=True)
class Identity(Deformation):
    """T(p) = p: nothing moves."""

    name = "identity"

    def __call__(self, points, height, width, frame=0):
        return np.array(points, dtype=np.float64, copy=True)


@dataclass(frozen=True)
class Translate(Deformation):
    """Content moves by (``rows``, ``cols``) pixels per frame: T(p) = p - shift."""

    rows: float = 0.0
    cols: float = 0.0
    name = "translate"

    def __call__(self, points, height, width, frame=0):
        out = np.array(points, dtype=np.float64, copy=True)
        out[..., 0] -= self.rows
        out[..., 1] -= self.cols
        return out


DEFORMATIONS: dict[str, type[Deformation]] = {
    "identity": Identity,
    "translate": Translate,
}


def get_deformation(name: str, **params) -> Deformation:
    """Build the deformation registered as ``name`` with keyword parameters."""
    try:
        cls = DEFORMATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown deformation {name!r}; valid names: {', '.join(sorted(DEFORMATIONS))}"
        ) from None
    return cls(**params)
