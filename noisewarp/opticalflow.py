"""Optical flow from video, offline on the CPU, and its conversion to noise-resolution maps.

Estimators (one entry point, ``estimate``): OpenCV DIS (default, ``preset`` ultrafast, fast
or medium), OpenCV Farneback, scikit-image TV-L1, and torchvision RAFT from a local weights
file (never downloaded). Flows follow the OpenCV/RAFT convention of ``noisewarp.flow``:
float32 [H, W, 2], (dx, dy) = (col, row) pixels at the pixel centres. ``estimate`` returns
the *backward* flow b (frame t+1 to frame t, so T(p) = p + b(p)), computed directly, not by
inverting a forward flow.

Occlusion: forward-backward consistency (Sundaram et al. 2010). A pixel p of frame t+1 is
consistent when, with q = p + b(p) and f~ = f(q) (bilinear),
``|b + f~|^2 < alpha (|b|^2 + |f~|^2) + beta`` (alpha = 0.01, beta = 0.5 px^2); it is
flagged otherwise, and when q falls outside frame t.

Noise lives at a coarser grid than the video (latent diffusion: 1/8). ``flow_to_noise_map``
averages the flow over each noise pixel's footprint (area weights, any factor) and returns
the backward map T at noise resolution in (row, col) order; ``blend_fresh`` mixes in fresh
noise at strength gamma while keeping N(0, 1).

Estimated flows are cached in HDF5 (``FlowCache``), keyed by the video's SHA-256, the
estimator, its resolved settings, the library version, the frame size, start and stride.

OpenCV, scikit-image (and torch/torchvision for RAFT) are optional: ``pip install -e
".[video]"``.

>>> import numpy as np
>>> flow = np.zeros((16, 24, 2)); flow[..., 0] = 8.0      # content came from 8 px to the right
>>> tmap = flow_to_noise_map(flow, 2, 3)                  # 1/8 resolution
>>> tmap[0, 0].tolist()                                   # centre (0.5, 0.5) + 1 noise px in col
[0.5, 1.5]
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from noisewarp.core.rng import Key, Purpose, normals
from noisewarp.flow import _flow_rc, bilinear_sample, identity_map
from noisewarp.video import VideoReader, content_hash, output_size, require

__all__ = [
    "METHODS",
    "DIS_PRESETS",
    "FlowStep",
    "FlowCacheError",
    "FlowCache",
    "estimate",
    "forward",
    "resolve_settings",
    "occlusion_mask",
    "video_flows",
    "noise_size",
    "flow_to_noise_map",
    "blend_fresh",
]

PathLike = str | os.PathLike
DIS_PRESETS = ("ultrafast", "fast", "medium")

# Each estimator's settings and their defaults; ``estimate`` rejects any other name.
_DEFAULTS: dict[str, dict] = {
    "dis": {"preset": "medium"},
    "farneback": {
        "pyr_scale": 0.5,
        "levels": 5,
        "winsize": 15,
        "iterations": 3,
        "poly_n": 5,
        "poly_sigma": 1.2,
    },
    "tvl1": {
        "attachment": 15.0,
        "tightness": 0.3,
        "num_warp": 5,
        "num_iter": 10,
        "tol": 1e-4,
        "prefilter": False,
    },
    "raft": {"weights": None, "model": "large", "updates": 12},
}
METHODS = tuple(_DEFAULTS)
# Numeric settings: (type, lower, upper). Integers need lower <= v; floats lower < v < upper.
_LIMITS: dict[str, dict] = {
    "farneback": {
        "pyr_scale": (float, 0.0, 1.0),
        "levels": (int, 0, None),
        "winsize": (int, 1, None),
        "iterations": (int, 1, None),
        "poly_n": (int, 1, None),
        "poly_sigma": (float, 0.0, None),
    },
    "tvl1": {
        "attachment": (float, 0.0, None),
        "tightness": (float, 0.0, None),
        "num_warp": (int, 1, None),
        "num_iter": (int, 1, None),
        "tol": (float, 0.0, None),
    },
    "raft": {"updates": (int, 1, None)},
}


class FlowStep(NamedTuple):
    """One frame step t -> t+1 at video resolution.

    ``backward``: flow from frame t+1 to t, float32 [H, W, 2] (dx, dy);
    ``forward``: flow from frame t to t+1, same layout;
    ``occlusion``: bool [H, W] on frame t+1, True where the backward flow has no consistent
    source in frame t (disoccluded, or from outside the frame).
    """

    backward: np.ndarray
    forward: np.ndarray
    occlusion: np.ndarray


# --------------------------------------------------------------------------- estimators


def resolve_settings(method: str, **settings) -> dict:
    """The full settings of ``method``: its defaults updated by ``settings``, validated.

    Explicit defaults and omitted ones resolve alike, so they share a cache key.
    """
    if method not in _DEFAULTS:
        raise ValueError(f"unknown flow method {method!r}; choose one of {', '.join(METHODS)}")
    unknown = sorted(set(settings) - set(_DEFAULTS[method]))
    if unknown:
        raise ValueError(
            f"unknown setting(s) {', '.join(unknown)} for flow method {method!r}; valid: "
            f"{', '.join(_DEFAULTS[method])}"
        )
    resolved = {**_DEFAULTS[method], **settings}
    for name, (kind, lower, upper) in _LIMITS.get(method, {}).items():
        _check_setting(method, name, resolved[name], kind, lower, upper)
    if method == "tvl1" and not isinstance(resolved["prefilter"], bool):
        raise ValueError(
            f"tvl1 setting prefilter must be true or false, got {resolved['prefilter']!r}"
        )
    if method == "dis" and resolved["preset"] not in DIS_PRESETS:
        raise ValueError(f"DIS preset must be one of {DIS_PRESETS}, got {resolved['preset']!r}")
    if method == "raft":
        if resolved["weights"] is None:
            raise ValueError(
                "RAFT needs a local weights file: weights='path/to/raft.pth' (a torchvision "
                "RAFT state_dict); noisewarp never downloads weights"
            )
        if not Path(resolved["weights"]).is_file():
            raise FileNotFoundError(f"RAFT weights file {str(resolved['weights'])!r} not found")
        if resolved["model"] not in ("large", "small"):
            raise ValueError(f"RAFT model must be 'large' or 'small', got {resolved['model']!r}")
    return resolved


def _check_setting(method: str, name: str, value, kind, lower, upper) -> None:
    """An estimator's numeric setting: the right type and within its bounds."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        ok = number and isinstance(value, int) and value >= lower
        wanted = f"an integer >= {lower}"
    else:
        ok = number and math.isfinite(value) and value > lower and (upper is None or value < upper)
        wanted = f"a number > {lower}" + (f" and < {upper}" if upper is not None else "")
    if not ok:
        raise ValueError(f"{method} setting {name} must be {wanted}, got {value!r}")


