"""noisewarp: infinite-resolution integral noise warping for video diffusion.

Implements Deng et al., "Infinite-Resolution Integral Noise Warping for
Diffusion Models" (ICLR 2025): warped Gaussian noise that follows a video's
motion while every frame stays exactly i.i.d. N(0, 1).

>>> import noisewarp as nw
>>> noise = nw.initial_noise(32, 32, 4, seed=0)
>>> nw.warp(noise, nw.deform.Translate(cols=0.5).map(32, 32), key=nw.Key(0, 1)).shape
(32, 32, 4)
"""

from importlib.metadata import PackageNotFoundError, version

from noisewarp import deform, flow, metrics  # noqa: F401
from noisewarp import methods as _methods  # noqa: F401  (registers the methods)
from noisewarp.core.rng import Key, Purpose
from noisewarp.warp import (
    METHODS,
    Conditional,
    ConditionalSums,
    Diagnostics,
    Geometry,
    NoiseWarper,
    initial_noise,
    resolve_backend,
    warp,
)

try:
    __version__ = version("noisewarp")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

__all__ = [
    "Key",
    "Purpose",
    "METHODS",
    "Conditional",
    "ConditionalSums",
    "Diagnostics",
    "Geometry",
    "NoiseWarper",
    "initial_noise",
    "resolve_backend",
    "warp",
    "deform",
    "flow",
    "metrics",
    "__version__",
]
