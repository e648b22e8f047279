"""Partial diagnostics per target row or bucket (never per chunk, so the frame's sums
do not depend on the number of threads), reduced once per frame."""

from __future__ import annotations

import numpy as np

__all__ = ["target_summary"]


def target_summary(row_stats: np.ndarray, npix: int) -> dict:
    """Reduce per-row (fresh pixels, min A_p, sum A_p, max A_p) to the frame's figures."""
    return {
        "fresh_pixels": int(row_stats[:, 0].sum()),
        "area_min": float(row_stats[:, 1].min()),
        "area_mean": float(row_stats[:, 2].sum() / npix),
        "area_max": float(row_stats[:, 3].max()),
    }
