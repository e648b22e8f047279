"""How much of the noise moves with the motion: temporal carry-over metrics.

Under the particle area model (DESIGN section 4) the best prediction of frame
t+1 from frame t is E[Y_p | X] = sum_q a_pq x_q / sqrt(A_p); the correlation of
the actual frame t+1 with it (:func:`temporal_correlation`,
:func:`temporal_metrics`) says how much of the noise travels along the motion.
"""

from __future__ import annotations

import math

import numpy as np

from noisewarp.core.checks import as_map

__all__ = ["conditional_mean", "temporal_metrics", "temporal_correlation"]


# --------------------------------------------------------------------------- temporal


def _particle_areas(tmap: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Sources and areas a_pq of the particle model (DESIGN section 4), [H*W, 4] each.

    An independent numpy formulation of ``noisewarp.cpu.particle`` (so the
    metric can check the kernel): target p requests the bilinear neighbours of
    u = T(p) - (0.5, 0.5); a_pq = w_pq / sum_p' w_p'q. Unused entries have area
    0 and source 0.
    """
    u = tmap.reshape(-1, 2) - 0.5
    # Clipping keeps far-away particles far away (all neighbours out of bounds)
    # and makes the integer conversion safe.
    u_row = np.clip(u[:, 0], -2.0, height + 1.0)
    u_col = np.clip(u[:, 1], -2.0, width + 1.0)
    cell_row = np.floor(u_row)
    cell_col = np.floor(u_col)
    frac_row = u_row - cell_row
    frac_col = u_col - cell_col
    cell_row = cell_row.astype(np.int64)
    cell_col = cell_col.astype(np.int64)
    sources = np.zeros((u.shape[0], 4), dtype=np.int64)
    weights = np.zeros((u.shape[0], 4), dtype=np.float64)
    for k in range(4):  # the four neighbours, not pixels
        d_row, d_col = k >> 1, k & 1
        row, col = cell_row + d_row, cell_col + d_col
        weight = (frac_row if d_row else 1.0 - frac_row) * (frac_col if d_col else 1.0 - frac_col)
        valid = (row >= 0) & (row < height) & (col >= 0) & (col < width) & (weight > 0)
        sources[:, k] = np.where(valid, row * width + col, 0)
        weights[:, k] = np.where(valid, weight, 0.0)
    claimed = np.bincount(sources.ravel(), weights.ravel(), minlength=height * width)
    with np.errstate(divide="ignore", invalid="ignore"):
        areas = np.where(weights > 0, weights / claimed[sources], 0.0)
    return sources, areas


def _temporal_inputs(prev, tmap) -> tuple[np.ndarray, np.ndarray, bool]:
    prev = np.asarray(prev)
    squeeze = prev.ndim == 2
    if squeeze:
        prev = prev[:, :, None]
    if prev.ndim != 3:
        raise ValueError(f"prev must be a frame [H, W, C] or [H, W], got shape {prev.shape}")
    height, width = prev.shape[:2]
    return prev.astype(np.float64, copy=False), as_map(tmap, height, width, "tmap"), squeeze


def _conditional_mean(prev: np.ndarray, tmap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    height, width, channels = prev.shape
    sources, areas = _particle_areas(tmap, height, width)
    total = areas.sum(axis=1)
    gathered = prev.reshape(-1, channels)[sources]  # [H*W, 4, C]
    numerator = np.einsum("pk,pkc->pc", areas, gathered)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(total > 0, 1.0 / np.sqrt(total), 0.0)
    mean = (numerator * scale[:, None]).reshape(height, width, channels)
    carried = np.where(total > 0, (areas**2).sum(axis=1) * scale**2, 0.0)
    return mean, carried


def conditional_mean(prev: np.ndarray, tmap: np.ndarray) -> np.ndarray:
    """E[Y | X = prev] of the particle warp: the motion-compensated prediction of frame t+1.

    Under the particle area model (DESIGN sections 3-4) target p requests the
    four bilinear neighbours q of u = T(p) - (0.5, 0.5) (in the frame, weight
    w_pq > 0), each source normalises a_pq = w_pq / sum_p' w_p'q, and

        E[Y_p | X] = sum_q a_pq x_q / sqrt(A_p),   A_p = sum_q a_pq,

    with 0 where A_p = 0 (fresh noise).

    Parameters
    ----------
    prev : np.ndarray
        Frame t, [H, W, C] or [H, W].
    tmap : np.ndarray
        Backward map [H, W, 2] in (row, col) pixel units.

    Returns
    -------
    np.ndarray
        float64, the shape of ``prev``.

    Examples
    --------
    >>> import numpy as np
    >>> from noisewarp.metrics import conditional_mean
    >>> x = np.random.default_rng(0).standard_normal((4, 5, 2))
    >>> identity = np.stack(np.meshgrid(np.arange(4), np.arange(5), indexing="ij"), -1) + 0.5
    >>> bool(np.allclose(conditional_mean(x, identity), x))
    True
    """
    prev, tmap, squeeze = _temporal_inputs(prev, tmap)
    mean = _conditional_mean(prev, tmap)[0]
    return mean[:, :, 0] if squeeze else mean


def temporal_metrics(prev: np.ndarray, next: np.ndarray, tmap: np.ndarray) -> dict[str, float]:
    """How much of frame t's noise frame t+1 carries along the motion.

    Parameters
    ----------
    prev, next : np.ndarray
        Frames t and t+1, [H, W, C] (or [H, W]).
    tmap : np.ndarray
        Backward map [H, W, 2] from frame t+1 to frame t, (row, col).

    Returns
    -------
    dict[str, float]
        ``temporal_corr``: Pearson r of ``next`` with :func:`conditional_mean`
        over all pixels and channels (0.0 when the prediction is constant:
        nothing is carried); ``carried_variance``: its square, the fraction of
        variance carried over (Cov[Y, E[Y|X]] = Var E[Y|X] makes r^2 that
        fraction when the particle model holds); ``expected_carried_variance``:
        the fraction the map predicts for i.i.d. unit-variance input, the mean
        over pixels of sum_q a_pq^2 / A_p.
    """
    prev, tmap, _ = _temporal_inputs(prev, tmap)
    following = np.asarray(next, dtype=np.float64)
    if following.ndim == 2:
        following = following[:, :, None]
    if following.shape != prev.shape:
        raise ValueError(f"next has shape {following.shape} but prev has shape {prev.shape}")
    mean, carried = _conditional_mean(prev, tmap)
    predicted = mean.ravel() - mean.mean()
    actual = following.ravel() - following.mean()
    denominator = math.sqrt(float(predicted @ predicted) * float(actual @ actual))
    corr = float(predicted @ actual) / denominator if denominator > 0 else 0.0
    return {
        "temporal_corr": corr,
        "carried_variance": corr * corr,
        "expected_carried_variance": float(carried.mean()),
    }


def temporal_correlation(prev: np.ndarray, next: np.ndarray, tmap: np.ndarray) -> float:
    """Pearson r of frame t+1 with its conditional mean given frame t.

    Its square is the fraction of variance carried over along the motion; see
    :func:`temporal_metrics`, which returns both. 1 for the identity map and
    ``next == prev``; about 0 (within 1/sqrt(n)) for independent frames.
    """
    return temporal_metrics(prev, next, tmap)["temporal_corr"]
