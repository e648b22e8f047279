"""What the kernels report besides the warped frame: per-row partial diagnostics (reduced
once per frame, never per chunk, so the frame's sums do not depend on the number of
threads) and, when asked, the conditional moments of the warp given its source frame."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Conditional", "ConditionalSums", "conditional_buffers", "target_summary"]


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
        y = np.asarray(frame, dtype=np.float64).reshape(-1)
        m = np.asarray(conditional.mean, dtype=np.float64).reshape(-1)
        return cls(float(m.sum()), float(m @ m), float(y @ m),
                   float(np.sum(conditional.carried, dtype=np.float64)))  # fmt: skip

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
