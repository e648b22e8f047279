"""Previews people would rather look at than read: noise frames as images, GIFs, motion.

Noise is shown through the normal CDF, u = Phi(x) in [0, 1] mapped to 0..255, so
white noise fills the grey levels uniformly and any bias or blur is visible. With
three channels or more, channels 0-2 are shown as RGB; otherwise channel 0 as grey.
Previews show a central crop at full resolution (individual noise pixels must stay
visible), enlarged by pixel replication.

The motion panel is a checkerboard painted on frame 0 and carried along the
deformation: the backward maps are composed on a coarse grid,
C_t(p) = C_{t-1}(T_t(p)), and the checkerboard is evaluated at C_t(p); content that
entered the frame after frame 0 is grey. Memory is bounded by the crop and the
coarse grid, whatever the resolution and number of frames.

For a video input, :class:`VideoPreview` writes ``video_preview.mp4`` and ``.gif``: side
by side, the input video, its backward flow (colour wheel: hue the direction, brightness
the speed), the occlusion mask and the whole warped noise frame, at a few hundred pixels
high.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "noise_to_uint8",
    "central_crop",
    "flow_to_rgb",
    "PreviewRecorder",
    "VideoPreview",
    "contact_sheet",
]

_TARGET_PIXELS = 256  # crops are enlarged to about this size
_COARSE = 128  # side of the grid the motion is composed on


def noise_to_uint8(frame: np.ndarray) -> np.ndarray:
    """Noise [H, W, C] (or [H, W]) as uint8 through the normal CDF: RGB [H, W, 3] or grey [H, W]."""
    from scipy.special import ndtr

    frame = np.asarray(frame)
    if frame.ndim == 3:
        frame = frame[..., :3] if frame.shape[2] >= 3 else frame[..., 0]
    # float32 noise through float32 Phi (half the cost; 1/255 levels hide the difference).
    dtype = np.float32 if frame.dtype == np.float32 else np.float64
    values = np.nan_to_num(ndtr(frame.astype(dtype, copy=False)), nan=0.5)
    return np.clip(np.rint(values * dtype(255.0)), 0, 255).astype(np.uint8)


def flow_to_rgb(flow: np.ndarray, scale: float | None = None) -> np.ndarray:
    """A flow [H, W, 2] (dx, dy) on the colour wheel: hue the direction, value the speed
    relative to ``scale`` (default: the 99th percentile of the speed), RGB uint8."""
    dx, dy = flow[..., 0].astype(np.float64), flow[..., 1].astype(np.float64)
    speed = np.hypot(dx, dy)
    if scale is None:
        scale = float(np.percentile(speed, 99)) if speed.size else 1.0
    value = np.clip(speed / max(scale, 1e-6), 0.0, 1.0)
    hue = (np.arctan2(-dy, -dx) / (2 * np.pi)) % 1.0 * 6.0  # the direction content moves
    # Fully saturated HSV to RGB: each channel a clipped tent in the hue's sextant.
    rgb = np.empty((*value.shape, 3))
    np.clip(np.abs(hue - 3.0) - 1.0, 0.0, 1.0, out=rgb[..., 0])
    np.clip(2.0 - np.abs(hue - 2.0), 0.0, 1.0, out=rgb[..., 1])
    np.clip(2.0 - np.abs(hue - 4.0), 0.0, 1.0, out=rgb[..., 2])
    rgb *= value[..., None] * 255.0
    return np.rint(rgb).astype(np.uint8)


def _resize(image: np.ndarray, height: int) -> np.ndarray:
    """Nearest-neighbour resize of [H, W, ...] to ``height`` rows, aspect kept."""
    rows, cols = image.shape[:2]
    width = max(1, round(cols * height / rows))
    r = np.minimum((np.arange(height) + 0.5) * rows / height, rows - 1).astype(np.int64)
    c = np.minimum((np.arange(width) + 0.5) * cols / width, cols - 1).astype(np.int64)
    return image[r][:, c]


def _rgb(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)


class VideoPreview:
    """Input video | flow | occlusion | warped noise, side by side, for a few frames.

    Parameters
    ----------
    frames : int
        Frames in the run; ``max_frames`` of them, evenly spaced, are kept (small panels).
    height : int
        Panel height in pixels.
    """

    def __init__(self, frames: int, max_frames: int = 48, height: int = 180):
        count = max(1, min(max_frames, frames))
        self.kept = set(np.unique(np.rint(np.linspace(0, frames - 1, count))).astype(int))
        self.height = height
        # Kept as JPEG bytes (tens of KB each; the MP4 is lossy anyway): memory stays flat.
        self.tiles: dict[int, bytes] = {}

    def add(self, index: int, frame: np.ndarray, step) -> None:
        """Frame ``index``'s panels; ``step`` a ``noisewarp.motion.Step`` with its image
        (for frame 0, a Step whose image is the first video frame and no flow)."""
        if index not in self.kept or step is None or step.image is None:
            return
        # Subsample first, convert the panel-sized arrays: the conversions cost per pixel.
        image = _rgb(_resize(step.image, self.height))
        blank = np.zeros_like(image)
        flow = blank
        if step.flow is not None:
            flow = flow_to_rgb(_resize(step.flow, self.height))
        occluded = blank
        if step.occlusion is not None:
            mask = _resize(step.occlusion, self.height)
            occluded = _rgb(np.where(mask, 255, 0).astype(np.uint8))
        noise = _rgb(noise_to_uint8(_resize(frame, self.height)))
        gap = np.full((self.height, 4, 3), 255, np.uint8)
        tile = np.concatenate([image, gap, flow, gap, occluded, gap, noise], axis=1)
        self.tiles[index] = _jpeg_bytes(tile)

    def save(self, directory: str | Path, fps: float = 12.0) -> list[Path]:
        """Write ``video_preview.mp4`` and ``video_preview.gif``; return their paths."""
        from noisewarp.video import write_video

        if not self.tiles:
            return []
        written = []
        for name in ("video_preview.mp4", "video_preview.gif"):
            path = Path(directory) / name
            write_video(path, (_from_jpeg(self.tiles[i]) for i in sorted(self.tiles)), fps)
            written.append(path)
        return written


def _jpeg_bytes(image: np.ndarray) -> bytes:
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def _from_jpeg(data: bytes) -> np.ndarray:
    from io import BytesIO

    from PIL import Image

    return np.asarray(Image.open(BytesIO(data)).convert("RGB"))


def central_crop(height: int, width: int, size: int) -> tuple[slice, slice]:
    """Row and column slices of the central ``size`` x ``size`` crop (smaller frames: all)."""
    rows, cols = min(size, height), min(size, width)
    top, left = (height - rows) // 2, (width - cols) // 2
    return slice(top, top + rows), slice(left, left + cols)


def _on_grid(field: np.ndarray, rows: np.ndarray, cols: np.ndarray, stride: int,
             height: int, width: int) -> np.ndarray:  # fmt: skip
    """Sample ``field`` [h, w, K], given on the coarse grid of pixel centres
    (i stride + 0.5, j stride + 0.5), bilinearly at pixel coordinates (rows, cols); NaN
    outside the height x width frame. Between the last node and the frame's edge the
    nearest node's row or column holds (the grid does not reach the edge)."""
    from noisewarp.flow import bilinear_sample

    inside = (rows >= 0) & (rows <= height) & (cols >= 0) & (cols <= width)
    # Node (i, j) is bilinear_sample's pixel centre (i + 0.5, j + 0.5).
    node_rows = np.clip((np.where(inside, rows, 0.5) - 0.5) / stride, 0, field.shape[0] - 1)
    node_cols = np.clip((np.where(inside, cols, 0.5) - 0.5) / stride, 0, field.shape[1] - 1)
    out = bilinear_sample(field, np.stack([node_rows + 0.5, node_cols + 0.5], -1))
    out[~inside] = np.nan
    return out


