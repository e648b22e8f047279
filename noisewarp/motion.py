"""What moves the noise: motion sources as one streaming protocol (docs/conventions.md).

A motion source yields, step by step (frame t to t+1, t = 0, 1, ...), a :class:`Step`:
the backward map at the noise resolution as a ``Geometry``, plus, where known, the video
frame t+1, its backward flow and its occlusion mask (for previews and the diffusion
stage). Three sources:

- :class:`SyntheticMotion`: an analytic deformation (``noisewarp.deform``), with exact
  corner maps; a stationary one is evaluated once.
- :class:`FlowMotion`: optical flow from files, read lazily one field at a time: a
  memory-mapped ``.npy`` ([H, W, 2] or [T, H, W, 2]), an HDF5 dataset, a ``.flo`` file, or
  a folder of ``.flo``/``.npy`` files (natural order), so a 10,000-frame flow never sits in
  memory. A NaN or Inf is an error naming the file and the frame.
- :class:`VideoMotion`: a video (``noisewarp.video``) whose backward flow is estimated
  offline (``noisewarp.opticalflow``, cached in HDF5) and averaged over each noise pixel's
  footprint: the noise grid is independent of the video's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np

from noisewarp.warp import Geometry

__all__ = [
    "FlowFileError",
    "Step",
    "SyntheticMotion",
    "FlowMotion",
    "VideoMotion",
    "BUNDLED_CLIP",
    "BUNDLED_CLIPS",
    "bundled_clip",
    "open_flows",
]

log = logging.getLogger(__name__)

# The real clips shipped inside the package (noisewarp/data/README.md): a slow shot whose
# background drifts about 0.1 px per frame at 128 px wide (the default motion), and a handheld
# shot moving about 1.1 px per frame (the diffusion stage's default).
_DATA = Path(__file__).resolve().parent / "data"
BUNDLED_CLIPS = {"bigbuckbunny": _DATA / "bigbuckbunny.mp4", "cockatoo": _DATA / "cockatoo.mp4"}
BUNDLED_CLIP = BUNDLED_CLIPS["bigbuckbunny"]


def bundled_clip(name: str | None) -> Path:
    """The bundled clip called ``name`` (None: the default, ``bigbuckbunny``)."""
    if name is None:
        return BUNDLED_CLIP
    if name not in BUNDLED_CLIPS:
        raise ValueError(f"no bundled clip {name!r}; bundled: {', '.join(BUNDLED_CLIPS)}")
    return BUNDLED_CLIPS[name]


class Step(NamedTuple):
    """One step of the motion, frame t to t+1.

    ``geometry``: the backward map at the noise resolution; ``image``: the video's frame
    t+1, RGB uint8 [Hv, Wv, 3]; ``flow``: its backward flow at video resolution, float32
    [Hv, Wv, 2] (dx, dy); ``occlusion``: bool [Hv, Wv], True where frame t+1 has no
    consistent source in frame t. The last three are None where the source has none.
    ``residual``: the largest |T + f(T) - p| in pixels where the map inverts a forward
    flow file, else None.
    """

    geometry: Geometry
    image: np.ndarray | None = None
    flow: np.ndarray | None = None
    occlusion: np.ndarray | None = None
    residual: float | None = None


# ------------------------------------------------------------------------------ synthetic


class SyntheticMotion:
    """An analytic deformation from ``noisewarp.deform`` on an H x W noise grid."""

    max_frames = None

    def __init__(self, deformation, height: int, width: int, label: str, params: Mapping):
        self.name = deformation.name
        self.deformation = deformation
        self.height, self.width = int(height), int(width)
        self.label = label
        self.params = dict(params)

    def identity(self) -> dict:
        return {"name": self.name, "params": self.params}

    def geometry(self, source_frame: int) -> Geometry:
        """The step from frame ``source_frame`` to ``source_frame + 1``."""
        return Geometry.from_input(self.deformation, self.height, self.width, source_frame)

    def steps(self, images: bool = False) -> Iterator[Step]:
        """Steps 0 -> 1, 1 -> 2, ...; a stationary deformation is evaluated once."""
        if not self.deformation.time_varying:
            step = Step(self.geometry(0))
            while True:
                yield step
        frame = 0
        while True:
            yield Step(self.geometry(frame))
            frame += 1


# ---------------------------------------------------------------------------- flow files


class _FlowFields:
    """Flow fields [H, W, 2] from a file or folder, one at a time (``len``, indexing)."""

    def __init__(self, path: Path, dataset: str = "flow"):
        from noisewarp.flow import read_flo

        self.path = path
        self._h5 = None
        suffix = path.suffix.lower()
        if path.is_dir():
            from noisewarp.video import _natural_key

            files = sorted(
                (p for p in path.iterdir() if p.suffix.lower() in (".flo", ".npy")),
                key=lambda p: _natural_key(p.name),
            )
            if not files:
                raise ValueError(f"flow folder {str(path)!r} holds no .flo or .npy files")
            self._files = files
            shapes = [self._file_shape(file, index) for index, file in enumerate(files)]
            for file, shape in zip(files, shapes, strict=True):
                if shape != shapes[0]:  # checked now, not when the run reaches the file
                    raise ValueError(
                        f"flow {str(file)!r} has shape {shape}, but the folder's first field "
                        f"{files[0].name!r} has {shapes[0]}: every field must match"
                    )
            self.shape = (len(files), *shapes[0])
            self.single = False
            return
        self._files = None
        if suffix == ".flo":
            self._fields = read_flo(path)  # one field [H, W, 2]: it repeats
        elif suffix == ".npy":
            try:
                self._fields = np.load(path, mmap_mode="r", allow_pickle=False)
            except ValueError as error:
                raise ValueError(f"{str(path)!r}: not a readable .npy array: {error}") from None
        elif suffix in (".h5", ".hdf5"):
            import h5py

            self._h5 = h5py.File(path, "r")
            if dataset not in self._h5:
                names = ", ".join(self._h5) or "none"
                raise ValueError(
                    f"{str(path)!r} has no dataset {dataset!r} (datasets: {names}); "
                    "choose one with deform.dataset=NAME"
                )
            self._fields = self._h5[dataset]
            if not isinstance(self._fields, h5py.Dataset):
                self._h5.close()
                raise ValueError(
                    f"{str(path)!r}: {dataset!r} is a group, not a dataset; name the flow "
                    "dataset inside it with deform.dataset=GROUP/NAME"
                )
        else:
            raise ValueError(
                f"{str(path)!r}: unsupported flow file extension {path.suffix!r}; supported: "
                ".flo, .npy ([H, W, 2] or [T, H, W, 2]), .h5/.hdf5 (a dataset), or a folder"
            )
        shape = tuple(self._fields.shape)
        if len(shape) == 3:
            self.single = True
            shape = (1, *shape)
        elif len(shape) == 4:
            self.single = False
        else:
            raise ValueError(
                f"flow in {str(path)!r} must be [H, W, 2] or [T, H, W, 2], got shape {shape}"
            )
        if shape[-1] != 2 or shape[1] < 1 or shape[2] < 1 or shape[0] < 1:
            raise ValueError(
                f"flow in {str(path)!r} must be [H, W, 2] or [T, H, W, 2], got shape {shape}"
            )
        self.shape = shape

    def _file_shape(self, file: Path, index: int) -> tuple:
        """A folder file's field shape from its header (a .flo's 12 bytes, a .npy's header),
        with the .flo's length checked against it, without reading the field."""
        from noisewarp.flow import FLO_MAGIC

        if file.suffix.lower() == ".flo":
            with file.open("rb") as handle:
                header = handle.read(12)
            if len(header) == 12 and float(np.frombuffer(header, "<f4", 1)[0]) == FLO_MAGIC:
                width, height = (int(v) for v in np.frombuffer(header, "<i4", 2, 4))
                if width >= 1 and height >= 1 and file.stat().st_size == 12 + 8 * width * height:
                    return (height, width, 2)
            return self._read_file(file, index).shape  # names the problem
        try:
            shape = np.load(file, mmap_mode="r", allow_pickle=False).shape
        except ValueError as error:
            raise ValueError(f"flow {str(file)!r}: not a readable .npy array: {error}") from None
        if len(shape) != 3 or shape[-1] != 2:
            raise ValueError(f"flow {str(file)!r} (frame {index}) must be [H, W, 2], got {shape}")
        return shape

    def _read_file(self, file: Path, index: int) -> np.ndarray:
        from noisewarp.flow import read_flo

        if file.suffix.lower() == ".flo":
            return read_flo(file)
        field = np.load(file, allow_pickle=False)
        if field.ndim != 3 or field.shape[-1] != 2:
            raise ValueError(
                f"flow {str(file)!r} (frame {index}) must be [H, W, 2], got {field.shape}"
            )
        return field

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def files(self) -> list[Path]:
        """The files the fields come from, in order."""
        return self._files if self._files is not None else [self.path]

    def where(self, index: int) -> str:
        """The file (and frame) a field comes from, for messages."""
        if self._files is not None:
            return f"{str(self._files[index])!r}"
        return f"{str(self.path)!r}, frame {index}"

    def __getitem__(self, index: int) -> np.ndarray:
        if self._files is not None:
            try:
                field = self._read_file(self._files[index], index)
            except (OSError, ValueError) as error:  # changed since the folder was opened
                raise FlowFileError(f"{error}; the frames before it are complete") from None
            if field.shape != self.shape[1:]:
                raise FlowFileError(
                    f"flow {str(self._files[index])!r} has shape {field.shape}, but the "
                    f"folder's first field has {self.shape[1:]}: every field must match"
                )
        else:
            field = self._fields[...] if self.single else self._fields[index]
        return np.asarray(field, dtype=np.float64)

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()


