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
