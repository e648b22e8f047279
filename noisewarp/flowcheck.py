"""Known-motion frame pairs for checking optical-flow estimators (tests and benchmarks).

A real photograph (scikit-image's astronaut, grey) is moved by an analytic deformation and
rendered by exact inverse mapping, frame t+1 (p) = frame t (T(p)), with cubic
interpolation; the true backward flow is then T(p) - p exactly, so the end-point error
(EPE) of an estimator can be measured. Needs scikit-image (the video extra).
"""

from __future__ import annotations

import numpy as np

from noisewarp import deform
from noisewarp.flow import flow_from_map
from noisewarp.video import require

__all__ = ["MOTIONS", "MARGIN", "photo", "known_pair", "interior_epe"]

MARGIN = 24  # EPE over the interior: near the border content lacks on one side

# Sub-pixel per-frame motions, as backward maps.
MOTIONS: dict[str, deform.Deformation] = {
    "pan": deform.Translate(rows=1.3, cols=-0.7),
    "zoom": deform.Zoom(factor=1.03),
    "rotate": deform.Rotate(degrees=2.0),
    "all": deform.Compose(
        (
            deform.Translate(rows=-0.6, cols=0.9),
            deform.Zoom(factor=0.98),
            deform.Rotate(degrees=-1.5),
        )
    ),
}


def photo(size: int = 256) -> np.ndarray:
    """scikit-image's astronaut, grey, ``size`` x ``size`` (anti-aliased), in [0, 255]."""
    skimage = require("skimage")
    from skimage import color, data

    grey = color.rgb2gray(data.astronaut())
    return skimage.transform.resize(grey, (size, size), anti_aliasing=True) * 255.0


def known_pair(image: np.ndarray, motion: deform.Deformation):
    """Frames t and t+1 (uint8 grey) and the true backward flow (dx, dy) of ``motion``.

    Frame t+1 is ``image`` sampled at T(p) (cubic, reflected at the border).
    """
    from scipy.ndimage import map_coordinates

    height, width = image.shape
    tmap = motion.map(height, width)
    coords = np.moveaxis(tmap - 0.5, -1, 0)  # pixel centre i + 0.5 is array index i
    second = map_coordinates(image, coords, order=3, mode="reflect")

    def to_uint8(frame):
        return np.clip(np.rint(frame), 0, 255).astype(np.uint8)

    return to_uint8(image), to_uint8(second), flow_from_map(tmap)


def interior_epe(flow: np.ndarray, truth: np.ndarray, margin: int = MARGIN) -> float:
    """Mean end-point error (px) of ``flow`` against ``truth`` away from the border."""
    error = np.linalg.norm(flow - truth, axis=-1)
    return float(error[margin:-margin, margin:-margin].mean())
