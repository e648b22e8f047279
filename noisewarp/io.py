"""HDF5 noise stacks: written frame by frame, resumable after a crash, readable by xarray.

A stack (docs/outputs.md) is one HDF5 file:

``noise``
    [frame, channel, y, x] float32, one frame per chunk, NaN where not written yet.
``frame``, ``channel``, ``y``, ``x`` (and ``component`` with maps)
    Dimension scales, so ``xarray.open_dataset(path, engine="h5netcdf")`` opens the
    file as it is, with dims (frame, channel, y, x).
``time_s`` and one [frame] variable per diagnostics field
    The per-frame table: seconds the warp took and ``Diagnostics.as_dict()`` of the
    step that produced the frame (NaN for frame 0, the initial noise).
``map`` (optional)
    [frame, y, x, component] float32: the backward map T of the step that produced
    each frame, (row, col) pixel units.
Attributes
    ``format``, ``method``, ``seed``, ``noisewarp_version``, ``config`` (the full
    resolved config as YAML), ``identity`` (JSON of everything the frames depend on),
    ``frames_written`` and ``complete`` (0 or 1, set last).

Crash safety. All file space is allocated when the file is created (HDF5's early
allocation), so writing a frame changes no metadata: the frame's bytes go to their
final place, the file is flushed, and only then is ``frames_written`` bumped in
place and flushed again. A process killed at any moment (SIGKILL included) leaves a
file whose on-disk metadata is the last flushed state, and whose frames
``0 .. frames_written - 1`` are complete. Readers trust only those frames. The
default (earliest) file format is used on purpose: newer superblocks record "open
for writing" and refuse to reopen after a crash until ``h5clear`` is run.

A file that cannot be opened is reported with its path and never deleted or
overwritten unless the caller asks for it (``overwrite=True``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from numba import njit, prange

__all__ = [
    "FORMAT",
    "StackError",
    "StackLockedError",
    "StackMismatchError",
    "StackWriter",
    "as_stored",
    "open_stack",
    "read_frames",
    "stack_attrs",
    "stored_identity",
]

FORMAT = "noisewarp-stack/1"
_SCALES = ("frame", "channel", "y", "x", "component")  # dimension scales
_RESERVED = {*_SCALES, "noise", "map", "time_s"}


class StackError(OSError):
    """A stack file that cannot be opened or is not a noisewarp stack."""


class StackLockedError(StackError):
    """A stack another process holds open for writing (a run in progress)."""


class StackMismatchError(ValueError):
    """An existing stack was written with a different configuration."""


def _open_h5(path: Path, mode: str):
    import h5py

    if mode == "r" and not path.exists():
        raise FileNotFoundError(f"no noise stack at {str(path)!r}")
    try:
        if mode != "w" and path.exists() and not h5py.is_hdf5(path):
            # Checked first: HDF5 2.0 opens an empty file in "r+" mode as a new file.
            raise OSError("no HDF5 signature")
        return h5py.File(path, mode, libver="earliest")
    except OSError as error:
        kind = StackLockedError if _locked(error) else StackError
        raise kind(
            f"cannot open the noise stack {str(path)!r}: {_open_failure(error, mode)} ({error})"
        ) from error


def _locked(error: OSError) -> bool:
    text = str(error).lower()
    return isinstance(error, BlockingIOError) or "unable to lock" in text or "already open" in text


def _open_failure(error: OSError, mode: str = "a") -> str:
    """Why HDF5 could not open a file, and the way out: locked, truncated or not HDF5."""
    text = str(error).lower()
    kept = "The file was left untouched"
    if _locked(error) and mode == "r":
        return (
            "it is locked: a run is writing it (still in progress?) or another process "
            "holds it open for writing; read it once that run has ended"
        )
    if _locked(error):
        return (
            "it is locked, open elsewhere (another run, or a reader in this process). "
            f"{kept}: wait for that run or close that reader, or write to a new path "
            "(output.dir=... or output.stack=...)"
        )
    if isinstance(error, PermissionError) or "permission denied" in text:
        return (
            "this process may not open it for writing (permission denied). "
            f"{kept}: make it writable, or write to a new path (output.dir=... or "
            "output.stack=...)"
        )
    if "truncated file" in text:
        return (
            "it is truncated (shorter than its header says: cut short by a copy or a full "
            f"disk), so none of its frames can be trusted. {kept}: pass output.overwrite=true "
            "to write it again, or move it away"
        )
    return (
        f"it is not a readable HDF5 file (corrupted?). {kept}: move or delete it yourself, "
        "write to a new path (output.dir=... or output.stack=...), or pass "
        "output.overwrite=true to replace it"
    )


def _check_format(handle, path: Path) -> None:
    fmt = handle.attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    missing = [
        what
        for what, present in (
            (f"format {FORMAT!r} (found {fmt!r})", fmt == FORMAT),
            ("the 'noise' dataset", "noise" in handle),
            ("the 'frames_written' attribute", "frames_written" in handle.attrs),
        )
        if not present
    ]
    if missing:
        raise StackError(
            f"{str(path)!r} is an HDF5 file but not a noisewarp stack (it lacks "
            f"{', '.join(missing)}); it was left untouched. Choose another output path or "
            "pass output.overwrite=true to replace it."
        )


def _attr(value):
    return value.decode() if isinstance(value, bytes) else value


def as_stored(identity: Mapping) -> dict:
    """``identity`` as it reads back from a file's JSON attribute (tuples become lists), so
    a run's identity compares equal to the one it stored."""
    return json.loads(json.dumps(dict(identity), sort_keys=True, default=str))


