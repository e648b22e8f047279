"""Video input and output: stream RGB frames from a file or folder, write MP4 or GIF.

Video drives the noise: its optical flow (``noisewarp.opticalflow``) gives the backward
maps the warp consumes. Frames are decoded one at a time with PyAV, so a long video never
sits in memory. Inputs: MP4 and the other formats FFmpeg reads, GIF, and folders of PNG or
JPEG frames (sorted by name, numbers compared as numbers: ``f2.png`` before ``f10.png``).

PyAV is an optional dependency: ``pip install -e ".[video]"``.

>>> from noisewarp.video import output_size
>>> output_size(720, 1280, 256)                  # the longer side becomes 256
(144, 256)
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "IMAGE_SUFFIXES",
    "VideoError",
    "VideoReader",
    "open_video",
    "write_video",
    "content_hash",
    "output_size",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
INSTALL_HINT = 'pip install -e ".[video]"'
PathLike = str | os.PathLike


class VideoError(ValueError):
    """A video that cannot be read as asked; ``path`` and ``frame`` say where it failed."""

    def __init__(self, message: str, path: PathLike, frame: int | None = None):
        super().__init__(message)
        self.path = str(path)
        self.frame = frame


def require(module: str):
    """Import an optional dependency of the video extra, with an install hint if missing."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{module!r} is needed for video input and optical flow; install the video "
            f"extra: {INSTALL_HINT}"
        ) from error


def output_size(height: int, width: int, size: int | tuple[int, int] | None) -> tuple[int, int]:
    """The frame size after resizing: ``size`` is the longer side (aspect kept) or (H, W).

    Parameters
    ----------
    height, width : int
        The source size.
    size : int, (int, int) or None
        None keeps the source size.

    Returns
    -------
    (int, int)
        (height, width), each at least 1.
    """
    if size is None:
        return int(height), int(width)
    if isinstance(size, (tuple, list)):
        if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
            raise ValueError(f"size must be an int or a (height, width) pair of ints >= 1, {size}")
        return int(size[0]), int(size[1])
    if isinstance(size, bool) or int(size) != size or size < 1:
        raise ValueError(f"size must be an int >= 1 (the longer side), got {size!r}")
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def content_hash(path: PathLike, chunk: int = 1 << 20, files=None) -> str:
    """SHA-256 of a video's bytes (streamed), or of a frame folder's names and bytes
    (``files``: the folder's files to hash, its frames by default).

    Used in cache keys and run identities: the same content under another name matches,
    an edited file does not.
    """
    path = Path(path)
    digest = hashlib.sha256()
    if files is None:
        files = _frame_files(path) if path.is_dir() else [_existing(path)]
    for file in files:
        if path.is_dir():
            digest.update(file.name.encode() + b"\0")
        with open(file, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
    return digest.hexdigest()


def _existing(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"video {str(path)!r} does not exist")
    return path


def _natural_key(name: str):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _frame_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if not files:
        raise VideoError(
            f"frame folder {str(folder)!r} has no {'/'.join(IMAGE_SUFFIXES)} files", folder, 0
        )
    return sorted(files, key=lambda p: _natural_key(p.name))


@dataclass
class VideoReader:
    """A streaming reader: iterate for RGB uint8 frames [H, W, 3], one decoded at a time.

    Made by ``open_video``. ``frame_count`` is the number of frames the iteration yields
    when the container says how many it holds (None otherwise); ``fps`` is the rate of the
    yielded frames (source rate / stride; None for a folder unless given). Each iteration
    decodes from the start again.
    """

    path: Path
    start: int
    stride: int
    frames: int | None
    size: tuple[int, int]
    source_size: tuple[int, int]
    source_frames: int | None
    fps: float | None
    min_frames: int = 2

    @property
    def frame_count(self) -> int | None:
        """Frames the iteration yields, if known in advance."""
        if self.frames is not None:
            return self.frames
        if self.source_frames is None:
            return None
        return max(0, math.ceil((self.source_frames - self.start) / self.stride))

    @property
    def height(self) -> int:
        return self.size[0]

    @property
    def width(self) -> int:
        return self.size[1]

    def content_hash(self) -> str:
        """SHA-256 of the source (see ``content_hash``), computed once."""
        if not hasattr(self, "_hash"):
            self._hash = content_hash(self.path)
        return self._hash

    def __iter__(self) -> Iterator[np.ndarray]:
        yielded = 0
        last_index = -1
        for index, frame in self._decode():
            last_index = index
            if index < self.start or (index - self.start) % self.stride:
                continue
            yield frame
            yielded += 1
            if self.frames is not None and yielded == self.frames:
                return
        self._check_length(yielded, last_index)

    def _check_length(self, yielded: int, last_index: int) -> None:
        wanted = self.frames if self.frames is not None else self.frame_count
        wanted = max(wanted or 0, self.min_frames)
        if yielded >= wanted:
            return
        missing = self.start + self.stride * yielded  # the source frame that was not there
        ask = f"{wanted} frames" if wanted > self.min_frames else f"at least {wanted} frames"
        raise VideoError(
            f"video {str(self.path)!r} ends after {last_index + 1} frames (frame {missing} is "
            f"missing): {ask} were needed from frame {self.start} with stride {self.stride}",
            self.path,
            missing,
        )

    def _decode(self) -> Iterator[tuple[int, np.ndarray]]:
        if self.path.is_dir():
            yield from self._decode_folder()
        else:
            yield from self._decode_file()

    def _rgb(self, frame, index: int, where: Path) -> np.ndarray:
        height, width = self.size
        try:
            out = frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="AREA")
        except Exception as error:  # noqa: BLE001  (FFmpeg's conversion errors vary)
            raise VideoError(
                f"video {str(where)!r}: frame {index} cannot be converted to RGB: {error}",
                where,
                index,
            ) from error
        return out

    def _decode_file(self) -> Iterator[tuple[int, np.ndarray]]:
        av = require("av")
        index = 0
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in container.decode(stream):
                    if (frame.height, frame.width) != self.source_size:
                        raise VideoError(
                            f"video {str(self.path)!r}: frame {index} is {frame.height} x "
                            f"{frame.width}, the video started at {self.source_size[0]} x "
                            f"{self.source_size[1]}",
                            self.path,
                            index,
                        )
                    if index >= self.start and (index - self.start) % self.stride == 0:
                        yield index, self._rgb(frame, index, self.path)
                    else:
                        yield index, None
                    index += 1
        except av.FFmpegError as error:
            raise VideoError(
                f"video {str(self.path)!r} is truncated or corrupt: decoding failed at frame "
                f"{index}: {error}",
                self.path,
                index,
            ) from error

    def _decode_folder(self) -> Iterator[tuple[int, np.ndarray]]:
        for index, file in enumerate(_frame_files(self.path)):
            if index < self.start or (index - self.start) % self.stride:
                yield index, None
                continue
            frame = _read_image(file, index)
            if (frame.height, frame.width) != self.source_size:
                raise VideoError(
                    f"frame folder {str(self.path)!r}: frame {index} ({file.name!r}) is "
                    f"{frame.height} x {frame.width}, the first frame is {self.source_size[0]} "
                    f"x {self.source_size[1]}; all frames must have one size",
                    file,
                    index,
                )
            yield index, self._rgb(frame, index, file)


