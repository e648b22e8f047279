"""Reference grid partition record (docs/methods.md): polygon clipping in plain Python.

Written for reading rather than speed, and independently of the kernel's edge
integrals: each target's quadrilateral (split into its two triangles where it
self-intersects) is clipped against every unit cell by Sutherland-Hodgman and
the clipped polygon's area taken by the shoelace formula.
"""

from __future__ import annotations

import math

import numpy as np


def shoelace(polygon: list[tuple[float, float]]) -> float:
    """Signed area of a polygon given as a list of (row, col) vertices."""
    total = 0.0
    for k in range(len(polygon)):
        r0, c0 = polygon[k]
        r1, c1 = polygon[(k + 1) % len(polygon)]
        total += r0 * c1 - r1 * c0
    return 0.5 * total


def clip(polygon, axis: int, bound: float, keep_below: bool):
    """Sutherland-Hodgman: the part of ``polygon`` with coordinate ``axis`` <= (or >=) bound."""

    def inside(v):
        return v[axis] <= bound if keep_below else v[axis] >= bound

    def cut(a, b):
        t = (bound - a[axis]) / (b[axis] - a[axis])
        return (a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1]))

    out = []
    for k in range(len(polygon)):
        current = polygon[k]
        previous = polygon[k - 1]
        if inside(current):
            if not inside(previous):
                out.append(cut(previous, current))
            out.append(current)
        elif inside(previous):
            out.append(cut(previous, current))
    return out


def clip_to_box(polygon, r0: float, r1: float, c0: float, c1: float):
    """The part of a simple polygon inside the box [r0, r1] x [c0, c1]."""
    for axis, bound, keep_below in ((0, r0, False), (0, r1, True), (1, c0, False), (1, c1, True)):
        if not polygon:
            return []
        polygon = clip(polygon, axis, bound, keep_below)
    return polygon


def segment_intersection(a, b, c, d):
    """The point where segments a-b and c-d cross properly, or None."""
    denom = (b[0] - a[0]) * (d[1] - c[1]) - (b[1] - a[1]) * (d[0] - c[0])
    if denom == 0.0:
        return None
    t = ((c[0] - a[0]) * (d[1] - c[1]) - (c[1] - a[1]) * (d[0] - c[0])) / denom
    u = ((c[0] - a[0]) * (b[1] - a[1]) - (c[1] - a[1]) * (b[0] - a[0])) / denom
    if 0.0 < t < 1.0 and 0.0 < u < 1.0:
        return (a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1]))
    return None


def simple_pieces(quad):
    """The quad as simple polygons: itself, or the two triangles of a bow tie."""
    v0, v1, v2, v3 = quad
    x = segment_intersection(v0, v1, v2, v3)
    if x is not None:
        return [[x, v1, v2], [x, v3, v0]]
    x = segment_intersection(v1, v2, v3, v0)
    if x is not None:
        return [[x, v2, v3], [x, v0, v1]]
    return [list(quad)]


def quad_of(corners: np.ndarray, i: int, j: int):
    """Target (i, j)'s quadrilateral: T at its corners in boundary order."""
    return [
        tuple(float(v) for v in corners[i, j]),
        tuple(float(v) for v in corners[i, j + 1]),
        tuple(float(v) for v in corners[i + 1, j + 1]),
        tuple(float(v) for v in corners[i + 1, j]),
    ]


def quad_cell_area(quad, row: int, col: int) -> float:
    """|quad ∩ cell (row, col)|, bow-tie lobes added."""
    return sum(
        abs(shoelace(clip_to_box(piece, row, row + 1, col, col + 1)))
        for piece in simple_pieces(quad)
    )


def quad_area(quad) -> float:
    return sum(abs(shoelace(piece)) for piece in simple_pieces(quad))


def grid_record(corners: np.ndarray, tol: float = 1e-13):
    """({(target, source): a_pq}, A_out [H*W]) by clipping every quad against every cell
    of its bounding box and against the frame."""
    height, width = corners.shape[0] - 1, corners.shape[1] - 1
    record: dict[tuple[int, int], float] = {}
    area_out = np.zeros(height * width)
    for i in range(height):
        for j in range(width):
            p = i * width + j
            quad = quad_of(corners, i, j)
            rows = [v[0] for v in quad]
            cols = [v[1] for v in quad]
            r_lo = max(math.floor(min(rows)), 0)
            r_hi = min(math.ceil(max(rows)), height)
            c_lo = max(math.floor(min(cols)), 0)
            c_hi = min(math.ceil(max(cols)), width)
            for row in range(r_lo, r_hi):
                for col in range(c_lo, c_hi):
                    area = quad_cell_area(quad, row, col)
                    if area > tol:
                        record[(p, row * width + col)] = area
            inside = sum(
                abs(shoelace(clip_to_box(piece, 0, height, 0, width)))
                for piece in simple_pieces(quad)
            )
            area_out[p] = max(quad_area(quad) - inside, 0.0)
    return record, area_out


def renormalised(record: dict[tuple[int, int], float], tol: float = 1e-9):
    """The record with over-claimed sources (S_q > 1 + tol) scaled to S_q = 1."""
    claimed: dict[int, float] = {}
    for (_, q), a in record.items():
        claimed[q] = claimed.get(q, 0.0) + a
    return {
        (p, q): (a / claimed[q] if claimed[q] > 1.0 + tol else a) for (p, q), a in record.items()
    }


def sample(x: np.ndarray, a: np.ndarray, area_out: np.ndarray, draws: int, seed: int = 0,
           bridge: bool = True, fresh: bool = True) -> np.ndarray:  # fmt: skip
    """``draws`` warps of the flat source ``x`` from the dense area matrix ``a`` [P, Q] (numpy).

    The bridge of docs/methods.md in matrix form: z_pq ~ N(0, a_pq), z_rest ~ N(0, 1 - S_q),
    I_pq = z_pq + a_pq (x_q - sum_p z_pq - z_rest), Y_p = (sum_q I_pq + sqrt(A_out)
    xi_p) / sqrt(A_in + A_out). ``bridge=False`` and ``fresh=False`` are deliberately
    broken variants (independent pieces; no fresh term) for the tests that show
    the moment check can fail.
    """
    rng = np.random.default_rng(seed)
    npix = a.shape[0]
    # One column per piece (p, q) with a_pq > 0, and 0/1 matrices from pieces to targets
    # and to sources.
    target, source = np.nonzero(a)
    pieces_area = a[target, source]
    to_target = np.zeros((target.size, npix))
    to_target[np.arange(target.size), target] = 1.0
    to_source = np.zeros((target.size, a.shape[1]))
    to_source[np.arange(target.size), source] = 1.0
    rest = np.clip(1.0 - a.sum(axis=0), 0.0, None)
    z = rng.standard_normal((draws, target.size)) * np.sqrt(pieces_area)
    if bridge:
        z_rest = rng.standard_normal((draws, a.shape[1])) * np.sqrt(rest)
        correction = x - z @ to_source - z_rest
        pieces = z + pieces_area * correction[:, source]
    else:
        pieces = z + pieces_area * x[source]
    area_in = a.sum(axis=1)
    total = area_in + area_out
    numerator = pieces @ to_target
    if fresh:
        numerator = numerator + np.sqrt(area_out) * rng.standard_normal((draws, npix))
    out = numerator / np.sqrt(np.where(total > 0, total, 1.0))
    return np.where(area_in > 0, out, rng.standard_normal((draws, npix)))
