"""One experiment from a resolved config: warp a noise video, write stack, metrics, previews.

``run.py`` (Hydra) is a thin wrapper around :func:`run`; tests call :func:`run`
directly with a config composed by Hydra's compose API. DESIGN sections 7-9.

A run, given ``cfg`` (see ``conf/config.yaml``):

1. validates the whole config first (:func:`build_spec`), with errors that list the
   valid choices;
2. compiles the kernels on a tiny frame (so per-frame times exclude the JIT);
3. opens the HDF5 stack (``noisewarp.io.StackWriter``): a new one, or an existing one
   written with the same configuration, which is resumed after its last complete
   frame (frame ``k`` is a pure function of the seed and frame ``k - 1``, so the
   result is bit-identical to an uninterrupted run);
4. warps frame by frame, streaming: each frame is written, measured and dropped,
   so memory stays flat however many frames there are;
5. writes ``metrics.nc`` (per-frame metrics, timing and memory, plus a few sample
   crops), previews and ``summary.txt``, and prints the summary table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "ConfigError",
    "RunSpec",
    "build_spec",
    "run",
    "write_status",
    "in_multirun",
    "method_label",
    "deform_label",
]

log = logging.getLogger(__name__)

SAMPLE_SIZE = 64  # side of the sample crops stored in metrics.nc
SAMPLE_NAMES = ("first", "second", "last")  # frames 0, 1 and the last one
_BACKENDS = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """The config asks for something that does not exist or is out of range."""


# ------------------------------------------------------------------------------ motion


class SyntheticMotion:
    """An analytic deformation from ``noisewarp.deform`` (exact corners for grid/hiwyn)."""

    def __init__(self, name: str, params: Mapping, height: int, width: int):
        from noisewarp.deform import get_deformation

        self.name = name
        self.params = dict(params)
        try:
            self.deformation = get_deformation(name, **self.params)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"deform={name}: {error}") from None
        self.height, self.width = height, width
        self.max_frames = None
        self.label = deform_label(name, self.params)
        self._stationary = None

    def identity(self) -> dict:
        return {"name": self.name, "params": self.params}

    def geometry(self, source_frame: int):
        """The step from frame ``source_frame`` to ``source_frame + 1`` (a stationary
        deformation is evaluated once and its arrays shared by every step)."""
        from noisewarp.warp import Geometry

        if self.deformation.time_varying or self._stationary is None:
            geometry = Geometry.from_input(self.deformation, self.height, self.width, source_frame)
            if self.deformation.time_varying:
                return geometry
            self._stationary = geometry
        return self._stationary


class FlowMotion:
    """Optical flow read from a file (``noisewarp.flow.load_flow``): [H, W, 2] or [T, H, W, 2].

    A single flow field is applied at every step; a stack of T fields gives T steps.
    """

    def __init__(self, path: str, direction: str, order: str):
        from noisewarp.flow import load_flow

        self.name = "flow"
        self.path = Path(path).expanduser().resolve()
        self.direction, self.order = direction, order
        try:
            flow = load_flow(self.path)
        except (OSError, ValueError) as error:
            raise ConfigError(f"deform=flow: {error}") from None
        self.flow = flow[None] if flow.ndim == 3 else flow
        self.height, self.width = (int(n) for n in self.flow.shape[1:3])
        self.max_frames = None if self.flow.shape[0] == 1 else self.flow.shape[0] + 1
        self.label = f"flow:{self.path.stem}"
        digest = hashlib.sha256()
        with open(self.path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        self.sha256 = digest.hexdigest()

    def identity(self) -> dict:
        return {
            "name": self.name,
            "path": str(self.path),
            "sha256": self.sha256,
            "direction": self.direction,
            "order": self.order,
        }

    def geometry(self, source_frame: int):
        from noisewarp.flow import map_from_flow
        from noisewarp.warp import Geometry

        field = self.flow[source_frame if self.flow.shape[0] > 1 else 0]
        tmap = map_from_flow(field, direction=self.direction, order=self.order, frame=source_frame)
        return Geometry.from_input(tmap, self.height, self.width, source_frame)


# ------------------------------------------------------------------------------ spec


def _plain(value):
    """OmegaConf containers and YAML lists to plain Python (lists become tuples)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _label(name: str, values: Mapping, defaults: Mapping) -> str:
    changed = [
        f"{key}={_plain(value)}"
        for key, value in values.items()
        if key not in defaults or _plain(defaults[key]) != _plain(value)
    ]
    return f"{name}({','.join(changed)})" if changed else name


