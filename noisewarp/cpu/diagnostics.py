"""What the kernels report besides the warped frame: per-row partial diagnostics (reduced
once per frame, never per chunk, so the frame's sums do not depend on the number of
threads) and, when asked, the conditional moments of the warp given its source frame."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

__all__ = [
    "Conditional",
    "ConditionalSums",
    "conditional_buffers",
    "product_sums",
    "target_summary",
]

# Fixed blocks (not threads) of ``product_sums``: the result does not depend on the
# number of threads.
_BLOCKS = 64


@njit(parallel=True, cache=True, nogil=True)
def _product_sums(a, b, shift_a, shift_b, sums):
    """Per block k, one pass: sums of a', b', a'^2, b'^2, a'b' in ``sums[k]``, with
    a' = a - shift_a and b' = b - shift_b (flat arrays of one length)."""
    n = a.size
    blocks = sums.shape[0]
    for k in prange(blocks):
        sa = sb = saa = sbb = sab = 0.0
        for i in range(k * n // blocks, (k + 1) * n // blocks):
            x = a[i] - shift_a
            y = b[i] - shift_b
            sa += x
            sb += y
            saa += x * x
            sbb += y * y
            sab += x * y
        sums[k, 0] = sa
        sums[k, 1] = sb
        sums[k, 2] = saa
        sums[k, 3] = sbb
        sums[k, 4] = sab


def product_sums(a: np.ndarray, b: np.ndarray, shift_a: float = 0.0, shift_b: float = 0.0):
    """(sum a', sum b', sum a'^2, sum b'^2, sum a'b') in float64 over two equally long
    arrays, a' = a - shift_a, b' = b - shift_b (a shift near the data's centre keeps the
    sums well conditioned); one parallel pass, blocks added in order."""
    sums = np.empty((_BLOCKS, 5))
    _product_sums(np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1),
                  float(shift_a), float(shift_b), sums)  # fmt: skip
    return tuple(float(v) for v in sums.sum(axis=0))


class Conditional(NamedTuple):
    """E[Y | X] of one warp under the method's own model (docs/methods.md).

    With Y_p = sum_q c_pq x_q + (noise independent of X), ``mean[p]`` is
    sum_q c_pq x_q and ``carried[p]`` is sum_q c_pq^2: the fraction of Var Y_p that
    the source frame explains when X is i.i.d. N(0, 1). For the integral methods
    c_pq = a_pq / sqrt(A_p), so ``carried`` is sum_q a_pq^2 / A_p. Kernels take and fill
    flat arrays (``mean`` [H*W, C], ``carried`` [H*W], float32); empty arrays mean
    "not asked".
    """

    mean: np.ndarray
    carried: np.ndarray

    def frame(self, height: int, width: int) -> Conditional:
        """The same moments shaped as a frame: ``mean`` [H, W, C], ``carried`` [H, W]."""
        return Conditional(
            self.mean.reshape(height, width, -1), self.carried.reshape(height, width)
        )


class ConditionalSums(NamedTuple):
    """What the temporal metrics need of a ``Conditional``, without its frame-sized arrays.

    Over every pixel p and channel c of one warp, with y the warped frame and m its
    E[Y | X]: ``mean`` = sum m, ``mean_sq`` = sum m^2, ``cross`` = sum y m, and
    ``carried`` = sum_p sum_q c_pq^2. A kernel accumulates them per row of targets and
    adds the rows in order (the result does not depend on the thread count); sum y and
    sum y^2 come from the frame itself.
    """

    mean: float
    mean_sq: float
    cross: float
    carried: float

    @classmethod
    def of(cls, frame: np.ndarray, conditional: Conditional) -> ConditionalSums:
        """The sums of a ``Conditional`` (frame or flat layout) and its frame [H, W, C]."""
        _, mean, _, mean_sq, cross = product_sums(frame, conditional.mean)
        return cls(mean, mean_sq, cross, float(np.sum(conditional.carried, dtype=np.float64)))

    @classmethod
    def from_rows(cls, rows: np.ndarray) -> ConditionalSums:
        """Add a kernel's per-row partial sums [rows, SUMS] (row by row, a fixed order)."""
        return cls(*(float(v) for v in np.asarray(rows, dtype=np.float64).sum(axis=0)))


SUMS = 4  # columns of a kernel's per-row ConditionalSums partials


def conditional_buffers(pixels: int, channels: int, wanted) -> Conditional:
    """Flat buffers for a kernel to fill (it writes every target, fresh ones 0): the
    caller's own when ``wanted`` is a ``Conditional`` of flat buffers of this size (a
    streaming warper reuses them instead of faulting in 20 MB a frame at 1024), new ones
    when it is True, empty ones ("not asked") when it is false."""
    if isinstance(wanted, Conditional):
        if wanted.mean.shape != (pixels, channels) or wanted.carried.shape != (pixels,):
            raise ValueError(
                f"conditional buffers {wanted.mean.shape}, {wanted.carried.shape} do not fit "
                f"{pixels} pixels x {channels} channels"
            )
        return wanted
    size = pixels if wanted else 0
    return Conditional(
        np.empty((size, channels), dtype=np.float32), np.empty(size, dtype=np.float32)
    )


def target_summary(row_stats: np.ndarray, npix: int) -> dict:
    """Reduce per-row (fresh pixels, min A_p, sum A_p, max A_p) to the frame's figures."""
    return {
        "fresh_pixels": int(row_stats[:, 0].sum()),
        "area_min": float(row_stats[:, 1].min()),
        "area_mean": float(row_stats[:, 2].sum() / npix),
        "area_max": float(row_stats[:, 3].max()),
    }