def _gray(image: np.ndarray) -> np.ndarray:
    """uint8 grey from RGB uint8 [H, W, 3] (or grey [H, W], passed through)."""
    cv2 = require("cv2")
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def _dis(source, target, s):
    cv2 = require("cv2")
    preset = getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{s['preset'].upper()}")
    return cv2.DISOpticalFlow_create(preset).calc(_gray(source), _gray(target), None)


def _farneback(source, target, s):
    cv2 = require("cv2")
    return cv2.calcOpticalFlowFarneback(
        _gray(source),
        _gray(target),
        None,
        s["pyr_scale"],
        s["levels"],
        s["winsize"],
        s["iterations"],
        s["poly_n"],
        s["poly_sigma"],
        0,
    )


def _tvl1(source, target, s):
    registration = require("skimage.registration")
    rows, cols = registration.optical_flow_tvl1(
        _gray(source).astype(np.float32) / 255.0, _gray(target).astype(np.float32) / 255.0, **s
    )
    return np.stack([cols, rows], axis=-1)


RAFT_MIN_SIDE = 128


@functools.lru_cache(maxsize=2)
def _raft_model(weights: str, model: str, stamp: float):
    """A torchvision RAFT with the local state_dict ``weights`` (``stamp``: file mtime)."""
    torch = require("torch")
    try:
        from torchvision.models import optical_flow
    except Exception as error:  # a torchvision built for another torch fails at import
        raise ImportError(
            f"RAFT needs torchvision matching torch {torch.__version__}: {error}"
        ) from error
    net = (
        optical_flow.raft_large(weights=None)
        if model == "large"
        else optical_flow.raft_small(weights=None)
    )
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return net.eval()