def method_label(name: str, options: Mapping) -> str:
    """``name``, plus the options that differ from the method's defaults: ``hiwyn(n=16)``."""
    from noisewarp.warp import METHODS

    return _label(name, options, METHODS[name].options if name in METHODS else {})


def deform_label(name: str, params: Mapping) -> str:
    """``name``, plus the parameters that differ from its defaults: ``rotate(degrees=5.0)``."""
    from noisewarp.deform import DEFORMATIONS

    defaults = {}
    if name in DEFORMATIONS and dataclasses.is_dataclass(DEFORMATIONS[name]):
        defaults = {
            f.name: f.default
            for f in dataclasses.fields(DEFORMATIONS[name])
            if f.default is not dataclasses.MISSING
        }
    return _label(name, params, defaults)


@dataclass(frozen=True)
class OutputSpec:
    dir: Path
    stack: Path | None
    metrics: Path | None
    store_maps: bool
    metrics_every: int
    previews: bool
    preview_size: int
    preview_frames: int
    progress: bool
    overwrite: bool
    overlap: bool


@dataclass(frozen=True)
class RunSpec:
    """A validated run: everything :func:`run` needs, in plain Python."""

    method: str
    options: dict
    motion: SyntheticMotion | FlowMotion
    height: int
    width: int
    frames: int
    channels: int
    seed: int
    backend: str
    threads: int | None
    output: OutputSpec
    config_yaml: str

    @property
    def method_label(self) -> str:
        return method_label(self.method, self.options)

    @property
    def res(self) -> int:
        return max(self.height, self.width)

    def identity(self) -> dict:
        """Everything the frames depend on; a resumed stack must match it exactly."""
        from noisewarp import __version__

        return {
            "method": self.method,
            "options": self.options,
            "motion": self.motion.identity(),
            "height": self.height,
            "width": self.width,
            "frames": self.frames,
            "channels": self.channels,
            "seed": self.seed,
            "noisewarp_version": __version__,
        }

    def coords(self) -> dict:
        """The scalar coordinates a sweep varies (``noisewarp.collect`` stacks runs on them)."""
        return {
            "method": self.method_label,
            "deform": self.motion.label,
            "res": self.res,
            "channels": self.channels,
            "seed": self.seed,
        }


def _integer(cfg, key: str, minimum: int = 1) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _section(cfg, key: str):
    section = cfg.get(key)
    if section is None or not hasattr(section, "get"):
        raise ConfigError(f"the config has no '{key}' group (got {section!r})")
    return section


