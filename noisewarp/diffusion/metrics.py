"""The paper's evaluation of generated video (DESIGN section 11), per frame, in numpy.

Frames are float [H, W, 3] in [0, 1]; ``tmap`` is the backward map of the step t -> t+1 at
the frames' resolution ((row, col), pixel centres at i + 0.5, as the warps take it) and
``occluded`` is True where frame t+1 has no source in frame t.
"""

from __future__ import annotations

import cv2
import numpy as np

from noisewarp.opticalflow import _pixel_centres

# Detail = frame minus its Gaussian blur of this sigma (pixels): the texture the noise
# decides, as opposed to the content the input (or the prompt) decides.
DETAIL_SIGMA = 1.0
# A pixel "moves" when the map displaces it by more than this (pixels per frame). At the
# default 128 x 72 the bundled clip's background drifts by about 0.1 px per frame and its
# moving figure by 0.25-1 px (10-17% of the pixels).
MOVING = 0.25


# diffusion.nc's per-frame variables: (long_name, units) (docs/outputs.md).
VARIABLES = {
    "warping_error": ("mean squared difference of frame t warped by the flow and frame t+1, "
                      "occlusions masked (colours in [0, 1])", "1"),
    "warping_error_moving": ("warping_error over the pixels the flow moves by > 0.25 px", "1"),
    "input_warping_error": ("warping_error of the input video (the flow's floor)", "1"),
    "texture_sticking": ("correlation of consecutive frames' detail at the same pixel minus "
                         "along the motion, moving pixels (> 0: sticks to the screen)", "1"),
    "detail_energy": ("mean squared fine detail (frame minus its Gaussian blur, grey)", "1"),
    "quality": ("output's detail energy over the input frame's", "1"),
    "ssim": ("structural similarity of output and input at half size", "1"),
    "denoiser_ratio": ("denoiser's noise-prediction error on the start over that on a "
                       "white-noise start (same frame and level); > 1: structure in the noise",
                       "1"),
    "denoiser_ratio_moving": ("denoiser_ratio over the pixels the flow moves by > 0.25 px", "1"),
    "time_s": ("seconds of the frame's model work: encoding, sampling, the denoiser_ratio "
               "reference call, decoding (and warping the per-step noise when eta > 0)", "s"),
    "step_s": ("seconds for the frame end to end (sampling, metrics, PNG)", "s"),
    "rss_mb": ("process resident memory after the frame", "MiB"),
}  # fmt: skip


def warp_previous(frame: np.ndarray, tmap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame t resampled (bilinear) at T(p) for every pixel p of frame t+1, and where T(p)
    falls inside frame t."""
    rows = (tmap[..., 0] - 0.5).astype(np.float32)
    cols = (tmap[..., 1] - 0.5).astype(np.float32)
    warped = cv2.remap(np.asarray(frame, np.float32), cols, rows, cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    height, width = frame.shape[:2]
    inside = (rows >= 0) & (rows <= height - 1) & (cols >= 0) & (cols <= width - 1)
    return warped, inside


def valid_mask(tmap: np.ndarray, occluded: np.ndarray | None) -> np.ndarray:
    """Pixels of frame t+1 with a source in frame t: inside it and not occluded."""
    _, inside = warp_previous(np.zeros(tmap.shape[:2], np.float32), tmap)
    return inside if occluded is None else inside & ~occluded


def moving_mask(tmap: np.ndarray, threshold: float = MOVING) -> np.ndarray:
    """Pixels the map displaces by more than ``threshold`` pixels."""
    displacement = np.hypot(*np.moveaxis(tmap - _pixel_centres(*tmap.shape[:2]), -1, 0))
    return displacement > threshold


def warping_error(prev, next_, tmap, occluded=None, moving_only: bool = False) -> float:
    """Mean squared difference between frame t warped by the flow and frame t+1, over the
    pixels with a source (occlusions masked), averaged over channels; with
    ``moving_only``, over the moving pixels only (``MOVING``)."""
    warped, _ = warp_previous(prev, tmap)
    mask = valid_mask(tmap, occluded)
    if moving_only:
        mask &= moving_mask(tmap)
    return float(np.mean((warped - next_)[mask] ** 2)) if mask.any() else float("nan")


def detail(frame: np.ndarray) -> np.ndarray:
    """The frame's fine texture, grey: the frame minus its Gaussian blur."""
    grey = np.asarray(frame, np.float32).mean(axis=-1)
    return grey - cv2.GaussianBlur(grey, (0, 0), DETAIL_SIGMA)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    scale = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / scale) if scale > 0 else float("nan")


def texture_sticking(prev: np.ndarray, next_: np.ndarray, tmap, occluded=None) -> float:
    """How much the texture stays on the screen instead of moving with the content: the
    correlation of consecutive frames' detail at the same pixel minus the correlation
    along the motion, over moving pixels with a source. Positive: sticks (fixed noise);
    negative: moves with the video."""
    mask = valid_mask(tmap, occluded) & moving_mask(tmap)
    if mask.sum() < 16:
        return float("nan")
    before, after = detail(prev), detail(next_)
    moved, _ = warp_previous(before, tmap)
    return _correlation(before[mask], after[mask]) - _correlation(moved[mask], after[mask])


def detail_energy(frame: np.ndarray) -> float:
    """Mean squared detail: the fine texture's energy (the quality figure's numerator)."""
    return float(np.mean(detail(frame) ** 2))


def structural_similarity(a: np.ndarray, b: np.ndarray, scale: int = 2) -> float:
    """SSIM of two RGB frames after an area reduction by ``scale`` (content, not texture)."""
    from skimage.metrics import structural_similarity as ssim

    size = (max(7, a.shape[1] // scale), max(7, a.shape[0] // scale))
    small_a, small_b = (cv2.resize(np.asarray(x, np.float32), size, interpolation=cv2.INTER_AREA)
                        for x in (a, b))  # fmt: skip
    return float(ssim(small_a, small_b, channel_axis=-1, data_range=1.0))


def denoiser_ratio(error: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None):
    """The denoiser's noise-prediction error on the run's start over that on a white-noise
    start (same frame and level), both [h, w]: 1 when the model takes the noise for noise,
    above 1 when it reads structure in it (duplicated pixels, blur, a wrong variance).
    ``mask`` (any size, e.g. the moving pixels at the image size) restricts it to the
    cells at least half covered."""
    if mask is not None:
        height, width = error.shape
        cover = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
        keep = cover >= 0.5
        if keep.sum() < 16:
            return float("nan")
        error, reference = error[keep], reference[keep]
    return float(np.mean(error) / np.mean(reference))


def occlusion_at(occluded: np.ndarray, height: int, width: int) -> np.ndarray:
    """A video-resolution occlusion mask on another grid: a pixel is occluded when any
    part of its footprint is."""
    fraction = cv2.resize(
        occluded.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA
    )
    return fraction > 0
