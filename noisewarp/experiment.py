"""One experiment from a resolved config: warp a noise video, write stack, metrics, previews.

``run.py`` (Hydra) is a thin wrapper around :func:`run`; tests call :func:`run`
directly with a config composed by Hydra's compose API. What it writes:
``docs/outputs.md``; how to run it: ``docs/cluster.md``.

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

import json
import logging
import math
import os
import sys
import time
from collections.abc import Mapping

import numpy as np

from noisewarp.config import (
    ConfigError,
    RunSpec,
    build_spec,
    deform_label,
    method_label,
)
from noisewarp.status import in_multirun, write_status

__all__ = [
    "ConfigError",
    "RunSpec",
    "build_spec",
    "run",
    "write_status",
    "in_multirun",
    "method_label",
    "deform_label",
    "available_cpus",
    "configure_threads",
]

log = logging.getLogger(__name__)

SAMPLE_SIZE = 64  # side of the sample crops stored in metrics.nc
SAMPLE_NAMES = ("first", "second", "last")  # frames 0, 1 and the last one


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


# After a parallel region numba's OpenMP workers spin for GOMP's default 300,000 pauses
# (10-20 ms on AMD cores) before they sleep, holding cores that the metrics' FFT threads
# then wait for. A short spin keeps back-to-back regions fast and frees the cores.
OPENMP_SPIN = "10000"


def configure_threads(threads: int | None) -> int:
    """Set the kernels' thread count: ``threads`` (``backend.threads``) if given, else
    :func:`available_cpus`, at most numba's pool size; return the count in use.

    Before numba starts its threads, also set ``GOMP_SPINCOUNT`` to :data:`OPENMP_SPIN`
    unless the environment sets it or ``OMP_WAIT_POLICY`` (the OpenMP runtime reads them
    once, when it loads)."""
    import numba
    from numba.np.ufunc import parallel

    if not parallel._is_initialized and not {"GOMP_SPINCOUNT", "OMP_WAIT_POLICY"} & set(os.environ):
        os.environ["GOMP_SPINCOUNT"] = OPENMP_SPIN
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
        self.video_previews = None
        if spec.output.previews and hasattr(spec.motion, "first_image"):
            from noisewarp.motion import Step
            from noisewarp.preview import VideoPreview

            self.video_previews = VideoPreview(spec.frames, spec.output.preview_frames)
            self._first_step = Step(None, spec.motion.first_image())
        self.last_frame: np.ndarray | None = None

    def wants_metrics(self, index: int) -> bool:
        """Whether frame ``index`` is measured (never when ``output.metrics`` is null)."""
        if self.spec.output.metrics is None:
            return False
        return index % self.spec.output.metrics_every == 0 or index == self.last

    def wants_conditional(self, index: int) -> bool | str:
        """What the warp to frame ``index`` must report of E[Y | X] for the temporal
        metrics: nothing (False), its sums (``"sums"``), or its arrays (True) when a
        noise blend rescales them after the warp."""
        if index == 0 or not self.wants_metrics(index):
            return False
        return True if self.spec.blend else "sums"

    def add(self, index, frame, conditional, step, time_s, map_s, diagnostics) -> dict:
        """Measure frame ``index``: ``conditional`` is the kernel's E[Y | X] given the
        previous frame (None for frame 0 or unmeasured frames), ``step`` the motion into
        it (``noisewarp.motion.Step``; None for frame 0)."""
        from noisewarp.metrics import frame_metrics

        current, peak = _rss_mb()
        record = {
            "frame": index,
            "time_s": time_s,
            "map_s": map_s,
            "rss_mb": current,
            "peak_rss_mb": peak,
        }
        # The kernels mark a count that does not apply (hiwyn's overclaimed sources) -1.
        record.update({k: float(v) if v >= 0 else math.nan for k, v in diagnostics.items()})
        if step is not None and step.residual is not None:
            record["inversion_residual"] = step.residual
        if self.wants_metrics(index):
            record.update(frame_metrics(frame, conditional=conditional))
        self.records.append(record)
        if index in self.sample_frames:
            self.samples[index] = np.moveaxis(frame[self.sample_crop], -1, 0).copy()
        if self.previews is not None:
            self.previews.add(index, frame, step)
        if self.video_previews is not None:
            self.video_previews.add(index, frame, step if index else self._first_step)
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
    _check_metrics_owner(spec)
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
            steps = spec.motion.steps(images=observer.previews is not None)
            prev, start = _replay(spec, writer, observer, progress, steps)
            _stream(spec, writer, observer, progress, steps, prev, start)
            if writer is not None:
                writer.finish()
        return _finish(spec, observer, warmup_s)
    finally:
        blas.restore_original_limits()
        release_work_arrays()


def _check_metrics_owner(spec: RunSpec) -> None:
    """Without a stack to guard the folder, refuse to replace another configuration's
    metrics.nc (the stack's own check does this when there is one)."""
    from noisewarp.io import StackMismatchError, as_stored, stored_identity

    out = spec.output
    if out.stack is not None or out.metrics is None or out.overwrite or not out.metrics.exists():
        return
    if stored_identity(out.metrics) != as_stored(spec.identity()):
        raise StackMismatchError(
            f"{str(out.metrics)!r} holds the metrics of another run configuration (or cannot "
            "be read); it was not modified. Write to another output.dir or pass "
            "output.overwrite=true to replace it."
        )


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


def _replay(spec: RunSpec, writer, observer: _Observer, progress, steps):
    """Feed the frames a resumed stack already holds to the observer (metrics, previews),
    taking their motion ``steps``; write frame 0 for a new run. Return the last frame and
    the index of the next one."""
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
        step = next(steps) if index > 0 else None  # every step, to stay in step with the video
        conditional = None
        if observer.wants_conditional(index):
            # E[Y | X] depends on the frame and the map only: any key gives it.
            _, conditional = warp(prev, step.geometry, method=spec.method,
                                  key=(spec.seed, index), backend=spec.backend,
                                  return_conditional=True, **spec.options)  # fmt: skip
            _scale_conditional(conditional, spec.blend)
        diagnostics = {k: v[index] for k, v in stored.items() if k not in ("time_s", "map_s")}
        times = float(stored["time_s"][index]), float(stored["map_s"][index])
        observer.add(index, frame, conditional, step, *times, diagnostics)
        prev = frame
        progress.update()
    return prev, start


def _blend(warper, spec: RunSpec, index: int) -> np.ndarray:
    """Blend fresh noise into the warper's new frame (``noise.blend``), which the next
    step then warps; its E[Y | X] scales by sqrt(1 - blend^2), the carried fraction by
    1 - blend^2."""
    from noisewarp.core.rng import Key
    from noisewarp.opticalflow import blend_fresh

    frame = blend_fresh(warper.noise, spec.blend, Key(spec.seed, index))
    warper.noise = frame
    _scale_conditional(warper.conditional, spec.blend)
    return frame


def _scale_conditional(conditional, blend: float) -> None:
    """E[Y | X] of a blended frame, in place: the warp's scaled by sqrt(1 - blend^2)."""
    if conditional is not None and blend:
        keep = np.float32(math.sqrt(1.0 - blend**2))
        conditional.mean[...] *= keep
        conditional.carried[...] *= keep * keep


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

    def _emit(self, index, frame, conditional, step, time_s, map_s, diagnostics) -> None:
        if self.writer is not None:
            tmap = step.geometry.centres if self.spec.output.store_maps else None
            self.writer.write(index, frame, time_s, {**diagnostics, "map_s": map_s}, tmap)
        record = self.observer.add(index, frame, conditional, step, time_s, map_s, diagnostics)
        now = time.perf_counter()
        record["step_s"] = now - self._last  # frame to frame: map, warp, outputs
        self._last = now
        self.progress.update()
        self.progress.set_postfix(
            ms=f"{1e3 * time_s:.1f}", rss=f"{record['rss_mb']:.0f}M", refresh=False
        )


def _stream(spec: RunSpec, writer, observer: _Observer, progress, steps, prev, start: int):
    """Warp frames ``start ..`` one at a time along the motion's ``steps``: write,
    measure, drop (memory stays flat)."""
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
            step = next(steps)
            map_s = time.perf_counter() - tick
            tick = time.perf_counter()
            frame = warper.step(step.geometry, conditional=observer.wants_conditional(index))
            if spec.blend:
                frame = _blend(warper, spec, index)
            time_s = time.perf_counter() - tick
            emitter.submit(index, frame, warper.conditional, step, time_s, map_s,
                           warper.diagnostics.as_dict())  # fmt: skip
    finally:
        emitter.close()


def _finish(spec: RunSpec, observer: _Observer, warmup_s: float) -> dict:
    """Write metrics.nc, previews and summary.txt; print the summary table."""
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
        "backend": spec.backend,
        "warmup_s": warmup_s,
        "threads": observer.threads,
        "time_per_frame_s": median(times),
        "time_per_frame_std_s": float(np.nanstd(times)) if np.isfinite(times).any() else math.nan,
        "step_per_frame_s": median(steps),
        "baseline_rss_mb": observer.baseline_rss_mb,
        "max_rss_mb": peak - observer.baseline_rss_mb,  # as metrics.nc's max_rss_mb
        "dir": str(out.dir),
        "stack": str(out.stack) if out.stack else None,
        "metrics": str(out.metrics) if out.metrics else None,
        "warnings": list(spec.warnings),
    }
    if out.metrics is not None:
        _write_metrics(spec, observer, summary)
    if observer.previews is not None:
        try:
            observer.previews.save(out.dir)
            if observer.video_previews is not None:
                fps = getattr(spec.motion.reader, "fps", None) or 12.0
                observer.video_previews.save(out.dir, fps)
        except ImportError as error:  # Pillow is an optional dependency
            log.warning(
                "previews skipped (%s): pip install pillow, or noisewarp[experiments]", error
            )
    table = format_summary(spec, observer, summary)
    (out.dir / "summary.txt").write_text(table + "\n")
    (out.dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(table, flush=True)
    return summary


# Per-run variables of metrics.nc besides the statistics: (long_name, units).
RUN_VARIABLES = {
    "time_s": ("seconds to warp this frame (JIT excluded)", "s"),
    "map_s": ("seconds to evaluate the motion for this frame", "s"),
    "step_s": ("end-to-end seconds for this frame: map, warp, write, metrics, previews", "s"),
    "rss_mb": ("resident memory after this frame", "MiB"),
    "peak_rss_mb": ("peak resident memory so far", "MiB"),
    "warmup_s": ("seconds of the JIT warm-up (not in time_s)", "s"),
    "time_per_frame_s": ("median of time_s over the warped frames", "s"),
    "step_per_frame_s": ("median of step_s: end-to-end seconds per frame", "s"),
    "max_rss_mb": ("peak resident-memory growth of the run above baseline_rss_mb", "MiB"),
    "baseline_rss_mb": ("resident memory after the JIT warm-up, before the first frame", "MiB"),
    "threads": ("threads of the warp kernels", "1"),
    "inversion_residual": ("largest |T + f(T) - p| of the inverted forward flow", "pixels"),
    "fresh_pixels": ("target pixels given fresh noise (nothing of frame t maps there)", "1"),
    "area_min": ("smallest warped pixel area A_p", "pixels^2"),
    "area_mean": ("mean warped pixel area A_p", "pixels^2"),
    "area_max": ("largest warped pixel area A_p", "pixels^2"),
    "overclaimed_sources": ("source pixels claimed more than once (S_q > 1)", "1"),
    "entries": ("grid: entries of the partition record (target-source overlaps)", "1"),
    "unclaimed_sources": ("source pixels nobody claims", "1"),
    "empty_targets": ("hiwyn: targets whose quadrilateral holds no sub-pixel centre", "1"),
    "machine": ("CPU, CPU count and numba version of the run", ""),
    "height": ("noise frame height", "pixels"),
    "width": ("noise frame width", "pixels"),
}


def _write_metrics(spec: RunSpec, observer: _Observer, summary: Mapping) -> None:
    """metrics.nc: the per-frame records, the run's figures as scalars, its place in a
    sweep as coordinates, and the sample crops in the ``samples`` group
    (``docs/outputs.md``)."""
    import yaml

    from noisewarp.collect import SAMPLES_GROUP, run_coords
    from noisewarp.metrics import metrics_dataset

    out = spec.output
    dataset = metrics_dataset(
        observer.records,
        dims=("frame",),
        attrs={
            "config": spec.config_yaml,
            "identity": json.dumps(spec.identity(), sort_keys=True, default=str),
            "documentation": "docs/outputs.md in the noisewarp repository",
            **({"warnings": "\n".join(spec.warnings)} if spec.warnings else {}),
        },
    )
    coords, _ = run_coords(yaml.safe_load(spec.config_yaml))
    dataset = dataset.assign_coords(coords).assign_coords(
        channels=spec.channels, seed=spec.seed, frames=spec.frames
    )
    for name in ("warmup_s", "time_per_frame_s", "step_per_frame_s", "baseline_rss_mb",
                 "threads", "height", "width"):  # fmt: skip
        dataset[name] = summary[name]
    dataset["max_rss_mb"] = summary["max_rss_mb"]
    dataset["machine"] = machine(spec.backend)
    for name, (long_name, units) in RUN_VARIABLES.items():
        if name in dataset:
            dataset[name].attrs.update(long_name=long_name, **({"units": units} if units else {}))
    samples = np.stack([observer.samples[i] for i in observer.sample_frames])
    crops = _sample_crops(samples, observer.sample_frames)
    tmp = out.metrics.with_name(out.metrics.name + ".tmp")
    dataset.to_netcdf(tmp, engine="h5netcdf")
    crops.to_netcdf(tmp, engine="h5netcdf", group=SAMPLES_GROUP, mode="a")
    os.replace(tmp, out.metrics)


def machine(backend: str = "cpu") -> str:
    """The CPU, its count and numba's version (and the GPU when the kernels ran on one):
    what the times in metrics.nc were measured on."""
    import platform

    import numba

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            model = next(
                (line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")),
                model,
            )
    except OSError:
        pass
    cpus = f"{os.cpu_count()} CPUs ({available_cpus()} for this job)"
    where = f"{model}, {cpus}, numba {numba.__version__}"
    if backend == "cuda":
        from numba import cuda

        name = getattr(cuda.get_current_device(), "name", "(numba's CUDA simulator)")
        where += f", GPU {name.decode() if isinstance(name, bytes) else name} (numba.cuda)"
    return where


def _sample_crops(samples: np.ndarray, frames: list[int]):
    """The sample crops [sample, channel, y, x] of a run as a Dataset."""
    import xarray as xr

    crops = xr.Dataset(
        {
            "sample_noise": (("sample", "channel", "sample_y", "sample_x"), samples),
            "sample_frame": ("sample", np.array(frames, dtype=np.int64)),
        },
        coords={
            "sample": list(SAMPLE_NAMES),
            "channel": np.arange(samples.shape[1]),
            "sample_y": np.arange(samples.shape[2]),
            "sample_x": np.arange(samples.shape[3]),
        },
    )
    crops["sample_noise"].attrs["long_name"] = (
        f"central {samples.shape[2]}x{samples.shape[3]} crop of a few frames"
    )
    crops["sample_frame"].attrs["long_name"] = "the frame each crop is taken from"
    return crops


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
        f"{summary['max_rss_mb']:.0f} MiB above {summary['baseline_rss_mb']:.0f} MiB",
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