def _read_image(file: Path, index: int):
    """The one frame of a PNG/JPEG file, as a PyAV VideoFrame."""
    av = require("av")
    try:
        with av.open(str(file)) as container:
            for frame in container.decode(video=0):
                return frame
    except av.FFmpegError as error:
        raise VideoError(
            f"frame {index} ({str(file)!r}) cannot be decoded: {error}", file, index
        ) from error
    raise VideoError(f"frame {index} ({str(file)!r}) holds no image", file, index)


def _probe(path: Path) -> tuple[tuple[int, int], int | None, float | None]:
    """(height, width), frame count (None if unknown) and fps of a video file."""
    av = require("av")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{str(path)!r} has no video stream", path, 0)
            stream = container.streams.video[0]
            count = int(stream.frames) or None
            fps = float(stream.average_rate) if stream.average_rate else None
            if count is None and container.format.name == "gif":
                # GIFs carry no count; demuxing (no decoding) counts the frames cheaply.
                count = sum(1 for packet in container.demux(stream) if packet.size)
            size = (stream.codec_context.height, stream.codec_context.width)
            if min(size) < 1:  # no size in the header: take the first frame's
                frame = next(container.decode(stream), None)
                if frame is None:
                    raise VideoError(f"video {str(path)!r} holds no frames", path, 0)
                size = (frame.height, frame.width)
    except av.FFmpegError as error:
        raise VideoError(
            f"video {str(path)!r} cannot be opened (truncated, corrupt or not a video; "
            f"failed before frame 0): {error}",
            path,
            0,
        ) from error
    return size, count, fps


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def open_video(
    path: PathLike,
    start: int = 0,
    stride: int = 1,
    frames: int | None = None,
    size: int | tuple[int, int] | None = None,
    fps: float | None = None,
    min_frames: int = 2,
) -> VideoReader:
    """Open a video file, GIF or folder of PNG/JPEG frames for streaming.

    Parameters
    ----------
    path : str or PathLike
        MP4 (or any format FFmpeg reads), GIF, or a folder of frames.
    start : int
        Index of the first source frame to yield (earlier ones are decoded and dropped).
    stride : int
        Yield every ``stride``-th source frame from ``start``.
    frames : int, optional
        Number of frames to yield; a video too short for it is an error.
    size : int or (int, int), optional
        Resize (area interpolation): an int is the longer side, aspect kept; a pair is
        (height, width).
    fps : float, optional
        Frame rate of a folder (files have their own; this overrides it).
    min_frames : int
        Fewest frames the iteration must yield when ``frames`` is None (flow needs 2).

    Returns
    -------
    VideoReader
        Iterate it for RGB uint8 frames [H, W, 3].

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    VideoError
        Unreadable, truncated or corrupt input, too few frames, frames of changing size;
        the message names the file and the frame (also as ``.path`` and ``.frame``).
    """
    path = _existing(Path(path))
    start = _check_int("start", start, 0)
    stride = _check_int("stride", stride, 1)
    min_frames = _check_int("min_frames", min_frames, 1)
    if frames is not None:
        frames = _check_int("frames", frames, 1)
    if path.is_dir():
        files = _frame_files(path)
        first = _read_image(files[0], 0)
        source_size, count, source_fps = (first.height, first.width), len(files), None
    else:
        source_size, count, source_fps = _probe(path)
    if fps is not None:
        source_fps = float(fps)
    reader = VideoReader(
        path=path,
        start=start,
        stride=stride,
        frames=frames,
        size=output_size(*source_size, size),
        source_size=source_size,
        source_frames=count,
        fps=None if source_fps is None else source_fps / stride,
        min_frames=min_frames,
    )
    if count is not None:
        available = max(0, math.ceil((count - start) / stride))
        wanted = frames if frames is not None else min_frames
        if available < wanted:
            reader._check_length(available, count - 1)
    return reader


