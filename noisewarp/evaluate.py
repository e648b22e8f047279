"""Methods side by side on one motion: is each frame white, and does the noise move with it?

:func:`compare_methods` warps the same initial noise along the same motion source
(``noisewarp.motion``) with every method and measures, per frame:

- ``passed``: the frame passes the 5-sigma white-noise battery
  (``noisewarp.metrics.white_noise_report``);
- ``temporal_corr``: the correlation of frame t+1 with E[Y | X] under the method's own
  model (the run's temporal metric; trivially 1 for ``fixed``, 0 for ``random``);
- ``moving_corr``: the same correlation under one yardstick model for every method
  (grid's exact areas along the true motion), over the pixels that move by more than
  ``moving`` noise pixels (1 by default): noise stuck to the screen (``fixed``) or drawn afresh
  (``random``) carries little there, integral warping nearly all the map allows;
- ``expected_moving``: what the yardstick's map predicts there (its carried variance's
  square root would be the correlation of an exact integral warp).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["compare_methods"]


def _moving(tmap: np.ndarray, threshold: float) -> np.ndarray:
    from noisewarp.flow import identity_map

    shift = tmap - identity_map(*tmap.shape[:2])
    return np.hypot(shift[..., 0], shift[..., 1]) > threshold


def compare_methods(
    motion,
    methods: Sequence[str],
    frames: int,
    channels: int = 4,
    seed: int = 0,
    yardstick: str = "grid",
    moving: float = 1.0,
):
    """Warp along ``motion`` with each method; return an ``xarray.Dataset`` (method, frame).

    Parameters
    ----------
    motion
        A motion source (``noisewarp.motion``): its ``steps()`` are replayed per method.
    methods : sequence of str
        Names in ``noisewarp.METHODS``.
    frames : int
        Frames per sequence, the initial noise included.
    yardstick : str
        The model every sequence is scored under for ``moving_corr``.
    moving : float
        Displacement (noise pixels) above which a pixel counts as moving.
    """
    import xarray as xr

    from noisewarp.metrics import carried_metrics, temporal_metrics, white_noise_report
    from noisewarp.warp import NoiseWarper, initial_noise

    steps = []
    for step in motion.steps():
        if len(steps) == frames - 1:
            break
        steps.append(step.geometry)
    names = ("passed", "temporal_corr", "moving_corr", "expected_moving", "moving_fraction")
    table = {name: np.full((len(methods), frames), np.nan) for name in names}
    noise0 = initial_noise(motion.height, motion.width, channels, seed)
    for m, method in enumerate(methods):
        warper = NoiseWarper(motion.height, motion.width, channels, method=method,
                             seed=seed, noise=noise0)  # fmt: skip
        prev = noise0
        table["passed"][m, 0] = white_noise_report(prev)["passed"]
        for t, geometry in enumerate(steps, start=1):
            frame = warper.step(geometry, conditional=True)
            own = carried_metrics(frame, warper.conditional)["temporal_corr"]
            table["passed"][m, t] = white_noise_report(frame)["passed"]
            table["temporal_corr"][m, t] = own
            mask = _moving(geometry.centres, moving)
            table["moving_fraction"][m, t] = mask.mean()
            if mask.any():  # else nan: nothing moves in this step
                scored = temporal_metrics(prev, frame, geometry, yardstick, mask=mask)
                table["moving_corr"][m, t] = scored["temporal_corr"]
                table["expected_moving"][m, t] = np.sqrt(scored["expected_carried_variance"])
            prev = frame
    return xr.Dataset(
        {name: (("method", "frame"), values) for name, values in table.items()},
        coords={"method": list(methods), "frame": np.arange(frames)},
        attrs={"yardstick": yardstick, "moving_threshold_px": moving},
    )