def _raft(source, target, s):
    torch = require("torch")
    net = _raft_model(str(s["weights"]), s["model"], os.path.getmtime(s["weights"]))
    height, width = source.shape[:2]
    # RAFT needs sides that are multiples of 8 and at least 128 (its correlation pyramid).
    pad = ((0, max(-height % 8, RAFT_MIN_SIDE - height)),
           (0, max(-width % 8, RAFT_MIN_SIDE - width)), (0, 0))  # fmt: skip

    def tensor(image):
        image = np.asarray(image, dtype=np.float32)
        image = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
        image = np.pad(image, pad, mode="edge") / 127.5 - 1.0
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]

    with torch.no_grad():
        flows = net(tensor(source), tensor(target), num_flow_updates=int(s["updates"]))
    return flows[-1][0].permute(1, 2, 0).numpy()[:height, :width]


_ESTIMATORS = {"dis": _dis, "farneback": _farneback, "tvl1": _tvl1, "raft": _raft}


def _flow_between(source, target, method: str, settings: dict) -> np.ndarray:
    """Flow on ``source``'s pixels pointing into ``target``: source(x) ~ target(x + flow)."""
    source, target = np.asarray(source), np.asarray(target)
    if source.shape != target.shape or source.ndim not in (2, 3):
        raise ValueError(
            f"frames must be two images of one shape [H, W, 3] or [H, W], got {source.shape} "
            f"and {target.shape}"
        )
    resolved = resolve_settings(method, **settings)
    flow = _ESTIMATORS[method](source, target, resolved)
    return np.ascontiguousarray(flow, dtype=np.float32)


def estimate(
    prev_rgb: np.ndarray, next_rgb: np.ndarray, method: str = "dis", **settings
) -> np.ndarray:
    """Backward optical flow from frame t+1 (``next_rgb``) to frame t (``prev_rgb``).

    Parameters
    ----------
    prev_rgb, next_rgb : ndarray [H, W, 3] uint8 (or [H, W] grey)
        Consecutive frames.
    method : {"dis", "farneback", "tvl1", "raft"}
        The estimator. Settings (defaults in parentheses): dis: preset ("medium");
        farneback: pyr_scale (0.5), levels (5), winsize (15), iterations (3), poly_n (5),
        poly_sigma (1.2); tvl1: attachment (15), tightness (0.3), num_warp (5),
        num_iter (10), tol (1e-4), prefilter (False); raft: weights (a local torchvision
        state_dict file, required), model ("large" or "small"), updates (12).

    Returns
    -------
    ndarray, float32 [H, W, 2]
        b in (dx, dy) order at frame t+1's pixel centres: next(p) ~ prev(p + b(p)).
    """
    return _flow_between(next_rgb, prev_rgb, method, settings)


def forward(
    prev_rgb: np.ndarray, next_rgb: np.ndarray, method: str = "dis", **settings
) -> np.ndarray:
    """Forward optical flow from frame t to frame t+1: prev(q) ~ next(q + f(q)).

    Same parameters and layout as ``estimate``; used for the occlusion mask.
    """
    return _flow_between(prev_rgb, next_rgb, method, settings)