def write_video(path: PathLike, frames: Iterable[np.ndarray], fps: float, crf: int = 23) -> int:
    """Write RGB uint8 frames [H, W, 3] (or grey [H, W]) to MP4 (H.264) or GIF, streaming.

    The format follows the suffix: ``.gif`` writes a GIF (FFmpeg's 256-colour ``rgb8``
    palette: for previews), anything else H.264 in yuv420p with the moov atom first
    (``+faststart``). yuv420p needs even sizes: an odd height or width is padded by
    repeating the last row or column.

    Parameters
    ----------
    path : str or PathLike
    frames : iterable of ndarray
        All of one size; float frames must already be in [0, 255].
    fps : float
    crf : int
        H.264 constant rate factor (lower is better; 23 is FFmpeg's default).

    Returns
    -------
    int
        The number of frames written.
    """
    av = require("av")
    from fractions import Fraction

    path = Path(path)
    gif = path.suffix.lower() == ".gif"
    rate = Fraction(fps).limit_denominator(1001)
    count = 0
    shape = None
    with av.open(str(path), mode="w", options={} if gif else {"movflags": "+faststart"}) as out:
        stream = None
        for frame in frames:
            frame = np.asarray(frame)
            if frame.ndim == 2:
                frame = np.repeat(frame[..., None], 3, axis=2)
            if frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"frame {count} must be [H, W, 3] or [H, W], got {frame.shape}")
            frame = np.clip(frame, 0, 255).astype(np.uint8)
            if shape is None:
                shape = frame.shape
                stream = out.add_stream("gif" if gif else "libx264", rate=rate)
                stream.pix_fmt = "rgb8" if gif else "yuv420p"
                stream.height = shape[0] + (0 if gif else shape[0] % 2)
                stream.width = shape[1] + (0 if gif else shape[1] % 2)
                if not gif:
                    stream.options = {"crf": str(crf)}
            elif frame.shape != shape:
                raise ValueError(
                    f"{str(path)!r}: frame {count} is {frame.shape}, the first was {shape}"
                )
            if not gif and (shape[0] % 2 or shape[1] % 2):
                frame = np.pad(frame, ((0, shape[0] % 2), (0, shape[1] % 2), (0, 0)), "edge")
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            out.mux(stream.encode(video_frame))
            count += 1
        if stream is None:
            raise ValueError(f"{str(path)!r}: no frames to write")
        out.mux(stream.encode(None))
    return count
