"""The warping methods, registered by name in ``noisewarp.METHODS``.

Each entry adapts a backend driver to the common kernel signature
``(noise [H, W, C] float32, Geometry, Key, options) -> (frame, stats)``.
"""

from __future__ import annotations

from noisewarp.core.rng import Key, Purpose
from noisewarp.cpu.particle import particle_warp
from noisewarp.cpu.sort import default_chunks
from noisewarp.warp import Geometry, register_method


@register_method(
    "particle",
    "Particle-based integral warping (Deng et al. 2025, Alg. 3): bilinear fuzzy areas, "
    "robust to non-injective maps",
)
def _particle(noise, geometry: Geometry, key: Key, options: dict):
    return particle_warp(
        noise,
        geometry.centres,
        key.stream(Purpose.BRIDGE),
        key.stream(Purpose.FRESH),
        default_chunks(),
    )
