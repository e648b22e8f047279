"""How much of the noise moves with the motion: temporal carry-over metrics.

Each method is scored under its own model. Its kernel reports, on its way to frame
t+1 (``warp(..., return_conditional=True)``), the best prediction of that frame from
frame t, E[Y_p | X] = sum_q c_pq x_q, and the fraction of each pixel's variance it
explains, sum_q c_pq^2 (for the integral methods c_pq = a_pq / sqrt(A_p) with the
method's own areas: particle's fuzzy ones, grid's exact ones, hiwyn's sub-pixel
counts). The correlation of the actual frame t+1 with that prediction says how much
of the noise travels along the motion (:func:`carried_metrics`); since
Cov[Y, E[Y|X]] = Var E[Y|X], its square estimates the carried fraction, which the
map predicts exactly (``expected_carried_variance``).
"""

from __future__ import annotations

import math

import numpy as np

from noisewarp.cpu.diagnostics import ConditionalSums, product_sums

__all__ = ["carried_metrics", "conditional_mean", "temporal_metrics", "temporal_correlation"]


def _pearson(n, sa, sb, saa, sbb, sab) -> float:
    """Pearson r from the sums of a, b, a^2, b^2, ab (0.0 when either is constant)."""
    if n == 0 or math.isnan(sa + sb + saa + sbb + sab):
        return math.nan
    ab = sab - sa * sb / n
    aa = max(saa - sa * sa / n, 0.0)
    bb = max(sbb - sb * sb / n, 0.0)
    denominator = math.sqrt(aa * bb)
    # Constant within rounding (e.g. a prediction of zeros): nothing is carried.
    if denominator <= 1e-12 * max(saa, sbb, 1e-300):
        return 0.0
    return max(-1.0, min(1.0, ab / denominator))