def occlusion_mask(
    forward: np.ndarray,
    backward: np.ndarray,
    frame: str = "next",
    alpha: float = 0.01,
    beta: float = 0.5,
) -> np.ndarray:
    """Forward-backward consistency check: True where a pixel has no consistent partner.

    For ``frame="next"`` (the grid of frame t+1, where the backward map lives) each p is
    followed by b to q = p + b(p), and f~ = f(q) is sampled bilinearly; p is flagged when
    ``|b + f~|^2 >= alpha (|b|^2 + |f~|^2) + beta`` or q lies outside the frame. Flagged
    pixels appeared (disocclusion): they have no source in frame t. ``frame="prev"`` swaps
    the roles (f then b): flags pixels of frame t that disappear.

    Parameters
    ----------
    forward, backward : ndarray [H, W, 2]
        Flows (dx, dy) of one frame step.
    frame : {"next", "prev"}
        The grid of the mask.
    alpha, beta : float
        Relative (unitless) and absolute (px^2) tolerance.

    Returns
    -------
    ndarray, bool [H, W]
    """
    if frame not in ("next", "prev"):
        raise ValueError(f"frame must be 'next' (frame t+1) or 'prev' (frame t), got {frame!r}")
    first, second = (backward, forward) if frame == "next" else (forward, backward)
    first = _flow_rc(first, "xy", "first flow")
    second = _flow_rc(second, "xy", "second flow")
    if first.shape != second.shape or first.ndim != 3:
        raise ValueError(
            f"forward and backward flows must both be [H, W, 2], got {forward.shape} and "
            f"{backward.shape}"
        )
    height, width = first.shape[:2]
    target = identity_map(height, width) + first
    followed = bilinear_sample(second, target)
    mismatch = np.sum((first + followed) ** 2, axis=-1)
    scale = np.sum(first**2, axis=-1) + np.sum(followed**2, axis=-1)
    outside = (
        (target[..., 0] < 0)
        | (target[..., 0] > height)
        | (target[..., 1] < 0)
        | (target[..., 1] > width)
    )
    return (mismatch >= alpha * scale + beta) | outside


# --------------------------------------------------------------------------- cache


def _library_version(method: str) -> str:
    if method in ("dis", "farneback"):
        return "opencv " + require("cv2").__version__
    if method == "tvl1":
        return "scikit-image " + require("skimage").__version__
    return "torch " + require("torch").__version__


def cache_description(reader: VideoReader, method: str, settings: dict) -> dict:
    """What a cached flow depends on: video content, estimator, settings, size, frames."""
    settings = dict(settings)
    if method == "raft":  # the weights' content, not their path
        settings["weights"] = "sha256:" + content_hash(settings["weights"])
    return {
        "video_sha256": reader.content_hash(),
        "method": method,
        "settings": settings,
        "library": _library_version(method),
        "height": reader.height,
        "width": reader.width,
        "start": reader.start,
        "stride": reader.stride,
        "occlusion": {"alpha": 0.01, "beta": 0.5, "frame": "next"},
    }


