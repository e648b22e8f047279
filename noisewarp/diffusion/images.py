"""The real colour images the built-in model learns from and is scored on.

Training: frames of the bundled clip outside the evaluation window, and scikit-image's
colour photographs (shipped in its wheel; nothing is downloaded). Held out: two other
photographs and the clip's evaluation window (the frames the stage edits by default).
Images are float32 [3, H, W] in [-1, 1], the model's range.
"""

from __future__ import annotations

import numpy as np

from noisewarp.motion import BUNDLED_CLIP

# The clip frames the stage edits by default; the model never trains on them.
EVAL_START, EVAL_FRAMES = 0, 32
# Training frames start a little after the window, so no frame is a near-copy of one in it.
TRAIN_CLIP_START = 40
# The clip's size (longer side) at which the stage runs by default, and the model trains.
DEFAULT_SIZE = 128

TRAIN_PHOTOS = ("astronaut", "chelsea", "immunohistochemistry", "hubble_deep_field",
                "retina", "colorwheel", "stereo_motorcycle")  # fmt: skip
HELD_OUT_PHOTOS = ("coffee", "rocket")
# Photographs are shown at several sizes (longer side), around the clip's scale.
PHOTO_SIZES = (128, 192, 256)


def to_model_range(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] -> float32 [3, H, W] in [-1, 1]."""
    return np.ascontiguousarray(np.moveaxis(image, -1, 0), dtype=np.float32) / 127.5 - 1.0


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float [3, H, W] in [-1, 1] -> uint8 [H, W, 3] (clipped)."""
    scaled = np.clip((np.moveaxis(np.asarray(image), 0, -1) + 1.0) * 127.5, 0, 255)
    return np.rint(scaled).astype(np.uint8)


def _photo(name: str) -> np.ndarray:
    from noisewarp.video import require

    data = require("skimage").data
    image = getattr(data, name)()
    if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity)
        image = image[0]
    return image[..., :3]


def resized(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` at exactly height x width (area interpolation; a no-op at that size)."""
    import cv2

    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def _at_size(image: np.ndarray, longer: int) -> np.ndarray:
    from noisewarp.video import output_size

    return resized(image, *output_size(*image.shape[:2], longer))


def clip_frames(start: int, frames: int | None, size: int = DEFAULT_SIZE) -> list[np.ndarray]:
    """Frames of the bundled clip at ``size`` (longer side), model range."""
    from noisewarp.video import open_video

    reader = open_video(BUNDLED_CLIP, start=start, frames=frames, size=size)
    return [to_model_range(frame) for frame in reader]


def panning_shot(folder, frames: int, speed=(1.0, 0.0), size: int = DEFAULT_SIZE,
                 crop=(270, 480)):  # fmt: skip
    """A camera pan as PNG frames in ``folder``: a ``crop`` (height, width) window of the
    clip's first frame (640 x 360) sliding by ``speed`` (x, y) pixels per frame at ``size``
    (the longer side the stage reads it at), from the top-left corner. The whole frame
    moves, so there is no still background; fractional offsets are resampled bilinearly
    at the clip's size, which the stage's area downscaling (3.75x by default) smooths away.
    """
    import cv2
    from PIL import Image

    from noisewarp.video import open_video

    first = next(iter(open_video(BUNDLED_CLIP, frames=1)))
    height, width = crop
    scale = max(crop) / size  # clip pixels per stage pixel
    reach = ((frames - 1) * abs(speed[0]) * scale, (frames - 1) * abs(speed[1]) * scale)
    if width + reach[0] > first.shape[1] or height + reach[1] > first.shape[0]:
        raise ValueError(
            f"a {width} x {height} window moving {speed} px per frame (at {size}) leaves the "
            f"{first.shape[1]} x {first.shape[0]} frame within {frames} frames"
        )
    folder.mkdir(parents=True, exist_ok=False)
    for k in range(frames):
        # getRectSubPix takes the window's centre; negative speeds start from the far edge.
        x = k * speed[0] * scale + (reach[0] if speed[0] < 0 else 0.0)
        y = k * speed[1] * scale + (reach[1] if speed[1] < 0 else 0.0)
        centre = (x + (width - 1) / 2, y + (height - 1) / 2)
        window = cv2.getRectSubPix(first, (width, height), centre)
        Image.fromarray(window).save(folder / f"{k:03d}.png")
    return folder


def training_images(size: int = DEFAULT_SIZE) -> list[np.ndarray]:
    """The training set: clip frames after the evaluation window, photographs at
    several sizes."""
    images = clip_frames(TRAIN_CLIP_START, None, size)
    for name in TRAIN_PHOTOS:
        photo = _photo(name)
        images += [to_model_range(_at_size(photo, longer)) for longer in PHOTO_SIZES]
    return images


def held_out_images(size: int = DEFAULT_SIZE) -> list[np.ndarray]:
    """Images the model never saw: the clip's evaluation window and two photographs."""
    images = clip_frames(EVAL_START, EVAL_FRAMES, size)
    for name in HELD_OUT_PHOTOS:
        images += [to_model_range(_at_size(_photo(name), longer)) for longer in PHOTO_SIZES]
    return images


def random_crops(images, count: int, size: int, rng: np.random.Generator, flip: bool = True):
    """``count`` random ``size`` x ``size`` crops [count, 3, size, size], each from an image
    drawn uniformly (images smaller than ``size`` are skipped), optionally mirrored."""
    eligible = [image for image in images if min(image.shape[1:]) >= size]
    out = np.empty((count, 3, size, size), np.float32)
    picks = rng.integers(0, len(eligible), count)
    for slot, pick in enumerate(picks):
        image = eligible[pick]
        top = rng.integers(0, image.shape[1] - size + 1)
        left = rng.integers(0, image.shape[2] - size + 1)
        crop = image[:, top : top + size, left : left + size]
        out[slot] = crop[:, :, ::-1] if flip and rng.random() < 0.5 else crop
    return out