def open_flows(path, dataset: str = "flow") -> _FlowFields:
    """Open flow fields for lazy reading (see :class:`FlowMotion`)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"flow file {str(path)!r} does not exist")
    return _FlowFields(path, dataset)


class FlowFileError(ValueError):
    """A flow file that cannot be used where the run reached it (a NaN or Inf field)."""


class FlowMotion:
    """Optical flow from files; one field repeats at every step, a stack of T gives T steps."""

    name = "flow"

    def __init__(self, path, direction: str, order: str, dataset: str = "flow"):
        self.path = Path(path).expanduser().resolve()
        self.direction, self.order, self.dataset = direction, order, dataset
        self.fields = open_flows(self.path, dataset)
        self.height, self.width = (int(n) for n in self.fields.shape[1:3])
        self.max_frames = None if self.fields.single else len(self.fields) + 1
        self.label = f"flow:{self.path.stem}"
        from noisewarp.video import content_hash

        self.sha256 = content_hash(self.path, files=self.fields.files)

    def identity(self) -> dict:
        return {
            "name": self.name,
            "path": str(self.path),
            "sha256": self.sha256,
            "direction": self.direction,
            "order": self.order,
            "dataset": self.dataset,
        }

    def geometry(self, source_frame: int) -> Geometry:
        return self._step(source_frame).geometry

    def _step(self, source_frame: int) -> Step:
        from noisewarp.flow import map_from_backward_flow, map_from_forward_flow

        index = 0 if self.fields.single else source_frame
        field = self.fields[index]
        if not np.isfinite(field).all():
            bad = int(field.size - np.count_nonzero(np.isfinite(field)))
            raise FlowFileError(
                f"flow {self.fields.where(index)} contains {bad} non-finite value(s) "
                f"(NaN or Inf) at step {source_frame} -> {source_frame + 1}; the frames "
                "before it are complete and resumable"
            )
        residual = None
        if self.direction == "forward":
            tmap, residual = map_from_forward_flow(
                field, order=self.order, return_residual=True, frame=source_frame
            )
        else:
            tmap = map_from_backward_flow(field, order=self.order, frame=source_frame)
        geometry = Geometry.from_input(tmap, self.height, self.width, source_frame)
        return Step(geometry, residual=residual)

    def steps(self, images: bool = False) -> Iterator[Step]:
        frame = 0
        while self.max_frames is None or frame < self.max_frames - 1:
            yield self._step(frame)
            frame += 1


# ---------------------------------------------------------------------------------- video


class VideoMotion:
    """A video's estimated backward flow, on a noise grid of its own size.

    Parameters
    ----------
    path : path
        MP4 (any FFmpeg format), GIF or a folder of PNG/JPEG frames.
    res : int, optional
        The noise frame's longer side (aspect kept).
    latent_factor : int, optional
        Instead of ``res``: noise = video size / factor (8 for latent diffusion).
    start, stride, frames, size
        The video frames used (``noisewarp.video.open_video``); ``size`` resizes the video
        before the flow is estimated (longer side).
    estimator : str
        ``noisewarp.opticalflow.METHODS``; ``settings`` are its settings.
    cache : path, optional
        HDF5 flow cache (``noisewarp.opticalflow.FlowCache``).
    """

    name = "video"

    def __init__(self, path, *, res=None, latent_factor=None, start=0, stride=1, frames=None,
                 size=None, estimator="dis", settings=None, cache=None):  # fmt: skip
        from noisewarp.opticalflow import noise_size, resolve_settings
        from noisewarp.video import open_video

        self.path = Path(path).expanduser().resolve()
        self.reader = open_video(self.path, start=start, stride=stride, frames=frames, size=size)
        if size is None and latent_factor is None and res > max(self.reader.size):
            # Noise finer than the video: estimate the flow at the noise size, so every
            # noise pixel has its own flow instead of sharing a video pixel's.
            self.reader = open_video(self.path, start=start, stride=stride, frames=frames, size=res)
        self.estimator = estimator
        self.settings = resolve_settings(estimator, **dict(settings or {}))
        self.cache = Path(cache) if cache else None
        if latent_factor is not None:
            self.height = round(self.reader.height / latent_factor)
            self.width = round(self.reader.width / latent_factor)
            if min(self.height, self.width) < 1:
                raise ValueError(
                    f"latent_factor={latent_factor} leaves no noise pixel across the video's "
                    f"{self.reader.height} x {self.reader.width} frame"
                )
        else:
            self.height, self.width = noise_size(self.reader.height, self.reader.width, res)
        count = self.reader.frame_count
        self.max_frames = count
        self.label = video_label(self.path)

    def identity(self) -> dict:
        reader = self.reader
        return {
            "name": self.name,
            "path": str(self.path),
            "sha256": reader.content_hash(),
            "start": reader.start,
            "stride": reader.stride,
            "frames": reader.frames,
            "video_size": list(reader.size),
            "estimator": self.estimator,
            "settings": self.settings,
        }

    def first_image(self) -> np.ndarray:
        return next(iter(self.reader))

    def _flows(self):
        from noisewarp.opticalflow import FlowCache, video_flows

        cache = None
        if self.cache is not None:
            try:
                self.cache.parent.mkdir(parents=True, exist_ok=True)
                cache = FlowCache(self.cache)
            except OSError as error:  # e.g. a read-only or locked location: estimate anew
                log.warning(
                    "flow cache %s not usable (%s): estimating without it", self.cache, error
                )
        return video_flows(self.reader, self.estimator, cache, **self.settings)

    def steps(self, images: bool = False) -> Iterator[Step]:
        """Steps 0 -> 1, ... (with the video's frame t+1 when ``images``)."""
        from noisewarp.opticalflow import flow_to_noise_map

        frames = iter(self.reader) if images else None
        if frames is not None:
            next(frames)  # frame 0: no step leads to it
        for step in self._flows():
            tmap = flow_to_noise_map(step.backward, self.height, self.width)
            image = next(frames) if frames is not None else None
            yield Step(Geometry.from_input(tmap, self.height, self.width), image,
                       step.backward, step.occlusion)  # fmt: skip


def video_label(path, clip: str | None = None) -> str:
    """A video run's deform label: ``video:<file stem>`` (the bundled ``clip`` for None)."""
    return f"video:{Path(str(path)).stem if path else clip or BUNDLED_CLIP.stem}"


def default_cache(directory: Path) -> Path:
    """Where a run's flows are cached: ``flows.h5`` beside the run directory, so the runs
    of one sweep (siblings) share it; ``NOISEWARP_FLOW_CACHE`` overrides."""
    override = os.environ.get("NOISEWARP_FLOW_CACHE")
    return Path(override) if override else Path(directory).resolve().parent / "flows.h5"