class PreviewRecorder:
    """Collect what the previews need, frame by frame, with bounded memory.

    Parameters
    ----------
    height, width : int
        Frame size.
    frames : int
        Frames in the run (to pick evenly spaced GIF frames and the PNG frames).
    size : int
        Side of the central crop shown.
    max_gif_frames : int
        At most this many frames in each GIF.
    """

    def __init__(
        self, height: int, width: int, frames: int, size: int = 128, max_gif_frames: int = 48
    ):
        self.height, self.width = height, width
        self.crop = central_crop(height, width, size)
        crop_side = max(
            self.crop[0].stop - self.crop[0].start, self.crop[1].stop - self.crop[1].start
        )
        self.scale = max(1, _TARGET_PIXELS // crop_side)
        count = max(1, min(max_gif_frames, frames))
        self.gif_frames = set(np.unique(np.rint(np.linspace(0, frames - 1, count))).astype(int))
        self.png_frames = sorted({0, 1, (frames - 1) // 2, frames - 1} & set(range(frames)))
        self.noise: dict[int, np.ndarray] = {}
        self.motion: dict[int, np.ndarray] = {}
        # Coarse grid of pixel centres (every `stride`-th pixel) the motion is composed on.
        self.stride = max(1, -(-max(height, width) // _COARSE))
        rows = np.arange(0, height, self.stride) + 0.5
        cols = np.arange(0, width, self.stride) + 0.5
        grid = np.empty((rows.size, cols.size, 2))
        grid[..., 0], grid[..., 1] = rows[:, None], cols[None, :]
        self._grid = grid
        self._composed = grid.copy()  # C_0 = identity
        self._cell = max(4.0, crop_side / 8.0)

    def add(self, index: int, frame: np.ndarray, step=None) -> None:
        """Record frame ``index`` ([H, W, C]); ``step`` is the motion into it: a
        ``noisewarp.motion.Step`` or the backward map [H, W, 2]."""
        if index > 0:
            if step is None:
                raise ValueError("frames after 0 need the map of the step into them")
            tmap = step.geometry.centres if hasattr(step, "geometry") else step
            coarse_map = tmap[:: self.stride, :: self.stride]
            # C_t(g) = C_{t-1}(T_t(g)): sample the previous composition at T_t(g).
            self._composed = _on_grid(self._composed, coarse_map[..., 0], coarse_map[..., 1],
                                      self.stride, self.height, self.width)  # fmt: skip
        if index in self.gif_frames or index in self.png_frames:
            self.noise[index] = noise_to_uint8(frame[self.crop])
            self.motion[index] = self._checkerboard()

    def _checkerboard(self) -> np.ndarray:
        rows = np.arange(self.crop[0].start, self.crop[0].stop) + 0.5
        cols = np.arange(self.crop[1].start, self.crop[1].stop) + 0.5
        grid_rows, grid_cols = np.meshgrid(rows, cols, indexing="ij")
        origin = _on_grid(self._composed, grid_rows, grid_cols, self.stride, self.height,
                          self.width)  # fmt: skip
        tile = (np.floor(origin[..., 0] / self._cell) + np.floor(origin[..., 1] / self._cell)) % 2
        image = np.where(tile > 0, 40, 215).astype(np.uint8)
        image[np.isnan(origin[..., 0])] = 128  # content that entered after frame 0
        return np.repeat(image[..., None], 3, axis=2)

    def _enlarge(self, image: np.ndarray) -> np.ndarray:
        return _rgb(np.repeat(np.repeat(image, self.scale, axis=0), self.scale, axis=1))

    def _side_by_side(self, index: int) -> np.ndarray:
        noise, motion = self._enlarge(self.noise[index]), self._enlarge(self.motion[index])
        gap = np.full((noise.shape[0], 4, 3), 255, np.uint8)
        return np.concatenate([noise, gap, motion], axis=1)

    def save(self, directory: str | Path) -> list[Path]:
        """Write ``frames.png`` (noise over motion at a few frames), ``noise.gif`` and
        ``side_by_side.gif``; return their paths."""
        from PIL import Image

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        shown = [i for i in self.png_frames if i in self.noise]
        if shown:
            tiles = [self._side_by_side(i) for i in shown]
            gap = np.full((8, tiles[0].shape[1], 3), 255, np.uint8)
            sheet = np.concatenate([part for tile in tiles for part in (tile, gap)][:-1], axis=0)
            path = directory / "frames.png"
            Image.fromarray(sheet).save(path)
            written.append(path)
        video = sorted(i for i in self.gif_frames if i in self.noise)
        if video:
            for name, images in (
                ("noise.gif", [self._enlarge(self.noise[i]) for i in video]),
                ("side_by_side.gif", [self._side_by_side(i) for i in video]),
            ):
                pictures = [Image.fromarray(image) for image in images]
                path = directory / name
                pictures[0].save(
                    path, save_all=True, append_images=pictures[1:], duration=100, loop=0
                )
                written.append(path)
        return written


def _fit(draw, text: str, width: float) -> str:
    """``text``, shortened in the middle (``a...z``) to fit ``width`` pixels: both ends of a
    label (method and option, clip and sample) stay readable."""
    if draw.textlength(text) <= width:
        return text
    keep = len(text)
    while (
        keep > 2
        and draw.textlength(text[: keep // 2] + "..." + text[-(keep - keep // 2) :]) > width
    ):
        keep -= 1
    return text[: keep // 2] + "..." + text[-(keep - keep // 2) :]


def contact_sheet(dataset, path: str | Path, scale: int = 2) -> Path | None:
    """A sweep's noise side by side: one column per method, one row per sample frame
    (first, second, last) of each other setting; from a collected Dataset's
    ``sample_noise`` (its ``samples`` group). Returns the path written, or None when there
    are no samples."""
    from PIL import Image, ImageDraw

    if "sample_noise" not in dataset or "warp_method" not in dataset["sample_noise"].dims:
        return None
    samples = dataset["sample_noise"]
    pixel_dims = ("channel", "sample_y", "sample_x")
    others = [d for d in samples.dims if d not in ("warp_method", "sample", *pixel_dims)]
    rows = samples.stack(row=[*others, "sample"]).transpose("row", "warp_method", *pixel_dims)
    values = rows.values  # [rows, methods, C, y, x]
    side_y, side_x = values.shape[-2] * scale, values.shape[-1] * scale
    gap, header = 4, 16
    methods = [str(m) for m in rows["warp_method"].values]
    names = [" ".join(str(n) for n in (k if isinstance(k, tuple) else (k,))) for k in
             rows["row"].values]  # fmt: skip
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label = 8 + int(max(measure.textlength(name) for name in names))  # the whole row label
    sheet = Image.new(
        "RGB",
        (label + len(methods) * (side_x + gap), header + values.shape[0] * (side_y + gap)),
        "white",
    )
    draw = ImageDraw.Draw(sheet)
    for column, method in enumerate(methods):
        text = _fit(draw, method, side_x + gap)
        draw.text((label + column * (side_x + gap), 2), text, fill="black")
    for row, name in enumerate(names):
        top = header + row * (side_y + gap)
        draw.text((2, top + side_y // 2 - 6), name, fill="black")
        for column in range(len(methods)):
            crop = values[row, column]
            if not np.isfinite(crop).any():  # this run is missing or failed
                continue
            tile = noise_to_uint8(np.moveaxis(crop, 0, -1))
            tile = np.repeat(np.repeat(tile, scale, axis=0), scale, axis=1)
            sheet.paste(Image.fromarray(tile), (label + column * (side_x + gap), top))
    path = Path(path)
    sheet.save(path)
    return path
