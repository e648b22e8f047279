"""Reference HIWYN sub-pixel assignment (Chang et al. 2024): a point-in-polygon test per sub-pixel.

Plain Python, written for reading rather than speed: every sub-pixel centre near
a target's quadrilateral is tested with the even-odd crossing rule, and the
conditional mean E[Y | X] follows from which source cell each counted sub-pixel
lies in.
"""

from __future__ import annotations

import math

import numpy as np

from naive.grid import quad_of


def crossing_column(a, b, y: float) -> float | None:
    """Column where edge a-b crosses the line row = y, counting it when exactly one
    endpoint lies below y (row > y); interpolated from the endpoint with the
    smaller row, so both quads sharing the edge see the same crossing."""
    if (a[0] > y) == (b[0] > y):
        return None
    low, high = (a, b) if a[0] < b[0] else (b, a)
    return low[1] + (y - low[0]) * (high[1] - low[1]) / (high[0] - low[0])


def inside(polygon, row: float, col: float) -> bool:
    """Even-odd rule: an odd number of edge crossings right of the point (x < crossing)."""
    count = 0
    for k in range(len(polygon)):
        x = crossing_column(polygon[k], polygon[(k + 1) % len(polygon)], row)
        if x is not None and col < x:
            count += 1
    return count % 2 == 1


def frame_outline(corners: np.ndarray):
    """The image of the frame's boundary: the mapped boundary corners, in order."""
    height, width = corners.shape[0] - 1, corners.shape[1] - 1
    ring = [(0, j) for j in range(width)] + [(i, width) for i in range(height)]
    ring += [(height, j) for j in range(width, 0, -1)] + [(i, 0) for i in range(height, 0, -1)]
    return [tuple(float(v) for v in corners[i, j]) for i, j in ring]


def subpixel_counts(corners: np.ndarray, centres: np.ndarray, n: int):
    """Per target p: ({source q: |K_pq|}, fresh sub-pixels of K_p, fallback).

    ``fallback`` is None when K_p is non-empty, else the flat source containing
    T(p) at sub-pixel resolution (or -1 outside the frame). A quad entirely
    outside the frame is fresh noise as a whole: no counts, fallback -1.
    """
    height, width = corners.shape[0] - 1, corners.shape[1] - 1
    result = []
    for i in range(height):
        for j in range(width):
            quad = quad_of(corners, i, j)
            rows = [v[0] for v in quad]
            cols = [v[1] for v in quad]
            per_source: dict[int, int] = {}
            fresh = 0
            if max(rows) <= 0 or min(rows) >= height or max(cols) <= 0 or min(cols) >= width:
                # Entirely outside the frame: one fresh N(0, 1), by convention |K_p| = 0.
                result.append((per_source, fresh, -1))
                continue
            for sr in range(math.floor(min(rows) * n) - 1, math.ceil(max(rows) * n) + 1):
                for sc in range(math.floor(min(cols) * n) - 1, math.ceil(max(cols) * n) + 1):
                    if not inside(quad, (sr + 0.5) / n, (sc + 0.5) / n):
                        continue
                    r, c = sr // n, sc // n
                    if 0 <= r < height and 0 <= c < width:
                        per_source[r * width + c] = per_source.get(r * width + c, 0) + 1
                    else:
                        fresh += 1
            fallback = None
            if not per_source and fresh == 0:
                r = math.floor(centres[i, j, 0] * n) // n
                c = math.floor(centres[i, j, 1] * n) // n
                fallback = r * width + c if 0 <= r < height and 0 <= c < width else -1
            result.append((per_source, fresh, fallback))
    return result


def conditional_mean(x: np.ndarray, counts, n: int) -> np.ndarray:
    """E[Y_p | X] = sum_q |K_pq| x_q / n / sqrt(|K_p|) (E[s | x_q] = x_q / n; fresh: 0).

    ``x`` is the flat source channel; an empty K_p takes its fallback sub-pixel.
    """
    mean = np.zeros(len(counts))
    for p, (per_source, fresh, fallback) in enumerate(counts):
        total = sum(per_source.values()) + fresh
        if total:
            mean[p] = sum(k * x[q] for q, k in per_source.items()) / n / math.sqrt(total)
        elif fallback is not None and fallback >= 0:
            mean[p] = x[fallback] / n
    return mean
