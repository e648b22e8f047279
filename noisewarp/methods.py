"""The warping methods, registered by name in ``noisewarp.METHODS``.

Each entry adapts a backend driver to the common kernel signature
``(noise [H, W, C] float32, Geometry, Key, options, conditional) -> (frame, stats)``, or
``(frame, stats, Conditional)`` when ``conditional`` is true (E[Y | X] of the method's
own model, ``noisewarp.cpu.diagnostics.Conditional``).
"""

from __future__ import annotations

import numpy as np

from noisewarp.core.checks import check_finite
from noisewarp.core.rng import Key, Purpose
from noisewarp.cpu.baselines import bilinear_warp, fixed_warp, nearest_warp, random_warp
from noisewarp.cpu.grid import grid_warp
from noisewarp.cpu.hiwyn import hiwyn_warp
from noisewarp.cpu.particle import particle_warp
from noisewarp.cpu.sort import default_chunks
from noisewarp.warp import Geometry, register_backend, register_method


@register_method(
    "particle",
    "Particle-based integral warping (Deng et al. 2025, Alg. 3): bilinear fuzzy areas, "
    "robust to non-injective maps",
)
def _particle(noise, geometry: Geometry, key: Key, options: dict, conditional: bool = False):
    return particle_warp(
        noise,
        geometry.centres,
        key.stream(Purpose.BRIDGE),
        key.stream(Purpose.FRESH),
        default_chunks(),
        conditional,
    )


_particle.conditional_sums = True  # keeps the temporal metrics' sums without the arrays


@register_backend("particle", "cuda")
def _particle_cuda(noise, geometry: Geometry, key: Key, options: dict, conditional=None, out=None):
    from noisewarp.cuda.particle import particle_warp as particle_warp_cuda

    return particle_warp_cuda(
        noise,
        geometry.centres,
        key.stream(Purpose.BRIDGE),
        key.stream(Purpose.FRESH),
        out,
        conditional,
    )


def _corner_map(geometry: Geometry) -> np.ndarray:
    """T at the pixel corners, finite and float64 (exact, or interpolated from the centres)."""
    corners = np.ascontiguousarray(geometry.corner_map(), dtype=np.float64)
    if geometry.corners is not None:
        check_finite(corners, "corner map")
    return corners


def _exact_corners(geometry: Geometry) -> np.ndarray | None:
    """For a CUDA kernel: the exact corner map when the deformation gives one, else None
    (the device interpolates the corners from the centres)."""
    return None if geometry.corners is None else _corner_map(geometry)


@register_method(
    "grid",
    "Grid-based integral warping (Deng et al. 2025, Alg. 2): exact areas of the mapped "
    "pixel quads, fold-over detected and renormalised",
)
def _grid(noise, geometry: Geometry, key: Key, options: dict, conditional: bool = False):
    return grid_warp(
        noise,
        _corner_map(geometry),
        key.stream(Purpose.BRIDGE),
        key.stream(Purpose.FRESH),
        default_chunks(),
        conditional,
    )


@register_backend("grid", "cuda")
def _grid_cuda(noise, geometry: Geometry, key: Key, options: dict, conditional=None, out=None):
    from noisewarp.cuda.grid import grid_warp as grid_warp_cuda

    return grid_warp_cuda(
        noise,
        geometry.centres,
        _exact_corners(geometry),
        key.stream(Purpose.BRIDGE),
        key.stream(Purpose.FRESH),
        out,
        conditional,
    )


@register_method(
    "hiwyn",
    "How I Warped Your Noise (Chang et al. 2024): n x n conditional upsampling and "
    "sub-pixel rasterisation; cost and memory grow as n^2",
    n=8,
)
def _hiwyn(noise, geometry: Geometry, key: Key, options: dict, conditional: bool = False):
    return hiwyn_warp(
        noise,
        _corner_map(geometry),
        geometry.centres,
        _upsampling(options),
        key.stream(Purpose.SUBPIXEL),
        key.stream(Purpose.FRESH),
        conditional,
    )


def _upsampling(options: dict) -> int:
    """hiwyn's n, checked."""
    n = options["n"]
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"hiwyn: n must be a positive integer (2, 4, 8, ...), got {n!r}")
    return int(n)


_hiwyn.check_options = _upsampling  # run at config time too (``noisewarp.config``)


@register_backend("hiwyn", "cuda")
def _hiwyn_cuda(noise, geometry: Geometry, key: Key, options: dict, conditional=None, out=None):
    from noisewarp.cuda.hiwyn import hiwyn_warp as hiwyn_warp_cuda

    return hiwyn_warp_cuda(
        noise,
        geometry.centres,
        _exact_corners(geometry),
        _upsampling(options),
        key.stream(Purpose.SUBPIXEL),
        key.stream(Purpose.FRESH),
        out,
        conditional,
    )


@register_method("random", "Baseline: fresh noise every frame (no temporal correlation)")
def _random(noise, geometry: Geometry, key: Key, options: dict, conditional: bool = False):
    return random_warp(noise, key.stream(Purpose.BASELINE), conditional)


@register_method("fixed", "Baseline: the same noise every frame (sticks to the screen)")
def _fixed(noise, geometry: Geometry, key: Key, options: dict, conditional: bool = False):
    return fixed_warp(noise, conditional)


@register_method("nearest", "Baseline: nearest-neighbour resampling (duplicates pixels)")
def _nearest(noise, geometry: Geometry, key: Key, options: dict, conditional: bool = False):
    return nearest_warp(noise, geometry.centres, key.stream(Purpose.BASELINE), conditional)


@register_method(
    "bilinear",
    "Baseline: bilinear resampling (blurs; renormalize divides by sqrt(sum w^2))",
    renormalize=True,
)
def _bilinear(noise, geometry: Geometry, key: Key, options: dict, conditional: bool = False):
    return bilinear_warp(
        noise,
        geometry.centres,
        bool(options["renormalize"]),
        key.stream(Purpose.BASELINE),
        conditional,
    )
