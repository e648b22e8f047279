"""Input validation shared by the public functions: one place, clear messages."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["as_noise_frame", "as_map", "count_nonfinite", "check_finite"]


@njit(parallel=True, nogil=True, cache=True)
def _count_nonfinite_rows(flat2d):
    # np.empty: every row is written; np.zeros here would be one more loop to compile.
    out = np.empty(flat2d.shape[0], dtype=np.int64)
    for i in prange(flat2d.shape[0]):
        n = 0
        for v in flat2d[i]:
            if not np.isfinite(v):
                n += 1
        out[i] = n
    return out


def count_nonfinite(array: np.ndarray) -> int:
    """Number of NaN or infinite elements (parallel, no temporary boolean array)."""
    array = np.ascontiguousarray(array)
    if array.size == 0:
        return 0
    rows = array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(1, -1)
    return int(_count_nonfinite_rows(rows).sum())


def check_finite(array: np.ndarray, what: str, frame: int | None = None) -> None:
    """Raise ``ValueError`` naming ``what`` (and the frame) if ``array`` has NaN/Inf."""
    bad = count_nonfinite(array)
    if bad:
        where = f" at frame {frame}" if frame is not None else ""
        raise ValueError(
            f"{what}{where} contains {bad} non-finite value(s) (NaN or Inf) out of {array.size}"
        )


def as_noise_frame(noise, what: str = "noise") -> np.ndarray:
    """Validate one noise frame [H, W, C] and return it as C-contiguous float32."""
    if not isinstance(noise, np.ndarray):
        raise TypeError(f"{what} must be a numpy array [H, W, C], got {type(noise).__name__}")
    if not np.issubdtype(noise.dtype, np.floating):
        raise TypeError(
            f"{what} must be a floating-point array (float32 or float64), got dtype {noise.dtype}; "
            "integer data is not Gaussian noise"
        )
    if noise.ndim != 3:
        raise ValueError(
            f"{what} must have shape [H, W, C] (one frame, channels last), got shape {noise.shape}"
        )
    height, width, channels = noise.shape
    if channels < 1:
        raise ValueError(f"{what} must have at least one channel (C >= 1), got shape {noise.shape}")
    if height < 1 or width < 1:
        raise ValueError(f"{what} must have H >= 1 and W >= 1, got shape {noise.shape}")
    with np.errstate(over="ignore"):  # an overflow is reported below, with its cause
        converted = np.ascontiguousarray(noise, dtype=np.float32)
    try:
        check_finite(converted, what)
    except ValueError:
        if noise.dtype.itemsize > 4 and not count_nonfinite(noise):
            raise ValueError(
                f"{what} has values beyond float32's range (|x| > 3.4e38), which the float32 "
                "frame cannot hold; noise is expected to be N(0, 1)"
            ) from None
        raise
    return converted


def as_map(
    tmap, height: int, width: int, what: str = "map", frame: int | None = None
) -> np.ndarray:
    """Validate a deformation map [H, W, 2] in (row, col) order; return C-contiguous float64."""
    if not isinstance(tmap, np.ndarray):
        raise TypeError(f"{what} must be a numpy array [H, W, 2], got {type(tmap).__name__}")
    if not (np.issubdtype(tmap.dtype, np.floating) or np.issubdtype(tmap.dtype, np.integer)):
        raise TypeError(f"{what} must be a real-valued array, got dtype {tmap.dtype}")
    if tmap.ndim != 3 or tmap.shape[2] != 2:
        raise ValueError(f"{what} must have shape [H, W, 2] (row, col), got shape {tmap.shape}")
    if tmap.shape[:2] != (height, width):
        raise ValueError(
            f"{what} has H, W = {tmap.shape[:2]} but the noise frame has H, W = {(height, width)}"
        )
    tmap = np.ascontiguousarray(tmap, dtype=np.float64)
    check_finite(tmap, what, frame)
    return tmap
