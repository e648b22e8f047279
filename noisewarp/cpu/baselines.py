"""Simple noise warps that integral warping improves on (docs/methods.md).

They exist to show what goes wrong without it, behind the same interface as the
real methods:

- ``random``: fresh noise every frame. White, but nothing moves with the video.
- ``fixed``: the same noise every frame. White, but it sticks to the screen.
- ``nearest``: Y_p = x at the pixel containing T(p). Each value is N(0, 1), but
  under contraction or rotation pixels are duplicated or dropped: neighbouring
  targets share values (spatial correlation) and some sources vanish.
- ``bilinear``: bilinear interpolation of x at T(p). A weighted mean of
  independent values has variance sum w^2 < 1 (blur); ``renormalize=True``
  divides by sqrt(sum w^2), which restores the variance of one warp of white noise
  but not the whiteness (neighbours share sources). Warp after warp the sources are
  correlated, the division over-corrects and the variance grows frame after frame.

Positions outside the frame read fresh N(0, 1) noise, a pure function of the
integer cell they fall in (so the continuation of the frame is one fixed
noise field for the whole warp).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from noisewarp.core.rng import fill_normals, mix64, normal
from noisewarp.cpu.diagnostics import Conditional

__all__ = ["random_warp", "fixed_warp", "nearest_warp", "bilinear_warp"]

# Every baseline is linear in the source frame: Y_p = sum_k c_pk x_{q_pk} + (fresh noise),
# so its conditional moments come from the sources and coefficients it records.


@njit(inline="always", cache=True)
def _outside(row, col, channel, offset, gamma):
    """Fresh N(0, 1) of the out-of-frame cell (row, col) (any integers)."""
    key = (np.uint64(row & 0xFFFFFFFF) << np.uint64(32)) | np.uint64(col & 0xFFFFFFFF)
    return normal(offset, gamma, mix64(key) + np.uint64(channel))


@njit(inline="always", cache=True)
def _cell(x, size):
    """floor(x) as an int, clamped to [-1, size] so a far-away point cannot overflow."""
    if x < 0.0:
        return -1
    if x >= size:
        return size
    return np.int64(math.floor(x))


@njit(inline="always", cache=True)
def _value(noise, row, col, channel, offset, gamma):
    height, width = noise.shape[0], noise.shape[1]
    if row >= 0 and row < height and col >= 0 and col < width:
        return np.float64(noise[row, col, channel])
    return _outside(row, col, channel, offset, gamma)


@njit(parallel=True, nogil=True, cache=True)
def _random(offset, gamma, out):
    height, width, channels = out.shape
    for i in prange(height):
        # float32 as ``out``: the same values (fill_normals rounds each once) and
        # the kernels' compiled fill_normals.
        row = np.empty(width * channels, dtype=np.float32)
        fill_normals(offset, gamma, np.uint64(i * width * channels), row)
        flat = out[i].reshape(-1)
        for n in range(flat.size):
            flat[n] = row[n]


@njit(parallel=True, nogil=True, cache=True)
def _nearest(noise, tmap, offset, gamma, out, source):
    """Y_p = x[floor(T(p))]; ``source[p]`` = that flat index, or -1 outside the frame."""
    height, width, channels = noise.shape
    for i in prange(height):
        for j in range(width):
            row = _cell(tmap[i, j, 0], height)
            col = _cell(tmap[i, j, 1], width)
            inside = row >= 0 and row < height and col >= 0 and col < width
            source[i * width + j] = row * width + col if inside else -1
            for c in range(channels):
                out[i, j, c] = _value(noise, row, col, c, offset, gamma)


@njit(parallel=True, nogil=True, cache=True)
def _bilinear(noise, tmap, renormalize, offset, gamma, out, sources, weights):
    """Bilinear interpolation at T(p) - 0.5; ``sources``/``weights`` [H*W, 4] record
    the in-frame neighbours (-1 elsewhere) for the diagnostics."""
    height, width, channels = noise.shape
    for i in prange(height):
        for j in range(width):
            p = i * width + j
            ur = tmap[i, j, 0] - 0.5
            uc = tmap[i, j, 1] - 0.5
            # Far outside the frame every neighbour is fresh noise: take one value.
            if not (ur > -2.0 and ur < height + 1.0 and uc > -2.0 and uc < width + 1.0):
                for k in range(4):
                    sources[p, k] = -1
                    weights[p, k] = 0.0
                for c in range(channels):
                    out[i, j, c] = _outside(_cell(ur, height), _cell(uc, width), c, offset, gamma)
                continue
            fi = math.floor(ur)
            fj = math.floor(uc)
            fr = ur - fi
            fc = uc - fj
            ci = np.int64(fi)
            cj = np.int64(fj)
            norm = 1.0
            if renormalize:
                norm = 1.0 / math.sqrt(((1.0 - fr) ** 2 + fr**2) * ((1.0 - fc) ** 2 + fc**2))
            for k in range(4):
                row = ci + (k >> 1)
                col = cj + (k & 1)
                w = (fr if k >> 1 else 1.0 - fr) * (fc if k & 1 else 1.0 - fc)
                inside = row >= 0 and row < height and col >= 0 and col < width
                sources[p, k] = row * width + col if inside else -1
                weights[p, k] = w
            for c in range(channels):
                acc = 0.0
                for k in range(4):
                    w = weights[p, k]
                    if w != 0.0:
                        acc += w * _value(noise, ci + (k >> 1), cj + (k & 1), c, offset, gamma)
                out[i, j, c] = acc * norm


def _claim_stats(sources: np.ndarray, weights: np.ndarray, npix: int) -> tuple[int, int]:
    """(over-claimed, unclaimed) sources: total weight drawn > 1 (duplicated) and = 0."""
    valid = sources >= 0
    claimed = np.bincount(sources[valid], weights=weights[valid], minlength=npix)
    return int(np.count_nonzero(claimed > 1.0 + 1e-9)), int(np.count_nonzero(claimed == 0.0))


def _stats(fresh: int, overclaimed: int, unclaimed: int) -> dict:
    nan = float("nan")
    return {
        "fresh_pixels": int(fresh),
        "overclaimed_sources": int(overclaimed),
        "unclaimed_sources": int(unclaimed),
        "area_min": nan,
        "area_mean": nan,
        "area_max": nan,
    }


def _linear_conditional(noise, sources, coefficients) -> Conditional:
    """E[Y | X] = sum_k c_pk x_{q_pk} and sum_k c_pk^2 for sources [H*W, K] (-1: none)."""
    height, width, channels = noise.shape
    valid = sources >= 0
    coefficients = np.where(valid, coefficients, 0.0)
    gathered = noise.reshape(-1, channels)[np.where(valid, sources, 0)]  # [H*W, K, C]
    mean = np.einsum("pk,pkc->pc", coefficients, gathered).astype(np.float32)
    carried = (coefficients**2).sum(axis=1).astype(np.float32)
    return Conditional(mean, carried).frame(height, width)


def _result(out, stats, conditional):
    return (out, stats, conditional) if conditional is not None else (out, stats)


def random_warp(noise, stream, conditional=False):
    """Fresh i.i.d. N(0, 1) of ``noise``'s shape from ``stream`` (counter: pixel, channel)."""
    out = np.empty(noise.shape, dtype=np.float32)
    _random(*stream, out)
    height, width = noise.shape[:2]
    cond = None
    if conditional:  # nothing of the source frame is carried
        cond = Conditional(np.zeros_like(out), np.zeros((height, width), dtype=np.float32))
    return _result(out, _stats(height * width, 0, height * width), cond)