def build_spec(cfg) -> RunSpec:
    """Validate a resolved config and turn it into a :class:`RunSpec`.

    Raises
    ------
    ConfigError
        With a message naming the key and listing the valid values.
    """
    from omegaconf import OmegaConf

    from noisewarp.warp import METHODS

    method_cfg = _section(cfg, "method")
    method = method_cfg.get("name")
    if method not in METHODS:
        raise ConfigError(
            f"method={method} is not a registered method; valid: {', '.join(sorted(METHODS))}"
        )
    options = _plain(method_cfg.get("options") or {})
    unknown = sorted(set(options) - set(METHODS[method].options))
    if unknown:
        valid = ", ".join(METHODS[method].options) or "none"
        raise ConfigError(f"method={method} has no option(s) {unknown}; valid options: {valid}")

    res = _integer(cfg, "res")
    frames = _integer(cfg, "frames", 1)
    channels = _integer(cfg, "channels")
    seed = _integer(cfg, "seed", 0)

    deform_cfg = _section(cfg, "deform")
    name = deform_cfg.get("name")
    if name == "flow":
        direction, order = deform_cfg.get("direction"), deform_cfg.get("order")
        if direction not in ("backward", "forward"):
            raise ConfigError(f"deform.direction must be backward or forward, got {direction!r}")
        if order not in ("xy", "rc"):
            raise ConfigError(f"deform.order must be xy or rc, got {order!r}")
        if OmegaConf.is_missing(deform_cfg, "path") or not deform_cfg.get("path"):
            raise ConfigError("deform=flow needs a file: deform.path=/path/to/flow.npy (or .flo)")
        motion = FlowMotion(str(deform_cfg.path), direction, order)
        if motion.max_frames is not None and frames > motion.max_frames:
            log.warning(
                "%s holds %d flow fields: %d frames, not %d",
                motion.path,
                motion.max_frames - 1,
                motion.max_frames,
                frames,
            )
            frames = motion.max_frames
    else:
        from noisewarp.deform import DEFORMATIONS

        if name not in DEFORMATIONS:
            valid = ", ".join(sorted([*DEFORMATIONS, "flow"]))
            raise ConfigError(f"deform={name} is not a known deformation; valid: {valid}")
        motion = SyntheticMotion(name, _plain(deform_cfg.get("params") or {}), res, res)

    backend_cfg = _section(cfg, "backend")
    backend = backend_cfg.get("name")
    if backend not in _BACKENDS:
        raise ConfigError(f"backend={backend} is not a backend; valid: {', '.join(_BACKENDS)}")
    threads = backend_cfg.get("threads")
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise ConfigError(f"backend.threads must be null or an integer >= 1, got {threads!r}")

    out = _section(cfg, "output")
    try:
        directory = out.dir
    except Exception as error:  # ${hydra:...} outside a Hydra app
        raise ConfigError(
            f"output.dir cannot be resolved ({error}); outside a Hydra app pass output.dir=PATH"
        ) from None
    directory = Path(directory)
    every = out.get("metrics_every", 1)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ConfigError(f"output.metrics_every must be an integer >= 1, got {every!r}")
    for key in ("preview_size", "preview_frames"):
        value = out.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"output.{key} must be an integer >= 1, got {value!r}")
    output = OutputSpec(
        dir=directory,
        stack=directory / out.stack if out.get("stack") else None,
        metrics=directory / out.metrics if out.get("metrics") else None,
        store_maps=bool(out.get("store_maps", False)),
        metrics_every=every,
        previews=bool(out.get("previews", True)),
        preview_size=out.preview_size,
        preview_frames=out.preview_frames,
        progress=bool(out.get("progress", True)),
        overwrite=bool(out.get("overwrite", False)),
        overlap=bool(out.get("overlap", False)),
    )
    return RunSpec(
        method=method,
        options=options,
        motion=motion,
        height=motion.height,
        width=motion.width,
        frames=frames,
        channels=channels,
        seed=seed,
        backend=backend,
        threads=threads,
        output=output,
        config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
    )


# ------------------------------------------------------------------------------ running