def stored_identity(path: str | Path) -> dict | None:
    """The JSON ``identity`` root attribute of an HDF5 file (a stack, ``metrics.nc``,
    ``diffusion.nc``); None when it has none or cannot be read."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            stored = handle.attrs.get("identity")
    except OSError:
        return None
    return None if stored is None else json.loads(_attr(stored))


def stack_attrs(path: str | Path) -> dict:
    """The root attributes of a stack (``frames_written``, ``complete``, ``config``, ...)."""
    path = Path(path)
    with _open_h5(path, "r") as handle:
        _check_format(handle, path)
        return {key: _attr(value) for key, value in handle.attrs.items()}


def read_frames(path: str | Path, frames: Iterable[int] | slice | None = None) -> np.ndarray:
    """Complete frames of a stack as float32 [T, H, W, C] (the public numpy layout).

    ``frames`` selects frames (default: every complete frame); asking for a frame at
    or past ``frames_written`` raises ``IndexError``.
    """
    path = Path(path)
    with _open_h5(path, "r") as handle:
        _check_format(handle, path)
        written = int(handle.attrs["frames_written"])
        if frames is None:
            frames = slice(0, written)
        indices = range(written)[frames] if isinstance(frames, slice) else list(frames)
        out = np.empty((len(indices), *handle["noise"].shape[2:], handle["noise"].shape[1]), "f4")
        for slot, index in enumerate(indices):
            if not 0 <= index < written:
                raise IndexError(
                    f"frame {index} is not complete in {str(path)!r} ({written} frames written)"
                )
            out[slot] = np.moveaxis(handle["noise"][index], 0, -1)
        return out


def open_stack(path: str | Path, complete_only: bool = True):
    """Open a stack as an ``xarray.Dataset`` (lazy), dims (frame, channel, y, x).

    With ``complete_only`` (default) the frames past ``frames_written`` (not written,
    or cut short by a crash) are dropped. The file itself opens with plain
    ``xarray.open_dataset(path, engine="h5netcdf")`` too; this adds the check and the
    clear error for a damaged file.
    """
    import xarray as xr

    path = Path(path)
    written = int(stack_attrs(path)["frames_written"])
    dataset = xr.open_dataset(path, engine="h5netcdf")
    if complete_only:
        dataset = dataset.isel(frame=slice(0, written))
    return dataset


@njit(parallel=True, cache=True, nogil=True)
def _channels_first(frame, planes):
    """planes[c, i, j] = frame[i, j, c]: the stack's [C, H, W] layout, in parallel (a
    strided numpy copy of a 1024 x 1024 x 4 frame is serial and several ms)."""
    height, width, channels = frame.shape
    for i in prange(height):
        for c in range(channels):
            for j in range(width):
                planes[c, i, j] = frame[i, j, c]


class StackWriter:
    """Create a stack, or reopen one to resume it, and append frames in order.

    Parameters
    ----------
    path : path
        The ``.h5`` file.
    shape : (frames, channels, height, width)
        The full stack, allocated up front.
    identity : mapping
        Everything the frames depend on (method, options, motion, size, seed,
        version). Resuming requires it to match the stored one exactly.
    config_yaml : str
        The full resolved config, stored for the record.
    diagnostics : iterable of str
        Per-frame diagnostics fields known in advance (more are added on first use).
    store_maps : bool
        Allocate the ``map`` variable.
    overwrite : bool
        Replace an existing file (a mismatching or unreadable one included) instead
        of resuming it.
    attrs : mapping
        Extra root attributes (``method``, ``seed``, ...), set at creation.
    """

    def __init__(
        self,
        path: str | Path,
        shape: tuple[int, int, int, int],
        identity: Mapping,
        config_yaml: str = "",
        diagnostics: Iterable[str] = (),
        store_maps: bool = False,
        overwrite: bool = False,
        attrs: Mapping | None = None,
    ) -> None:
        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        self.identity = as_stored(identity)
        self.resumed = False
        self._handles: dict = {}  # datasets by name: a lookup costs more than one write
        self._planes = np.empty(self.shape[1:], dtype=np.float32)  # a frame as [C, H, W]
        if self.path.exists() and not overwrite:
            self._file = _open_h5(self.path, "r+")
            try:
                _check_format(self._file, self.path)
                if store_maps and "map" not in self._file:
                    raise StackMismatchError(
                        f"the noise stack {str(self.path)!r} was written without maps, so "
                        "output.store_maps=true cannot resume it; it was not modified. Pass a "
                        "new output path or output.overwrite=true to write it again with maps."
                    )
                if self._is_shorter_run():
                    self._extend(config_yaml, list(diagnostics), dict(attrs or {}))
                self._check_resumable()
            except Exception:
                self._file.close()
                raise
            self.resumed = True
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = _open_h5(self.path, "w")
            try:
                self._create(config_yaml, list(diagnostics), store_maps, dict(attrs or {}))
            except Exception:
                # A half-made file would block every rerun as "not a stack": remove it.
                self._file.close()
                self.path.unlink(missing_ok=True)
                raise

    # ------------------------------------------------------------------ creation
    def _create(self, config_yaml: str, diagnostics: list, store_maps: bool, attrs: dict) -> None:
        from h5py import h5d, h5p

        frames, channels, height, width = self.shape
        handle = self._file
        handle.attrs["format"] = FORMAT
        handle.attrs["identity"] = json.dumps(self.identity, sort_keys=True)
        handle.attrs["config"] = config_yaml
        for key, value in attrs.items():
            handle.attrs[key] = value
        handle.attrs["frames_written"] = np.int64(0)
        handle.attrs["complete"] = np.int64(0)

        scales = {
            "frame": np.arange(frames, dtype=np.int64),
            "channel": np.arange(channels, dtype=np.int64),
            "y": np.arange(height, dtype=np.int64),
            "x": np.arange(width, dtype=np.int64),
        }
        if store_maps:
            scales["component"] = np.arange(2, dtype=np.int64)
        for name, values in scales.items():
            handle.create_dataset(name, data=values)
            handle[name].make_scale(name)
        handle["y"].attrs["long_name"] = "pixel row (centre at y + 0.5)"
        handle["x"].attrs["long_name"] = "pixel column (centre at x + 0.5)"

        def allocated(name, dims, dtype, chunk):
            # Early allocation: every chunk gets its file space (filled with NaN) now, so
            # writing frames later never touches the file's metadata.
            dcpl = h5p.create(h5p.DATASET_CREATE)
            dcpl.set_alloc_time(h5d.ALLOC_TIME_EARLY)
            shape = tuple(scales[d].size for d in dims)
            dataset = handle.create_dataset(
                name, shape, dtype, chunks=chunk, fillvalue=np.array(np.nan, dtype), dcpl=dcpl
            )
            for axis, dim in enumerate(dims):
                dataset.dims[axis].attach_scale(handle[dim])
            return dataset

        noise = allocated(
            "noise", ("frame", "channel", "y", "x"), "f4", (1, channels, height, width)
        )
        noise.attrs["long_name"] = "warped Gaussian noise, i.i.d. N(0, 1) per element"
        if store_maps:
            tmap = allocated("map", ("frame", "y", "x", "component"), "f4", (1, height, width, 2))
            tmap.attrs["long_name"] = "backward map T of the step into this frame (row, col)"
        timing = self._scalar_variable("time_s")
        timing.attrs["long_name"] = "seconds to warp this frame (JIT compile excluded)"
        for field in diagnostics:
            self._scalar_variable(self._diag_name(field))
        handle.flush()

    def _dataset(self, name: str):
        """The dataset ``name``, its handle kept after the first lookup."""
        if name not in self._handles:
            self._handles[name] = self._file[name]
        return self._handles[name]

    def _scalar_variable(self, name: str):
        """The per-frame variable ``name``, created on first use."""
        if name not in self._handles and name not in self._file:
            dataset = self._file.create_dataset(name, data=np.full(self.shape[0], np.nan))
            dataset.dims[0].attach_scale(self._file["frame"])
        return self._dataset(name)

    @staticmethod
    def _diag_name(field: str) -> str:
        return f"diag_{field}" if field in _RESERVED else field

    # ------------------------------------------------------------------ resuming
    def _is_shorter_run(self) -> bool:
        """Whether the file holds this very run with fewer frames: frame k is a pure
        function of the key and frame k - 1, so its frames are the longer run's."""
        _check_format(self._file, self.path)
        stored = json.loads(_attr(self._file.attrs["identity"]))
        frames = self.identity.get("frames")
        return (
            isinstance(frames, int)
            and isinstance(stored.get("frames"), int)
            and stored["frames"] < frames
            and {**stored, "frames": frames} == self.identity
            and tuple(self._file["noise"].shape[1:]) == self.shape[1:]
        )

    def _extend(self, config_yaml: str, diagnostics: list, attrs: dict) -> None:
        """Copy the shorter stack's written frames and per-frame tables into a new file of
        this run's length, then replace it (a crash on the way leaves the old file)."""
        old, written = self._file, int(self._file.attrs["frames_written"])
        tmp = self.path.with_name(self.path.name + ".extend.tmp")
        self._file = _open_h5(tmp, "w")
        try:
            self._create(config_yaml, diagnostics, "map" in old, attrs)
            for index in range(written):
                self._file["noise"][index] = old["noise"][index]
                if "map" in old:
                    self._file["map"][index] = old["map"][index]
            for name, dataset in old.items():
                if dataset.ndim == 1 and name not in _SCALES and dataset.dims[0].keys():
                    target = self._scalar_variable(name)
                    target[: dataset.shape[0]] = dataset[...]
            self._file.attrs.modify("frames_written", np.int64(written))
            self._file.flush()
        finally:
            self._file.close()
            old.close()
        self._handles.clear()
        tmp.replace(self.path)
        self._file = _open_h5(self.path, "r+")

    def _check_resumable(self) -> None:
        handle = self._file
        _check_format(handle, self.path)
        stored = json.loads(_attr(handle.attrs["identity"]))
        if stored != self.identity:
            keys = sorted(set(stored) | set(self.identity))
            diffs = [
                f"{key}: stored {stored.get(key)!r}, now {self.identity.get(key)!r}"
                for key in keys
                if stored.get(key) != self.identity.get(key)
            ]
            raise StackMismatchError(
                f"the noise stack {str(self.path)!r} was written with a different configuration "
                f"({'; '.join(diffs)}). It was not modified. Pass a new output path "
                "(output.dir=... or output.stack=...) or output.overwrite=true to replace it."
            )
        if tuple(handle["noise"].shape) != self.shape:
            raise StackMismatchError(
                f"the noise stack {str(self.path)!r} has shape {tuple(handle['noise'].shape)}, "
                f"expected {self.shape}; it was not modified"
            )

    # ------------------------------------------------------------------ state
    @property
    def frames_written(self) -> int:
        """Frames 0 .. frames_written - 1 are complete on disk."""
        return int(self._file.attrs["frames_written"])

    @property
    def complete(self) -> bool:
        return bool(self._file.attrs["complete"])

    @property
    def has_maps(self) -> bool:
        return "map" in self._file

    def read(self, index: int) -> np.ndarray:
        """Complete frame ``index`` as float32 [H, W, C]."""
        self._check_index(index)
        return np.ascontiguousarray(np.moveaxis(self._file["noise"][index], 0, -1))

    def read_map(self, index: int) -> np.ndarray | None:
        """The stored map into frame ``index`` (float64 [H, W, 2]), if maps are stored."""
        self._check_index(index)
        if not self.has_maps or index == 0:
            return None
        return self._file["map"][index].astype(np.float64)

    def table(self) -> dict[str, np.ndarray]:
        """The per-frame table (``time_s`` and diagnostics) of the complete frames."""
        written = self.frames_written
        out = {}
        for name, dataset in self._file.items():
            if dataset.ndim == 1 and name not in _SCALES and dataset.shape[0] == self.shape[0]:
                out[name] = dataset[:written]
        return out

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.frames_written:
            raise IndexError(
                f"frame {index} is not complete in {str(self.path)!r} "
                f"({self.frames_written} frames written)"
            )

    # ------------------------------------------------------------------ writing
    def write(
        self,
        index: int,
        frame: np.ndarray,
        time_s: float = math.nan,
        diagnostics: Mapping[str, float] | None = None,
        tmap: np.ndarray | None = None,
    ) -> None:
        """Write frame ``index`` ([H, W, C]); frames must come in order, 0 first."""
        if index != self.frames_written:
            raise ValueError(
                f"frames are written in order: expected frame {self.frames_written}, got {index}"
            )
        if index >= self.shape[0]:
            raise IndexError(f"the stack holds {self.shape[0]} frames; frame {index} does not fit")
        handle = self._file
        frame = np.ascontiguousarray(frame, dtype=np.float32)
        if frame.shape != (self.shape[2], self.shape[3], self.shape[1]):
            raise ValueError(
                f"frame {index} has shape {frame.shape}, the stack holds "
                f"{(self.shape[2], self.shape[3], self.shape[1])} frames [H, W, C]"
            )
        _channels_first(frame, self._planes)
        self._dataset("noise")[index] = self._planes
        if tmap is not None and self.has_maps:
            self._dataset("map")[index] = tmap
        self._dataset("time_s")[index] = time_s
        for field, value in (diagnostics or {}).items():
            self._scalar_variable(self._diag_name(field))[index] = float(value)
        # The frame's bytes are on disk before the counter says so.
        handle.flush()
        handle.attrs.modify("frames_written", np.int64(index + 1))
        handle.flush()

    def finish(self) -> None:
        """Mark the stack complete (the last thing written)."""
        self._file.attrs.modify("complete", np.int64(1))
        self._file.flush()

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> StackWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