class FlowCacheError(ValueError):
    """A flow cache whose stored flows cannot be used (NaN or Inf in a step)."""


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class FlowCache:
    """Estimated flows in an HDF5 file, one group per key, read lazily frame by frame.

    Keys are a SHA-256 of the JSON ``cache_description`` (video hash, method, resolved
    settings, library version, size, start, stride), so a changed setting is a new key, never
    a silent reuse. Each group holds ``backward``, ``forward`` [N, H, W, 2] float32 and
    ``occlusion`` [N, H, W] bool, chunked per step, ``count`` steps written (appended in
    order, flushed each step, so an interrupted run keeps what it computed) and ``complete``
    once the whole video is in. ``hits`` and ``misses`` count steps read and estimated.
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(description: dict) -> str:
        """The group name of a description (24 hex digits of its SHA-256)."""
        text = json.dumps(description, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def _h5(self, mode: str):
        import h5py

        return h5py.File(self.path, mode)

    def set_aside_if_not_hdf5(self) -> Path | None:
        """Rename the file to ``<name>.unreadable[.N]`` if it is not HDF5 at all (empty, or
        no signature where this class writes it), so that a new cache can start; return the
        new name, or None if the file is absent or looks like HDF5 (a damaged or locked
        one is left where it is: another job may be writing it)."""
        try:
            with open(self.path, "rb") as handle:
                head = handle.read(len(_HDF5_SIGNATURE))
        except FileNotFoundError:
            return None
        if head == _HDF5_SIGNATURE:
            return None
        target = self.path.with_name(self.path.name + ".unreadable")
        number = 0
        while target.exists():
            number += 1
            target = self.path.with_name(f"{self.path.name}.unreadable.{number}")
        self.path.rename(target)
        return target

    def entries(self) -> dict[str, dict]:
        """Key -> description (with ``count`` and ``complete``) of every cached flow set."""
        if not self.path.exists():
            return {}
        with self._h5("r") as h5:
            return {
                key: {
                    **json.loads(group.attrs["description"]),
                    "count": int(group.attrs["count"]),
                    "complete": bool(group.attrs["complete"]),
                }
                for key, group in h5.items()
            }

    def status(self, key: str) -> tuple[int, bool]:
        """(steps stored, whole video stored) for ``key``; (0, False) if absent."""
        if not self.path.exists():
            return 0, False
        with self._h5("r") as h5:
            if key not in h5:
                return 0, False
            return int(h5[key].attrs["count"]), bool(h5[key].attrs["complete"])

    def get(self, key: str, index: int) -> FlowStep | None:
        """Step ``index`` of ``key``, or None if not stored."""
        if not self.path.exists():
            return None
        with self._h5("r") as h5:
            if key not in h5 or index >= int(h5[key].attrs["count"]):
                return None
            group = h5[key]
            step = self._checked(
                key, index, group["backward"][index], group["forward"][index],
                group["occlusion"][index],
            )  # fmt: skip
        self.hits += 1
        return step

    def steps(self, key: str, count: int) -> Iterator[FlowStep]:
        """Steps 0 .. ``count`` - 1 of ``key`` (all stored), the file open throughout."""
        with self._h5("r") as h5:
            group = h5[key]
            backward, forward, occlusion = group["backward"], group["forward"], group["occlusion"]
            for index in range(count):
                self.hits += 1
                yield self._checked(key, index, backward[index], forward[index], occlusion[index])

    def _checked(self, key: str, index: int, backward, forward, occlusion) -> FlowStep:
        """A stored step, or an error naming the cache if it holds NaN or Inf (estimates
        are finite, so the file was damaged)."""
        if not (np.isfinite(backward).all() and np.isfinite(forward).all()):
            raise FlowCacheError(
                f"flow cache {str(self.path)!r} holds non-finite flow at step {index} of "
                f"entry {key}: the file is damaged; delete it to estimate the flows anew"
            )
        return FlowStep(backward, forward, occlusion)

    def put(self, key: str, index: int, step: FlowStep, description: dict) -> None:
        """Append step ``index`` (the next one, in order) to ``key``."""
        height, width = step.backward.shape[:2]
        with self._h5("a") as h5:
            if key not in h5:
                group = h5.create_group(key)
                group.attrs["description"] = json.dumps(description, sort_keys=True, default=str)
                group.attrs["count"] = 0
                group.attrs["complete"] = False
                for name, tail, dtype in (
                    ("backward", (height, width, 2), np.float32),
                    ("forward", (height, width, 2), np.float32),
                    ("occlusion", (height, width), np.bool_),
                ):
                    group.create_dataset(
                        name, (0, *tail), dtype, maxshape=(None, *tail), chunks=(1, *tail)
                    )
            group = h5[key]
            count = int(group.attrs["count"])
            if index != count:
                # Another job of a sweep stored this step meanwhile (the same flow: same
                # video, estimator and settings), or is ahead: the cache stays append-only.
                return
            for name, value in zip(FlowStep._fields, step, strict=True):
                group[name].resize(count + 1, axis=0)
                group[name][count] = value
            group.attrs["count"] = count + 1
        self.misses += 1

    def mark_complete(self, key: str) -> None:
        """Record that ``key`` holds every step of its video."""
        with self._h5("a") as h5:
            if key in h5:
                h5[key].attrs["complete"] = True


def video_flows(
    reader: VideoReader | Iterable[np.ndarray],
    method: str = "dis",
    cache: FlowCache | PathLike | None = None,
    **settings,
) -> Iterator[FlowStep]:
    """Stream (backward flow, forward flow, occlusion mask) for each step of a video.

    Holds two frames at a time. With a ``cache`` (a ``FlowCache`` or a path), stored steps
    are read instead of estimated, new ones appended; when every needed step is stored the
    video is not decoded at all.

    Parameters
    ----------
    reader : VideoReader or iterable of ndarray
        From ``noisewarp.video.open_video`` (its start, stride, frames and size apply), or
        any iterable of frames (then without a cache: the key needs the video's hash).
    method : str
        See ``estimate``; ``settings`` are its settings.
    cache : FlowCache or path, optional

    Yields
    ------
    FlowStep
        At video resolution, for steps 0 -> 1, 1 -> 2, ...
    """
    resolved = resolve_settings(method, **settings)
    key = description = None
    if cache is not None:
        if not isinstance(reader, VideoReader):
            raise TypeError(
                "a flow cache needs a VideoReader (open_video): its key hashes the file"
            )
        cache = cache if isinstance(cache, FlowCache) else FlowCache(cache)
        description = cache_description(reader, method, resolved)
        key = cache.key(description)
        moved = cache.set_aside_if_not_hdf5()
        if moved is not None:
            warnings.warn(
                f"flow cache {str(cache.path)!r} was not an HDF5 file: kept as "
                f"{str(moved)!r}, a new cache starts",
                RuntimeWarning,
                stacklevel=2,
            )
        try:
            stored, complete = cache.status(key)
        except OSError as error:  # held by another process (a parallel sweep job)
            cache, stored, complete = _drop_cache(cache, error), 0, False
        total = reader.frame_count
        if cache is not None and (complete or (total is not None and stored >= total - 1)):
            yield from cache.steps(key, stored if complete else total - 1)
            return
    previous = None
    for index, frame in enumerate(reader):
        if previous is not None:
            step = None
            if cache is not None:
                try:
                    step = cache.get(key, index - 1)
                except OSError as error:  # held by another process (a parallel sweep job)
                    cache = _drop_cache(cache, error)
            if step is None:
                backward = _flow_between(frame, previous, method, resolved)
                forward_flow = _flow_between(previous, frame, method, resolved)
                step = FlowStep(backward, forward_flow, occlusion_mask(forward_flow, backward))
                if cache is not None:
                    try:
                        cache.put(key, index - 1, step, description)
                    except OSError as error:
                        cache = _drop_cache(cache, error)
            yield step
        previous = frame
    if cache is not None and reader.frames is None:
        try:
            cache.mark_complete(key)
        except OSError as error:
            _drop_cache(cache, error)


def _drop_cache(cache: FlowCache, error: OSError):
    """A cache another process holds (HDF5 locks a file while it is written): warn and go
    on estimating without it; the flows are the same either way."""
    warnings.warn(
        f"flow cache {str(cache.path)!r} is not usable ({error}); estimating without it "
        "(if no other job is writing it, the file is damaged: delete it)",
        RuntimeWarning,
        stacklevel=3,
    )
    return None


# --------------------------------------------------------------------------- noise grid


def noise_size(height: int, width: int, res: int) -> tuple[int, int]:
    """Noise frame size for a video frame: the longer side is ``res``, aspect kept."""
    return output_size(height, width, res)


def _area_weights(size: int, cells: int) -> np.ndarray:
    """[cells, size] weights: the fraction of cell k's footprint that pixel i covers.

    Cell k covers [k s, (k + 1) s) with s = size / cells; rows sum to 1.
    """
    edges = np.arange(cells + 1) * (size / cells)
    pixels = np.arange(size + 1, dtype=np.float64)
    low = np.maximum(edges[:-1, None], pixels[None, :-1])
    high = np.minimum(edges[1:, None], pixels[None, 1:])
    return np.clip(high - low, 0.0, None) * (cells / size)


@functools.lru_cache(maxsize=4)
def _pixel_centres(height: int, width: int) -> np.ndarray:
    """The identity map, built once per size (read-only)."""
    centres = identity_map(height, width)
    centres.setflags(write=False)
    return centres


def _footprint_mean(field: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Area-weighted mean of ``field`` [H, W, K] over each cell of a rows x cols grid.

    The weights are banded (a cell overlaps a few pixels per axis): sparse products cost
    O(H W K) instead of the dense O(H^2 W K); the same size is the field itself.
    """
    from scipy import sparse

    height, width, depth = field.shape
    if (rows, cols) == (height, width):
        return np.array(field, dtype=np.float64)
    along_rows = sparse.csr_matrix(_area_weights(height, rows))
    along_cols = sparse.csr_matrix(_area_weights(width, cols))
    partial = along_rows @ field.reshape(height, width * depth).astype(np.float64)
    partial = partial.reshape(rows, width, depth).transpose(1, 0, 2).reshape(width, -1)
    return (along_cols @ partial).reshape(cols, rows, depth).transpose(1, 0, 2)


def flow_to_noise_map(
    flow: np.ndarray, noise_height: int, noise_width: int, order: str = "xy"
) -> np.ndarray:
    """Backward map T at noise resolution from a backward flow at video resolution.

    The flow is averaged over each noise pixel's footprint (area weights: exact block means
    for integer factors, fractional pixels at the edges otherwise), not point-sampled, then
    scaled to noise pixels (dx by W / noise_width, dy by H / noise_height) and added to the
    noise pixel centres, in (row, col) order.

    Parameters
    ----------
    flow : ndarray [H, W, 2]
        Backward flow (frame t+1 to t) at video resolution.
    noise_height, noise_width : int
        The noise grid (``noise_size`` keeps the aspect).
    order : {"xy", "rc"}
        Component order of ``flow``.

    Returns
    -------
    ndarray, float64 [noise_height, noise_width, 2]
        T in (row, col) noise pixels, as the warp methods take it.
    """
    flow_rc = _flow_rc(flow, order, "backward flow")
    if flow_rc.ndim != 3:
        raise ValueError(f"flow must be one frame [H, W, 2], got shape {flow_rc.shape}")
    height, width = flow_rc.shape[:2]
    for name, value in (("noise_height", noise_height), ("noise_width", noise_width)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    centres = _pixel_centres(int(noise_height), int(noise_width))
    if (noise_height, noise_width) == (height, width):  # no averaging, no scaling
        return np.add(centres, flow_rc)
    mean = _footprint_mean(flow_rc, int(noise_height), int(noise_width))
    mean[..., 0] *= noise_height / height
    mean[..., 1] *= noise_width / width
    mean += centres
    return mean


def blend_fresh(warped: np.ndarray, gamma: float, key: Key | int) -> np.ndarray:
    """Noise-strength blend: sqrt(1 - gamma^2) warped + gamma fresh, still N(0, 1).

    ``fresh`` is drawn from the counter-based stream ``(key, Purpose.BLEND)``, independent
    of the warp's own draws, so the sum of two independent N(0, 1) with squared weights
    summing to 1 is exactly N(0, 1); its correlation with ``warped`` is sqrt(1 - gamma^2).
    gamma = 0 returns the warped noise, gamma = 1 fresh noise.

    Parameters
    ----------
    warped : ndarray [H, W, C]
        i.i.d. N(0, 1) noise (a warped frame).
    gamma : float
        In [0, 1].
    key : Key or int
        The frame's key (seed, frame).

    Returns
    -------
    ndarray, the dtype of ``warped`` (float64 for integer input)
    """
    if not (0.0 <= gamma <= 1.0) or isinstance(gamma, bool):
        raise ValueError(f"gamma must be in [0, 1], got {gamma!r}")
    warped = np.asarray(warped)
    fresh = normals(warped.shape, key, Purpose.BLEND)
    out = math.sqrt(1.0 - gamma * gamma) * warped + gamma * fresh
    dtype = warped.dtype if np.issubdtype(warped.dtype, np.floating) else np.float64
    return out.astype(dtype, copy=False)