def fixed_warp(noise, conditional=False):
    """The input, unchanged (a copy)."""
    cond = None
    if conditional:  # all of it is carried
        cond = Conditional(noise.copy(), np.ones(noise.shape[:2], dtype=np.float32))
    return _result(noise.copy(), _stats(0, 0, 0), cond)


def nearest_warp(noise, tmap, stream, conditional=False):
    """Nearest-neighbour resampling of ``noise`` at the centre map ``tmap``."""
    height, width, _ = noise.shape
    out = np.empty(noise.shape, dtype=np.float32)
    source = np.empty(height * width, dtype=np.int64)
    _nearest(noise, tmap, *stream, out, source)
    over, unclaimed = _claim_stats(source, np.ones(source.size), height * width)
    stats = _stats(int(np.count_nonzero(source < 0)), over, unclaimed)
    cond = None
    if conditional:
        cond = _linear_conditional(noise, source[:, None], np.ones((source.size, 1)))
    return _result(out, stats, cond)


def bilinear_warp(noise, tmap, renormalize, stream, conditional=False):
    """Bilinear resampling of ``noise`` at ``tmap``; ``renormalize`` divides by sqrt(sum w^2)."""
    height, width, _ = noise.shape
    out = np.empty(noise.shape, dtype=np.float32)
    sources = np.empty((height * width, 4), dtype=np.int64)
    weights = np.empty((height * width, 4), dtype=np.float64)
    _bilinear(noise, tmap, bool(renormalize), *stream, out, sources, weights)
    over, unclaimed = _claim_stats(sources.ravel(), weights.ravel(), height * width)
    fresh = int(np.count_nonzero((sources < 0).all(axis=1)))
    cond = None
    if conditional:
        coefficients = weights
        if renormalize:  # all four weights, out-of-frame ones included, as the kernel's norm
            square = (weights**2).sum(axis=1, keepdims=True)
            coefficients = weights / np.sqrt(np.where(square > 0, square, 1.0))
        cond = _linear_conditional(noise, sources, coefficients)
    return _result(out, _stats(fresh, over, unclaimed), cond)