def _correlation(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Pearson r of two equally long arrays (0.0 when either is constant)."""
    if actual.size == 0:
        return math.nan
    # Shifted by the first values: the float64 sums stay well conditioned.
    shifts = float(actual.flat[0]), float(predicted.flat[0])
    return _pearson(actual.size, *product_sums(actual, predicted, *shifts))


def _carried_from_sums(following: np.ndarray, sums: ConditionalSums,
                       frame_sums: tuple | None = None) -> dict[str, float]:  # fmt: skip
    """:func:`carried_metrics` from a kernel's ``ConditionalSums`` and the frame's own sums
    (``frame_sums`` = (sum y, sum y^2) when known, else computed here)."""
    frame = np.ascontiguousarray(following).reshape(-1)
    if frame_sums is None:
        total, _, squares, _, _ = product_sums(frame, frame)
        frame_sums = total, squares
    sy, syy = (float(v) for v in frame_sums)
    corr = _pearson(frame.size, sy, sums.mean, syy, sums.mean_sq, sums.cross)
    pixels = frame.size // following.shape[-1] if following.ndim == 3 else frame.size
    return {
        "temporal_corr": corr,
        "carried_variance": corr * corr,
        "expected_carried_variance": sums.carried / pixels if pixels else math.nan,
    }


def carried_metrics(
    following: np.ndarray, conditional, mask=None, frame_sums=None
) -> dict[str, float]:
    """How much of frame t the frame t+1 carries, given the kernel's E[Y | X].

    Parameters
    ----------
    following : np.ndarray
        Frame t+1, [H, W, C].
    conditional : noisewarp.Conditional or ConditionalSums
        What the kernel reported for this step: ``mean`` [H, W, C] = E[Y | X] and
        ``carried`` [H, W] = sum_q c_pq^2, or only their sums (``warp(...,
        return_conditional="sums")``: the same figures to rounding, without the arrays).
    mask : np.ndarray, optional
        bool [H, W]: only these pixels (e.g. the moving ones).
    frame_sums : (float, float), optional
        sum and sum of squares of ``following``, when already known (with sums only).

    Returns
    -------
    dict[str, float]
        ``temporal_corr``: Pearson r of ``following`` with ``mean`` over all pixels
        and channels (0.0 when the prediction is constant: nothing is carried);
        ``carried_variance``: its square, the fraction of variance carried over;
        ``expected_carried_variance``: the fraction the map predicts for i.i.d.
        unit-variance input, the mean of ``carried`` over pixels.
    """
    following = np.asarray(following)
    if isinstance(conditional, ConditionalSums):
        if mask is not None:
            raise ValueError("a mask needs the Conditional's arrays, not its sums")
        return _carried_from_sums(following, conditional, frame_sums)
    mean = np.asarray(conditional.mean)
    if following.shape != mean.shape:
        raise ValueError(
            f"frame t+1 has shape {following.shape} but its conditional mean {mean.shape}"
        )
    carried = np.asarray(conditional.carried)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != mean.shape[:2]:
            raise ValueError(f"mask has shape {mask.shape}, the frame {mean.shape[:2]}")
        following, mean, carried = following[mask], mean[mask], carried[mask]
    corr = _correlation(np.ascontiguousarray(following), np.ascontiguousarray(mean))
    return {
        "temporal_corr": corr,
        "carried_variance": corr * corr,
        "expected_carried_variance": float(np.mean(carried, dtype=np.float64)),
    }


def _conditional(prev, tmap, method: str, options: dict):
    """The kernel's ``Conditional`` for warping ``prev`` ([H, W, C] or [H, W]) along
    ``tmap``, and whether ``prev`` had no channel axis."""
    from noisewarp.warp import warp

    prev = np.asarray(prev)
    squeeze = prev.ndim == 2
    if squeeze:
        prev = prev[:, :, None]
    if prev.ndim != 3:
        raise ValueError(f"prev must be a frame [H, W, C] or [H, W], got shape {prev.shape}")
    _, conditional = warp(prev, tmap, method=method, key=(0, 1), return_conditional=True, **options)
    return conditional, squeeze


def conditional_mean(
    prev: np.ndarray, tmap: np.ndarray, method: str = "particle", **options
) -> np.ndarray:
    """E[Y | X = prev] of a method's warp: the motion-compensated prediction of frame t+1.

    For particle (the default), target p requests the four bilinear neighbours q of
    u = T(p) - (0.5, 0.5) (in the frame, weight w_pq > 0), each source normalises
    a_pq = w_pq / sum_p' w_p'q, and E[Y_p | X] = sum_q a_pq x_q / sqrt(A_p),
    A_p = sum_q a_pq, with 0 where A_p = 0 (fresh noise). Other methods use their own
    areas (docs/methods.md). Computed by the method's kernel (float32 noise).

    Parameters
    ----------
    prev : np.ndarray
        Frame t, [H, W, C] or [H, W].
    tmap : np.ndarray or Deformation
        Backward map [H, W, 2] in (row, col) pixel units.
    method : str
        A name in ``noisewarp.METHODS``; ``**options`` are its options.

    Returns
    -------
    np.ndarray
        float32, the shape of ``prev``.

    Examples
    --------
    >>> import numpy as np
    >>> from noisewarp.metrics import conditional_mean
    >>> x = np.random.default_rng(0).standard_normal((4, 5, 2))
    >>> identity = np.stack(np.meshgrid(np.arange(4), np.arange(5), indexing="ij"), -1) + 0.5
    >>> bool(np.allclose(conditional_mean(x, identity), x, atol=1e-6))
    True
    """
    conditional, squeeze = _conditional(prev, tmap, method, options)
    return conditional.mean[:, :, 0] if squeeze else conditional.mean


def temporal_metrics(
    prev: np.ndarray,
    next: np.ndarray,
    tmap: np.ndarray,
    method: str = "particle",
    mask: np.ndarray | None = None,
    **options,
) -> dict[str, float]:
    """:func:`carried_metrics` of frame t+1 ``next`` after frame t ``prev`` along ``tmap``,
    under ``method``'s model (its kernel's E[Y | X]; ``**options`` are its options),
    over the pixels of ``mask`` (all by default).

    With one yardstick for every sequence (say ``method="grid"``, exact integral
    warping) this compares methods: noise that stays on the screen (``fixed``) or is
    drawn afresh (``random``) carries little along the motion where things move.
    """
    conditional, squeeze = _conditional(prev, tmap, method, options)
    following = np.asarray(next, dtype=np.float32)
    if squeeze and following.ndim == 2:
        following = following[:, :, None]
    return carried_metrics(following, conditional, mask)


def temporal_correlation(
    prev: np.ndarray, next: np.ndarray, tmap: np.ndarray, method: str = "particle", **options
) -> float:
    """Pearson r of frame t+1 with its conditional mean given frame t.

    Its square is the fraction of variance carried over along the motion; see
    :func:`temporal_metrics`, which returns both. 1 for the identity map and
    ``next == prev``; about 0 (within 1/sqrt(n)) for independent frames.
    """
    return temporal_metrics(prev, next, tmap, method, **options)["temporal_corr"]