def _reset_peak_rss() -> bool:
    """Start a new peak-memory window (Linux: ``echo 5 > /proc/self/clear_refs``), so a job
    sharing its process with earlier jobs (basic or joblib launcher) reports its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MiB (peak since the last reset)."""
    try:
        fields = {}
        with open("/proc/self/status") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(value.split()[0]) / 1024.0  # kB
        return fields["VmRSS"], fields["VmHWM"]
    except (OSError, KeyError, ValueError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return math.nan, peak / 1024.0 if sys.platform != "darwin" else peak / 2**20


def available_cpus() -> int:
    """CPUs this job may use: ``SLURM_CPUS_PER_TASK`` inside a SLURM job, else the
    process's CPU affinity (a cgroup or ``taskset`` limit), else the machine's count."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm and slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def configure_threads(threads: int | None) -> int:
    """Set the kernels' thread count: ``threads`` (``backend.threads``) if given, else
    :func:`available_cpus`, at most numba's pool size; return the count in use."""
    import numba

    wanted = threads if threads is not None else available_cpus()
    count = max(1, min(wanted, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(count)
    return count


def _warm_up(spec: RunSpec) -> tuple[float, list[str]]:
    """Compile the kernels on a tiny frame; return the seconds it took and the diagnostics
    fields the method reports."""
    from noisewarp.deform import Translate
    from noisewarp.warp import initial_noise, warp

    size = 16
    noise = initial_noise(size, size, spec.channels, seed=0)
    start = time.perf_counter()
    _, diagnostics = warp(
        noise,
        Translate(rows=0.3, cols=0.6),
        method=spec.method,
        key=(0, 1),
        backend=spec.backend,
        return_diagnostics=True,
        **spec.options,
    )
    return time.perf_counter() - start, list(diagnostics.as_dict())


class _Observer:
    """Everything computed from each frame as it streams by: metrics, samples, previews."""

    def __init__(self, spec: RunSpec, baseline_rss_mb: float, threads: int):
        from noisewarp.preview import PreviewRecorder, central_crop

        self.spec = spec
        self.baseline_rss_mb = baseline_rss_mb
        self.threads = threads
        self.records: list[dict] = []
        self.last = spec.frames - 1
        self.sample_frames = [0, min(1, self.last), self.last]  # SAMPLE_NAMES
        self.sample_crop = central_crop(spec.height, spec.width, SAMPLE_SIZE)
        self.samples: dict[int, np.ndarray] = {}
        self.previews = None
        if spec.output.previews:
            self.previews = PreviewRecorder(
                spec.height,
                spec.width,
                spec.frames,
                spec.output.preview_size,
                spec.output.preview_frames,
            )
        self.last_frame: np.ndarray | None = None

    def wants_metrics(self, index: int) -> bool:
        """Whether frame ``index`` is measured (never when ``output.metrics`` is null)."""
        if self.spec.output.metrics is None:
            return False
        return index % self.spec.output.metrics_every == 0 or index == self.last

    def wants_conditional(self, index: int) -> bool:
        """Whether the warp to frame ``index`` must report E[Y | X] (temporal metrics)."""
        return index > 0 and self.wants_metrics(index)

    def needs_map(self, index: int) -> bool:
        return index > 0 and (self.previews is not None or self.wants_metrics(index))

    def add(self, index, frame, conditional, tmap, time_s, map_s, diagnostics) -> dict:
        """Measure frame ``index``: ``conditional`` is the kernel's E[Y | X] given the
        previous frame (None for frame 0 or unmeasured frames), ``tmap`` its map."""
        from noisewarp.metrics import frame_metrics

        current, peak = _rss_mb()
        record = {
            "frame": index,
            "time_s": time_s,
            "map_s": map_s,
            "rss_mb": current,
            "peak_rss_mb": peak,
        }
        record.update({k: float(v) for k, v in diagnostics.items()})
        if self.wants_metrics(index):
            record.update(frame_metrics(frame, conditional=conditional))
        self.records.append(record)
        if index in self.sample_frames:
            self.samples[index] = np.moveaxis(frame[self.sample_crop], -1, 0).copy()
        if self.previews is not None:
            self.previews.add(index, frame, tmap)
        if index == self.last:
            self.last_frame = frame
        return record


def run(cfg) -> dict:
    """Run the experiment described by ``cfg``; return a small summary dict.

    Writes under ``cfg.output.dir``: the stack (``output.stack``), ``metrics.nc``,
    previews and ``summary.txt``. Resumes an existing stack written with the same
    configuration; refuses (``StackMismatchError``) to touch one written with another.
    """
    from threadpoolctl import threadpool_limits
    from tqdm.auto import tqdm

    from noisewarp.cpu.workspace import release as release_work_arrays

    spec = build_spec(cfg)
    spec.output.dir.mkdir(parents=True, exist_ok=True)
    threads = configure_threads(spec.threads)
    log.info(
        "%s on %s, %dx%dx%d, %d frames, seed %d, %d threads -> %s",
        spec.method_label,
        spec.motion.label,
        spec.height,
        spec.width,
        spec.channels,
        spec.frames,
        spec.seed,
        threads,
        spec.output.dir,
    )
    # Jobs of a sweep may share this process: free the work arrays an earlier job's
    # kernels kept (hiwyn's field is 1 GiB at 1024 x 1024 x 4, n = 8) before this
    # job's memory window opens, and this job's once it is done. The window opens
    # after the warm-up, so compilation (about 1 GiB) is not counted as the job's.
    release_work_arrays()
    # One BLAS thread: a multi-threaded BLAS call in the metrics leaves its workers
    # spinning, and the kernels' next parallel region then waits for the cores.
    blas = threadpool_limits(limits=1, user_api="blas")
    try:
        warmup_s, diagnostics_fields = _warm_up(spec)
        _reset_peak_rss()
        observer = _Observer(spec, baseline_rss_mb=_rss_mb()[0], threads=threads)
        with (
            _open_stack(spec, diagnostics_fields) as writer,
            tqdm(
                total=spec.frames,
                desc=f"{spec.method_label} {spec.height}x{spec.width}",
                unit="frame",
                disable=not spec.output.progress,
                mininterval=1.0,
                dynamic_ncols=True,
            ) as progress,
        ):
            prev, start = _replay(spec, writer, observer, progress)
            _stream(spec, writer, observer, progress, prev, start)
            if writer is not None:
                writer.finish()
        return _finish(spec, observer, warmup_s)
    finally:
        blas.restore_original_limits()
        release_work_arrays()


def _open_stack(spec: RunSpec, diagnostics_fields: list[str]):
    """The stack writer (new or resumed), or a null context when no stack is written."""
    from contextlib import nullcontext

    from noisewarp import __version__
    from noisewarp.io import StackWriter

    if spec.output.stack is None:
        return nullcontext(None)
    writer = StackWriter(
        spec.output.stack,
        (spec.frames, spec.channels, spec.height, spec.width),
        spec.identity(),
        spec.config_yaml,
        [*diagnostics_fields, "map_s"],
        store_maps=spec.output.store_maps,
        overwrite=spec.output.overwrite,
        attrs={
            "method": spec.method,
            "method_label": spec.method_label,
            "deform": spec.motion.label,
            "seed": spec.seed,
            "noisewarp_version": __version__,
        },
    )
    if writer.frames_written:
        log.info(
            "resuming %s after frame %d of %d",
            spec.output.stack,
            writer.frames_written - 1,
            spec.frames,
        )
    return writer


def _replay(spec: RunSpec, writer, observer: _Observer, progress) -> tuple[np.ndarray, int]:
    """Feed the frames a resumed stack already holds to the observer (metrics, previews);
    write frame 0 for a new run. Return the last frame and the index of the next one."""
    from noisewarp.warp import initial_noise, warp

    start = writer.frames_written if writer is not None else 0
    if start == 0:
        frame = initial_noise(spec.height, spec.width, spec.channels, spec.seed)
        if writer is not None:
            writer.write(0, frame)
        observer.add(0, frame, None, None, math.nan, math.nan, {})
        progress.update()
        return frame, 1
    stored = writer.table()
    prev = None
    for index in range(start):
        frame = writer.read(index)
        geometry = spec.motion.geometry(index - 1) if observer.needs_map(index) else None
        conditional = None
        if observer.wants_conditional(index):
            # E[Y | X] depends on the frame and the map only: any key gives it.
            _, conditional = warp(prev, geometry, method=spec.method, key=(spec.seed, index),
                                  backend=spec.backend, return_conditional=True,
                                  **spec.options)  # fmt: skip
        diagnostics = {k: v[index] for k, v in stored.items() if k not in ("time_s", "map_s")}
        times = float(stored["time_s"][index]), float(stored["map_s"][index])
        tmap = geometry.centres if geometry is not None else None
        observer.add(index, frame, conditional, tmap, *times, diagnostics)
        prev = frame
        progress.update()
    return prev, start


class _Emitter:
    """Writes, measures and records each warped frame, in order: on a worker thread when
    ``output.overlap`` is on (frame t's outputs while frame t+1 warps), else inline.

    Frame t's outputs are complete (its stack write flushed) before frame t+1's start,
    and before the run ends or fails, so a killed run resumes as without overlap.
    """

    def __init__(self, spec: RunSpec, writer, observer: _Observer, progress):
        from concurrent.futures import ThreadPoolExecutor

        self.spec, self.writer, self.observer, self.progress = spec, writer, observer, progress
        self._pool = ThreadPoolExecutor(1, "noisewarp-outputs") if spec.output.overlap else None
        self._pending = None
        self._last = time.perf_counter()

    def submit(self, *frame_data) -> None:
        self.wait()
        if self._pool is None:
            self._emit(*frame_data)
        else:
            self._pending = self._pool.submit(self._emit, *frame_data)

    def wait(self) -> None:
        """Block until the last submitted frame's outputs are done; re-raise their error."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown()

    def _emit(self, index, frame, conditional, geometry, time_s, map_s, diagnostics) -> None:
        if self.writer is not None:
            tmap = geometry.centres if self.spec.output.store_maps else None
            self.writer.write(index, frame, time_s, {**diagnostics, "map_s": map_s}, tmap)
        record = self.observer.add(
            index, frame, conditional, geometry.centres, time_s, map_s, diagnostics
        )
        now = time.perf_counter()
        record["step_s"] = now - self._last  # frame to frame: map, warp, outputs
        self._last = now
        self.progress.update()
        self.progress.set_postfix(
            ms=f"{1e3 * time_s:.1f}", rss=f"{record['rss_mb']:.0f}M", refresh=False
        )


def _stream(spec: RunSpec, writer, observer: _Observer, progress, prev, start: int) -> None:
    """Warp frames ``start ..`` one at a time: write, measure, drop (memory stays flat)."""
    from noisewarp.warp import NoiseWarper

    warper = NoiseWarper(
        spec.height,
        spec.width,
        spec.channels,
        method=spec.method,
        seed=spec.seed,
        noise=prev,
        frame=start - 1,
        backend=spec.backend,
        **spec.options,
    )
    emitter = _Emitter(spec, writer, observer, progress)
    try:
        for index in range(start, spec.frames):
            tick = time.perf_counter()
            geometry = spec.motion.geometry(index - 1)
            map_s = time.perf_counter() - tick
            tick = time.perf_counter()
            frame = warper.step(geometry, conditional=observer.wants_conditional(index))
            time_s = time.perf_counter() - tick
            emitter.submit(index, frame, warper.conditional, geometry, time_s, map_s,
                           warper.diagnostics.as_dict())  # fmt: skip
    finally:
        emitter.close()


def _finish(spec: RunSpec, observer: _Observer, warmup_s: float) -> dict:
    """Write metrics.nc, previews and summary.txt; print the summary table."""
    from noisewarp.metrics import metrics_dataset

    out = spec.output
    times = np.array([r["time_s"] for r in observer.records[1:]], dtype=np.float64)
    steps = np.array([r.get("step_s", math.nan) for r in observer.records[1:]], np.float64)
    peak = max(r["peak_rss_mb"] for r in observer.records)

    def median(values):
        return float(np.nanmedian(values)) if np.isfinite(values).any() else math.nan

    summary = {
        "status": "complete",
        "method": spec.method_label,
        "deform": spec.motion.label,
        "height": spec.height,
        "width": spec.width,
        "channels": spec.channels,
        "frames": spec.frames,
        "seed": spec.seed,
        "warmup_s": warmup_s,
        "threads": observer.threads,
        "time_per_frame_s": median(times),
        "time_per_frame_std_s": float(np.nanstd(times)) if np.isfinite(times).any() else math.nan,
        "step_per_frame_s": median(steps),
        "baseline_rss_mb": observer.baseline_rss_mb,
        "peak_rss_mb": peak - observer.baseline_rss_mb,
        "dir": str(out.dir),
        "stack": str(out.stack) if out.stack else None,
        "metrics": str(out.metrics) if out.metrics else None,
    }
    if out.metrics is not None:
        dataset = metrics_dataset(
            observer.records,
            dims=("frame",),
            attrs={
                "config": spec.config_yaml,
                "identity": json.dumps(spec.identity(), sort_keys=True, default=str),
            },
        )
        dataset = dataset.assign_coords(spec.coords())
        dataset = dataset.assign_coords(height=spec.height, width=spec.width, frames=spec.frames)
        dataset["warmup_s"] = summary["warmup_s"]
        dataset["time_per_frame_s"] = summary["time_per_frame_s"]
        dataset["step_per_frame_s"] = summary["step_per_frame_s"]
        dataset["max_rss_mb"] = summary["peak_rss_mb"]
        dataset["baseline_rss_mb"] = summary["baseline_rss_mb"]
        dataset["threads"] = summary["threads"]
        dataset["warmup_s"].attrs["long_name"] = "seconds of the JIT warm-up (not in time_s)"
        dataset["time_per_frame_s"].attrs["long_name"] = "median of time_s over the warped frames"
        dataset["step_per_frame_s"].attrs["long_name"] = (
            "median of step_s: end-to-end seconds per frame (warp, write, metrics, previews)"
        )
        dataset["max_rss_mb"].attrs["long_name"] = (
            "peak resident-memory growth of the run above baseline_rss_mb (MiB)"
        )
        dataset["baseline_rss_mb"].attrs["long_name"] = (
            "resident memory after the JIT warm-up, before the first frame (MiB)"
        )
        dataset["threads"].attrs["long_name"] = "threads of the warp kernels"
        samples = np.stack([observer.samples[i] for i in observer.sample_frames])
        dataset["sample_noise"] = (("sample", "channel", "sample_y", "sample_x"), samples)
        dataset["sample_frame"] = ("sample", np.array(observer.sample_frames, dtype=np.int64))
        dataset = dataset.assign_coords(
            sample=list(SAMPLE_NAMES),
            channel=np.arange(spec.channels),
            sample_y=np.arange(samples.shape[2]),
            sample_x=np.arange(samples.shape[3]),
        )
        dataset["sample_noise"].attrs["long_name"] = (
            f"central {samples.shape[2]}x{samples.shape[3]} crop of a few frames"
        )
        dataset["time_s"].attrs["long_name"] = "seconds to warp this frame (JIT excluded)"
        dataset["map_s"].attrs["long_name"] = "seconds to evaluate the motion for this frame"
        dataset["rss_mb"].attrs["long_name"] = "resident memory after this frame (MiB)"
        dataset["peak_rss_mb"].attrs["long_name"] = "peak resident memory so far (MiB)"
        if "step_s" in dataset:
            dataset["step_s"].attrs["long_name"] = (
                "end-to-end seconds for this frame: map, warp, write, metrics, previews"
            )
        tmp = out.metrics.with_name(out.metrics.name + ".tmp")
        dataset.to_netcdf(tmp, engine="h5netcdf")
        os.replace(tmp, out.metrics)
    if observer.previews is not None:
        try:
            observer.previews.save(out.dir)
        except ImportError as error:  # Pillow is an optional dependency
            log.warning(
                "previews skipped (%s): pip install pillow, or noisewarp[experiments]", error
            )
    table = format_summary(spec, observer, summary)
    (out.dir / "summary.txt").write_text(table + "\n")
    (out.dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(table, flush=True)
    return summary


def format_summary(spec: RunSpec, observer: _Observer, summary: Mapping) -> str:
    """A fixed-width table: timing, memory, and each metric over the frames against its
    expected value under the i.i.d. N(0, 1) null."""
    from noisewarp.metrics import (
        SPATIAL_STATISTICS,
        TEMPORAL_STATISTICS,
        null_expectations,
        standard_errors,
        white_noise_report,
    )

    shape = (spec.height, spec.width, spec.channels)
    expected, errors = null_expectations(shape), standard_errors(shape)
    lines = [
        f"noisewarp {spec.method_label} | {spec.motion.label} | "
        f"{spec.height}x{spec.width}x{spec.channels} | {spec.frames} frames | seed {spec.seed}",
        f"warp {1e3 * summary['time_per_frame_s']:.2f} ms per frame (median; sd "
        f"{1e3 * summary['time_per_frame_std_s']:.2f} ms), end to end "
        f"{1e3 * summary['step_per_frame_s']:.2f} ms | {summary['threads']} threads | JIT warm-up "
        f"{summary['warmup_s']:.2f} s, excluded | memory growth "
        f"{summary['peak_rss_mb']:.0f} MiB above {summary['baseline_rss_mb']:.0f} MiB",
        "",
        f"{'statistic':<26}{'expected':>11}{'mean':>12}{'min':>12}{'max':>12}{'worst |z|':>11}",
    ]

    def cell(value: float, width: int, digits: int) -> str:
        return f"{value:>{width}.{digits}g}" if np.isfinite(value) else f"{'-':>{width}}"

    names = (
        *SPATIAL_STATISTICS,
        *TEMPORAL_STATISTICS,
        "fresh_pixels",
        "overclaimed_sources",
        "unclaimed_sources",
    )
    for name in names:
        values = np.array([r[name] for r in observer.records if name in r], dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            continue
        exp = expected.get(name, math.nan)
        se = errors.get(name, math.nan)
        worst = float(np.max(np.abs(values - exp)) / se) if np.isfinite(se) and se > 0 else math.nan
        lines.append(
            f"{name:<26}{cell(exp, 11, 4)}{cell(values.mean(), 12, 5)}{cell(values.min(), 12, 5)}"
            f"{cell(values.max(), 12, 5)}{cell(worst, 11, 3)}"
        )
    if observer.last_frame is not None and spec.output.metrics is not None:
        report = white_noise_report(observer.last_frame)
        verdict = "passes" if report["passed"] else f"FAILS ({', '.join(report['failed'])})"
        lines += ["", f"last frame {verdict} the 5-sigma white-noise test"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ status


def in_multirun() -> bool:
    """Whether this process runs a job of a Hydra multirun (sweep)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:
        return False


def write_status(cfg, status: str, error: BaseException | None = None) -> Path | None:
    """Write ``status.json`` (complete / failed / interrupted) in the run's output directory,
    so ``noisewarp.collect`` can report failed runs. Never raises."""
    try:
        try:
            directory = Path(cfg.output.dir)
        except Exception:
            from hydra.core.hydra_config import HydraConfig

            directory = Path(HydraConfig.get().runtime.output_dir)
        directory.mkdir(parents=True, exist_ok=True)
        record = {"status": status, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if error is not None:
            record["error"] = f"{type(error).__name__}: {error}"
            record["traceback"] = "".join(
                traceback.format_exception(type(error), error, error.__traceback__)
            )
        path = directory / "status.json"
        path.write_text(json.dumps(record, indent=2) + "\n")
        return path
    except Exception:  # pragma: no cover - reporting must never mask the real outcome
        log.exception("could not write status.json")
        return None
