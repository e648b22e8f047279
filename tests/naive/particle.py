"""Reference particle partition record and the exact conditional moments (docs/methods.md).

Plain Python loops, written for reading rather than speed.
"""

from __future__ import annotations

import math

import numpy as np


def particle_record(tmap: np.ndarray) -> dict[tuple[int, int], float]:
    """{(target, source): a_pq} for the particle method, by direct enumeration."""
    height, width = tmap.shape[:2]
    requests: dict[tuple[int, int], float] = {}
    for i in range(height):
        for j in range(width):
            ur = tmap[i, j, 0] - 0.5
            uc = tmap[i, j, 1] - 0.5
            if not (-1.0 <= ur < height and -1.0 <= uc < width):
                continue
            r0, c0 = math.floor(ur), math.floor(uc)
            fr, fc = ur - r0, uc - c0
            for dr, wr in ((0, 1.0 - fr), (1, fr)):
                for dc, wc in ((0, 1.0 - fc), (1, fc)):
                    r, c = r0 + dr, c0 + dc
                    w = wr * wc
                    if 0 <= r < height and 0 <= c < width and w > 0.0:
                        requests[(i * width + j, r * width + c)] = w
    claimed: dict[int, float] = {}
    for (_, source), w in requests.items():
        claimed[source] = claimed.get(source, 0.0) + w
    return {(p, q): w / claimed[q] for (p, q), w in requests.items()}


def record_matrix(record: dict[tuple[int, int], float], npix: int) -> np.ndarray:
    """Dense [targets, sources] matrix of a_pq."""
    a = np.zeros((npix, npix))
    for (p, q), value in record.items():
        a[p, q] = value
    return a


def conditional_moments(
    a: np.ndarray, x: np.ndarray, out_area: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """E[Y | X] and Cov[Y | X] from the dense area matrix (docs/methods.md).

    ``a[p, q]`` = a_pq, ``x`` the flat source channel, ``out_area[p]`` = A_out
    (zero for particle). Targets with A_p = 0 are fresh: mean 0, variance 1.
    E[Y_p] = sum_q a_pq x_q / sqrt(A_p),
    Cov[Y_p, Y_p'] = (delta_pp' A_p - sum_q a_pq a_p'q) / sqrt(A_p A_p').
    """
    npix = a.shape[0]
    if out_area is None:
        out_area = np.zeros(npix)
    total = a.sum(axis=1) + out_area
    fresh = total == 0.0
    norm = np.where(fresh, 1.0, np.sqrt(np.where(fresh, 1.0, total)))
    mean = np.where(fresh, 0.0, (a @ x) / norm)
    cov = (np.diag(total) - a @ a.T) / np.outer(norm, norm)
    cov[fresh, :] = 0.0
    cov[:, fresh] = 0.0
    cov[np.diag_indices(npix)] = np.where(fresh, 1.0, np.diag(cov))
    return mean, cov
