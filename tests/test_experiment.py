"""experiment.run end to end: outputs, resume, refusals, CLI, kill-and-resume, sweeps, collect."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr

import noisewarp as nw
from noisewarp.collect import collect
from noisewarp.experiment import build_spec, run
from noisewarp.io import StackError, StackMismatchError, read_frames, stack_attrs

REPO = Path(__file__).resolve().parents[1]
SMALL = ("res=32", "frames=5", "deform=rotate")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reference_frames(height, width, channels, frames, seed, deformation) -> np.ndarray:
    """The public streaming API, independently of experiment.run."""
    warper = nw.NoiseWarper(height, width, channels, method="particle", seed=seed)
    out = [warper.noise]
    for _ in range(frames - 1):
        out.append(warper.step(deformation))
    return np.stack(out)


def test_run_writes_stack_metrics_previews_and_summary(compose, tmp_path, capsys):
    cfg = compose(*SMALL)
    summary = run(cfg)
    out = Path(cfg.output.dir)
    for name in (
        "noise.h5",
        "metrics.nc",
        "frames.png",
        "noise.gif",
        "side_by_side.gif",
        "summary.txt",
        "summary.json",
    ):
        assert (out / name).is_file(), name
    # The stack: complete, and exactly what the public API produces.
    attrs = stack_attrs(out / "noise.h5")
    assert attrs["complete"] == 1 and attrs["frames_written"] == 5
    assert attrs["method"] == "particle" and attrs["noisewarp_version"] == nw.__version__
    assert "deform:" in attrs["config"] and json.loads(attrs["identity"])["seed"] == 0
    expected = reference_frames(32, 32, 4, 5, 0, nw.deform.get_deformation("rotate"))
    np.testing.assert_array_equal(read_frames(out / "noise.h5"), expected)
    with xr.open_dataset(out / "noise.h5", engine="h5netcdf") as stack:
        assert stack["noise"].dims == ("frame", "channel", "y", "x")
        assert np.isfinite(stack["time_s"].values[1:]).all()
        assert "fresh_pixels" in stack and "map_s" in stack
    # Metrics: one row per frame, timing, memory, sweep coordinates.
    with xr.open_dataset(out / "metrics.nc", engine="h5netcdf") as metrics:
        assert metrics.sizes["frame"] == 5
        for name in (
            "noise_mean",
            "noise_std",
            "ks_pvalue",
            "acf_row",
            "temporal_corr",
            "time_s",
            "rss_mb",
            "peak_rss_mb",
            "step_s",
            "fresh_pixels",
            "threads",
            "baseline_rss_mb",
        ):
            assert name in metrics, name
        # End to end (warp, write, metrics, previews) costs at least the warp.
        steps, warps = metrics["step_s"].values[1:], metrics["time_s"].values[1:]
        assert np.all(steps >= warps) and np.isfinite(steps).all()
        # Memory is the growth above the post-warm-up baseline, not the process's peak.
        assert 0 <= float(metrics["max_rss_mb"]) < float(metrics["baseline_rss_mb"])
        summary = json.loads((out / "summary.json").read_text())  # the same figure, same name
        assert summary["max_rss_mb"] == float(metrics["max_rss_mb"])
        assert "peak_rss_mb" not in summary
        assert np.isnan(metrics["temporal_corr"].values[0])
        assert (metrics["temporal_corr"].values[1:] > 0.3).all()
        assert metrics["warp_method"].item() == "particle" and metrics["res"].item() == 32
        assert metrics["deform"].item() == "rotate" and metrics["degrees"].item() == 2.0
        assert metrics["time_s"].attrs["units"] == "s" and metrics["rss_mb"].attrs["units"] == "MiB"
    with xr.open_dataset(out / "metrics.nc", engine="h5netcdf", group="samples") as samples:
        assert samples["sample_noise"].dims == ("sample", "channel", "sample_y", "sample_x")
    # The printed summary table.
    printed = capsys.readouterr().out
    assert "ms per frame" in printed and "end to end" in printed and "JIT warm-up" in printed
    assert "temporal_corr" in printed and "white-noise test" in printed
    assert summary["status"] == "complete" and summary["time_per_frame_s"] > 0
    assert (out / "summary.txt").read_text().strip() in printed


@pytest.mark.parametrize("deform", ["swirl", "turbulence"])
def test_run_evaluates_each_step_of_the_motion(compose, deform):
    """A stationary deformation is evaluated once and reused; a time-varying one
    (turbulence) at every step: both give the public API's frames."""
    cfg = compose("res=24", "frames=5", f"deform={deform}")
    run(cfg)
    expected = reference_frames(24, 24, 4, 5, 0, nw.deform.get_deformation(deform))
    np.testing.assert_array_equal(read_frames(Path(cfg.output.dir) / "noise.h5"), expected)


def test_metrics_null_computes_no_metrics(compose, monkeypatch):
    """``output.metrics=null`` writes the stack and computes no metric at all."""
    from noisewarp.metrics import dataset, nulls

    def refuse(*args, **kwargs):
        raise AssertionError("a metric was computed")

    monkeypatch.setattr(dataset, "gaussianity_and_sums", refuse)
    monkeypatch.setattr(nulls, "gaussianity", refuse)
    cfg = compose(*SMALL, "output.metrics=null")
    summary = run(cfg)
    assert summary["metrics"] is None and not (Path(cfg.output.dir) / "metrics.nc").exists()
    assert (Path(cfg.output.dir) / "noise.h5").is_file()


def test_thread_count_follows_the_allocation(compose, monkeypatch):
    """Inside a SLURM job the kernels use the job's CPUs, unless backend.threads says."""
    import numba

    from noisewarp.experiment import available_cpus, configure_threads

    before = numba.get_num_threads()
    try:
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
        assert available_cpus() == 1
        summary = run(compose(*SMALL))
        assert summary["threads"] == 1 and numba.get_num_threads() == 1
        # backend=auto is recorded as what ran (no GPU here: the CPU kernels).
        assert summary["backend"] == nw.resolve_backend("auto")
        summary = run(compose(*SMALL, "backend.threads=2", "output.overwrite=true"))
        assert summary["threads"] == min(2, numba.config.NUMBA_NUM_THREADS)
        monkeypatch.delenv("SLURM_CPUS_PER_TASK")
        assert available_cpus() == len(os.sched_getaffinity(0))
    finally:
        configure_threads(before)


def test_overlapped_outputs_equal_the_sequential_ones(compose, tmp_path):
    """``output.overlap=true`` writes and measures frame t on a worker thread while frame
    t+1 warps: the same stack bit for bit and the same metrics."""
    plain = compose(*SMALL, "frames=7", output_dir=tmp_path / "plain")
    overlapped = compose(*SMALL, "frames=7", "output.overlap=true", output_dir=tmp_path / "over")
    run(plain)
    run(overlapped)
    np.testing.assert_array_equal(
        read_frames(tmp_path / "plain" / "noise.h5"), read_frames(tmp_path / "over" / "noise.h5")
    )
    names = ("noise_mean", "ks_stat", "acf_row", "temporal_corr", "expected_carried_variance")
    with (
        xr.open_dataset(tmp_path / "plain" / "metrics.nc", engine="h5netcdf") as first,
        xr.open_dataset(tmp_path / "over" / "metrics.nc", engine="h5netcdf") as second,
    ):
        for name in names:
            np.testing.assert_array_equal(first[name].values, second[name].values)


def test_an_output_error_on_the_worker_stops_the_run(compose, monkeypatch):
    """A failure while writing frame t on the worker thread surfaces in the run."""
    from noisewarp.io import StackWriter

    original = StackWriter.write

    def failing(self, index, *args, **kwargs):
        if index == 3:
            raise OSError("disk full")
        return original(self, index, *args, **kwargs)

    monkeypatch.setattr(StackWriter, "write", failing)
    cfg = compose(*SMALL, "frames=6", "output.overlap=true")
    with pytest.raises(OSError, match="disk full"):
        run(cfg)
    assert stack_attrs(Path(cfg.output.dir) / "noise.h5")["frames_written"] == 3


def test_rerun_after_a_crash_resumes_bit_identically(compose, tmp_path):
    cfg = compose(*SMALL, "frames=8")
    run(cfg)
    path = Path(cfg.output.dir) / "noise.h5"
    complete = read_frames(path)
    # Simulate a crash after frame 2: the counter says 3 frames, later ones are garbage.
    with h5py.File(path, "r+") as handle:
        handle.attrs.modify("frames_written", np.int64(3))
        handle.attrs.modify("complete", np.int64(0))
        handle["noise"][3:] = 123.0
    summary = run(cfg)
    assert summary["status"] == "complete"
    np.testing.assert_array_equal(read_frames(path), complete)
    assert stack_attrs(path)["complete"] == 1


def test_a_different_config_never_overwrites_the_stack(compose):
    cfg = compose(*SMALL)
    run(cfg)
    path = Path(cfg.output.dir) / "noise.h5"
    before = digest(path)
    with pytest.raises(StackMismatchError, match="seed: stored 0, now 1") as error:
        run(compose(*SMALL, "seed=1"))
    assert "output.overwrite=true" in str(error.value) and str(path) in str(error.value)
    assert digest(path) == before
    run(compose(*SMALL, "seed=1", "output.overwrite=true"))
    assert json.loads(stack_attrs(path)["identity"])["seed"] == 1


def test_a_finished_run_extends_to_equal_the_longer_run(compose, tmp_path):
    """frames=8 after frames=5 in the same directory: the five frames are kept, three are
    added, and the stack, its per-frame table and the metrics equal a run of 8 at once."""
    short = compose(*SMALL, "output.store_maps=true")
    run(short)
    path = Path(short.output.dir) / "noise.h5"
    first = read_frames(path)
    summary = run(compose(*SMALL[:1], "frames=8", *SMALL[2:], "output.store_maps=true"))
    assert summary["frames"] == 8 and stack_attrs(path)["complete"] == 1
    straight = compose(*SMALL[:1], "frames=8", *SMALL[2:], "output.store_maps=true",
                       output_dir=tmp_path / "straight")  # fmt: skip
    run(straight)
    reference = Path(straight.output.dir) / "noise.h5"
    extended = read_frames(path)
    np.testing.assert_array_equal(extended[:5], first)
    np.testing.assert_array_equal(extended, read_frames(reference))
    with (
        xr.open_dataset(path, engine="h5netcdf") as a,
        xr.open_dataset(reference, engine="h5netcdf") as b,
    ):
        np.testing.assert_array_equal(a["map"].values, b["map"].values)
        np.testing.assert_array_equal(a["fresh_pixels"].values, b["fresh_pixels"].values)
        assert np.isfinite(a["time_s"].values[1:]).all()
    assert not list(path.parent.glob("*.tmp"))
    # A shorter run than the stack's is still another run: refused, the file untouched.
    before = digest(path)
    with pytest.raises(StackMismatchError, match="frames: stored 8, now 6"):
        run(compose(*SMALL[:1], "frames=6", *SMALL[2:], "output.store_maps=true"))
    assert digest(path) == before


def test_a_truncated_stack_is_a_clear_error_and_kept(compose):
    cfg = compose(*SMALL)
    run(cfg)
    path = Path(cfg.output.dir) / "noise.h5"
    path.write_bytes(path.read_bytes()[:5000])
    before = digest(path)
    with pytest.raises(StackError) as error:
        run(cfg)
    message = str(error.value)
    assert str(path) in message and "left untouched" in message
    assert "it is truncated" in message and "locked" not in message
    assert "output.overwrite=true" in message
    assert digest(path) == before
    # Complete again, then held open by another process: locked, not truncated.
    run(compose(*SMALL, "output.overwrite=true"))
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import h5py, time; f = h5py.File({str(path)!r}, 'r+'); "
         "print('open', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(StackError) as error:
            run(cfg)
        assert "it is locked" in str(error.value) and "it is truncated" not in str(error.value)
    finally:
        holder.kill()
        holder.wait()


def test_flow_file_input(compose, tmp_path):
    flow = np.zeros((2, 24, 40, 2), np.float32)
    flow[..., 0], flow[..., 1] = 0.25, -0.5  # backward flow (dx, dy)
    np.save(tmp_path / "flow.npy", flow)
    cfg = compose(
        "deform=flow", f"deform.path={tmp_path / 'flow.npy'}", "frames=10", "output.store_maps=true"
    )
    summary = run(cfg)
    assert summary["frames"] == 3 and (summary["height"], summary["width"]) == (24, 40)
    path = Path(cfg.output.dir) / "noise.h5"
    with xr.open_dataset(path, engine="h5netcdf") as stack:
        assert stack["noise"].shape == (3, 4, 24, 40)
        tmap = stack["map"].isel(frame=1).values
    np.testing.assert_allclose(tmap[0, 0], [0.5 - 0.5, 0.5 + 0.25])
    expected = reference_frames(24, 40, 4, 3, 0, nw.flow.map_from_flow(flow[0]))
    np.testing.assert_array_equal(read_frames(path), expected)


def test_bench_output_writes_metrics_only(compose):
    cfg = compose("output=bench", "res=32", "frames=12", "deform=translate")
    run(cfg)
    out = Path(cfg.output.dir)
    assert not (out / "noise.h5").exists() and not (out / "noise.gif").exists()
    with xr.open_dataset(out / "metrics.nc", engine="h5netcdf") as metrics:
        measured = np.flatnonzero(np.isfinite(metrics["noise_std"].values))
        assert list(measured) == [0, 10, 11]  # every 10th frame and the last
        assert np.isfinite(metrics["time_s"].values[1:]).all()


def test_jobs_sharing_a_process_do_not_keep_each_others_work_arrays(compose, tmp_path):
    """A sweep's jobs may run in one process: the arrays a kernel keeps between frames
    (hiwyn's upsampled field, grid's record) are freed before a job's memory window
    opens and after it ends, so no job's peak RSS counts another's."""
    from noisewarp.cpu import workspace

    nw.warp(nw.initial_noise(64, 64, 4, seed=0), nw.deform.Rotate(degrees=3.0), method="hiwyn",
            n=8, key=1)  # fmt: skip
    held = workspace.held_bytes()
    assert held >= 64 * 64 * 64 * 4 * 4  # hiwyn's field, n = 8
    cfg = compose("method=grid", "output=bench", *SMALL, output_dir=tmp_path / "grid")
    run(cfg)
    assert workspace.held_bytes() == 0


def test_cli_default_needs_no_input(run_py, tmp_path):
    result = run_py("method=particle", "res=32", "frames=3", f"hydra.run.dir={tmp_path}")
    assert "ms per frame" in result.stdout and "temporal_corr" in result.stdout
    assert (tmp_path / "noise.h5").exists() and (tmp_path / "metrics.nc").exists()
    assert json.loads((tmp_path / "status.json").read_text())["status"] == "complete"
    assert (tmp_path / ".hydra" / "config.yaml").exists()


def test_cli_error_is_reported_and_nonzero(run_py, tmp_path):
    result = run_py("res=0", f"hydra.run.dir={tmp_path}", check=False)
    assert result.returncode != 0
    assert "res must be an integer >= 1, got 0" in result.stderr
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "failed" and "ConfigError" in status["error"]


def _frames_written(path: Path) -> int:
    """frames_written of a stack another process is writing (no HDF5 file lock)."""
    try:
        with h5py.File(path, "r", locking=False) as handle:
            return int(handle.attrs["frames_written"])
    except (OSError, KeyError):
        return -1


@pytest.mark.slow
def test_sigkill_then_same_command_resumes_bit_identically(compose, tmp_path):
    args = ["res=48", "frames=60", "deform=swirl", "output.previews=false", "output.progress=false"]
    killed = tmp_path / "killed"
    child = subprocess.Popen(
        [sys.executable, str(REPO / "run.py"), *args, f"hydra.run.dir={killed}"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stack = killed / "noise.h5"
    deadline = time.monotonic() + 240
    while _frames_written(stack) < 4:
        assert child.poll() is None, f"run.py ended early:\n{child.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "run.py made no progress"
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stderr.close()
    written = stack_attrs(stack)["frames_written"]
    assert 4 <= written < 60, written
    assert stack_attrs(stack)["complete"] == 0

    rerun = subprocess.run(
        [sys.executable, str(REPO / "run.py"), *args, f"hydra.run.dir={killed}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resuming {stack} after frame {written - 1}" in rerun.stdout + rerun.stderr
    assert stack_attrs(stack)["complete"] == 1

    uninterrupted = compose(*args[:-1], output_dir=tmp_path / "uninterrupted")
    run(uninterrupted)
    reference = Path(uninterrupted.output.dir) / "noise.h5"
    np.testing.assert_array_equal(read_frames(stack), read_frames(reference))
    with (
        xr.open_dataset(stack, engine="h5netcdf") as a,
        xr.open_dataset(reference, engine="h5netcdf") as b,
    ):
        for name in ("fresh_pixels", "area_mean", "area_max"):
            np.testing.assert_array_equal(a[name].values, b[name].values)


@pytest.mark.slow
def test_multirun_survives_a_failing_job_and_collect_reports_it(run_py, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_py(
        "-m",
        "res=0,32",
        "frames=3",
        "deform=translate,rotate",
        "output.previews=false",
        f"hydra.sweep.dir={sweep}",
        check=False,
    )
    # Every job ran; the sweep says which failed and exits non-zero.
    assert result.returncode == 1, result.stderr[-3000:]
    assert "run failed" in result.stdout + result.stderr  # logged, not fatal
    assert "2 of 4 jobs of the sweep" in result.stderr and "res must be an integer" in result.stderr
    merged, records = collect(sweep, sweep / "collected.nc")
    statuses = {(r.coords["res"], r.coords["deform"]): r.status for r in records}
    assert statuses[(32, "rotate")] == "complete"
    assert statuses[(0, "rotate")] == "failed"
    assert "res must be an integer" in next(r.error for r in records if r.status == "failed")
    with xr.open_dataset(sweep / "collected.nc", engine="h5netcdf") as ds:
        assert set(ds["status"].dims) == {"warp_method", "deform", "res"}
        where = ds["status"].sel(deform="rotate", warp_method="particle")
        assert where.sel(res=32).item() == "complete"
        assert where.sel(res=0).item() == "failed"
        assert np.isnan(ds["noise_std"].sel(res=0).values).all()
        assert np.isfinite(ds["noise_std"].sel(res=32).values).all()
    # The command-line entry point.
    cli = subprocess.run(
        [sys.executable, "-m", "noisewarp.collect", str(sweep), "--strict"],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 1 and "failed" in cli.stderr and "2 of 4 runs" in cli.stderr


def test_collect_tolerates_partial_and_unreadable_runs(compose, tmp_path):
    sweep = tmp_path / "sweep"
    for res in (32, 48):
        run(
            compose(
                f"res={res}", "frames=3", "output.previews=false", output_dir=sweep / f"res={res}"
            )
        )
    # A run killed mid-way: a stack with 1 of 3 frames, no metrics.
    partial = sweep / "res=64"
    partial.mkdir()
    cfg = compose("res=64", "frames=3", output_dir=partial)
    (partial / ".hydra").mkdir()
    (partial / ".hydra" / "config.yaml").write_text(build_spec(cfg).config_yaml)
    from noisewarp.io import StackWriter

    with StackWriter(partial / "noise.h5", (3, 4, 64, 64), {}) as writer:
        writer.write(0, np.zeros((64, 64, 4), np.float32))
    # A damaged metrics file.
    broken = sweep / "res=80"
    broken.mkdir()
    (broken / "metrics.nc").write_bytes(b"garbage")
    merged, records = collect(sweep)
    by_status = {r.status for r in records}
    assert by_status == {"complete", "incomplete", "unreadable"}
    incomplete = next(r for r in records if r.status == "incomplete")
    assert "1 of 3 frames" in incomplete.error and incomplete.coords["res"] == 64
    assert list(merged["res"].values[:2]) == [32, 48]
    assert (merged["status"].sel(res=[32, 48]) == "complete").all()


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_sweep_with_launcher(run_py, tmp_path, launcher):
    plugin = {
        "joblib": "hydra_plugins.hydra_joblib_launcher",
        "submitit_local": "hydra_plugins.hydra_submitit_launcher",
    }[launcher]
    pytest.importorskip(plugin, reason="pip install -e '.[experiments]'")
    sweep = tmp_path / launcher
    extra = (
        ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else ["hydra.launcher.timeout_min=10"]
    )
    run_py(
        "-m",
        f"hydra/launcher={launcher}",
        *extra,
        "res=32,48",
        "frames=3",
        "deform=translate",
        "output.previews=false",
        f"hydra.sweep.dir={sweep}",
        timeout=400,
    )
    merged, records = collect(sweep)
    assert [r.status for r in records] == ["complete", "complete"]
    for record in records:
        assert stack_attrs(record.path / "noise.h5")["complete"] == 1
    assert merged.sizes["res"] == 2 and np.isfinite(merged["noise_std"].values).all()


def test_collect_reports_duplicate_runs(compose, tmp_path):
    sweep = tmp_path / "sweep"
    for name in ("a", "b"):
        run(compose("res=32", "frames=2", "output.previews=false", output_dir=sweep / name))
    merged, records = collect(sweep)
    assert sorted(r.status for r in records) == ["complete", "duplicate"]
    duplicate = next(r for r in records if r.status == "duplicate")
    assert "duplicate of" in duplicate.error
    assert merged.sizes["res"] == 1


def test_flow_colour_wheel_is_hsv_with_full_saturation():
    """flow_to_rgb: hue the direction content moves (atan2(-dy, -dx)), value the speed over
    the 99th percentile; checked against matplotlib's independent hsv_to_rgb."""
    from matplotlib.colors import hsv_to_rgb

    from noisewarp.preview import flow_to_rgb

    flow = np.random.default_rng(3).standard_normal((40, 50, 2)).astype(np.float32) * 4
    rgb = flow_to_rgb(flow)
    dx, dy = flow[..., 0].astype(np.float64), flow[..., 1].astype(np.float64)
    speed = np.hypot(dx, dy)
    hsv = np.stack([(np.arctan2(-dy, -dx) / (2 * np.pi)) % 1.0, np.ones_like(speed),
                    np.clip(speed / np.percentile(speed, 99), 0, 1)], axis=-1)  # fmt: skip
    expected = np.rint(hsv_to_rgb(hsv) * 255)
    assert rgb.dtype == np.uint8 and np.abs(rgb - expected).max() <= 1
    # Content moving right (backward flow pointing left) is red; still pixels are black.
    still_and_right = flow_to_rgb(np.array([[[0.0, 0.0], [-2.0, 0.0]]]), scale=2.0)
    np.testing.assert_array_equal(still_and_right[0], [[0, 0, 0], [255, 0, 0]])


def test_previews_are_bounded_and_show_the_motion(tmp_path):
    from noisewarp.preview import PreviewRecorder, noise_to_uint8

    values = noise_to_uint8(nw.initial_noise(64, 64, 4, seed=0))
    assert values.shape == (64, 64, 3) and values.dtype == np.uint8
    counts = np.bincount(values.ravel() // 32, minlength=8)  # Phi(x): uniform grey levels
    assert counts.min() > 0.8 * counts.mean()
    shift = nw.deform.get_deformation("translate", cols=1.0)
    recorder = PreviewRecorder(48, 48, frames=100, size=32, max_gif_frames=10)
    for index in range(100):
        recorder.add(index, nw.initial_noise(48, 48, 1, seed=index), shift.map(48, 48))
    assert len(recorder.noise) <= 10 + 4  # GIF frames plus the PNG frames
    # The checkerboard is carried along: content moves one column right per frame.
    moving = PreviewRecorder(48, 48, frames=9, size=32, max_gif_frames=9)
    for index in range(9):
        moving.add(index, nw.initial_noise(48, 48, 1, seed=index), shift.map(48, 48))
    first, later = moving.motion[0][..., 0], moving.motion[5][..., 0]
    np.testing.assert_array_equal(later[:, 5:], first[:, :-5])
    assert len(np.unique(first)) == 2  # a two-tone checkerboard
    paths = recorder.save(tmp_path)
    assert {p.name for p in paths} == {"frames.png", "noise.gif", "side_by_side.gif"}
    from PIL import Image

    with Image.open(tmp_path / "noise.gif") as gif:
        assert gif.n_frames == len(recorder.gif_frames)


def test_motion_preview_covers_the_whole_frame_where_the_coarse_grid_stops_short():
    """Frames larger than the coarse grid (300 px wide: every 3rd pixel, last node at row
    126.5 of 128): at frame 0 nothing is "entered after frame 0" (grey), edge rows included;
    a pan marks grey the columns that entered, to within a grid cell per step."""
    from noisewarp.preview import PreviewRecorder

    still = PreviewRecorder(128, 300, frames=1)
    still.add(0, np.zeros((128, 300, 3), np.float32))
    assert not (still.motion[0] == 128).all(-1).any()
    shift = nw.deform.get_deformation("translate", cols=4.0)
    pan = PreviewRecorder(128, 300, frames=3, size=300)
    for index in range(3):
        pan.add(index, np.zeros((128, 300, 3), np.float32), shift.map(128, 300))
    grey = (pan.motion[2] == 128).all(-1)  # 8 columns entered, blurred by a grid cell a step
    assert grey[:, :8].all() and not grey[:, 8 + 2 * pan.stride :].any()


# ------------------------------------------------------------------------------ real input


def test_video_run_on_the_bundled_clip(compose, tmp_path):
    """deform=video: the clip's estimated flow moves the noise; frames stay white and carry
    noise along the motion; previews show the video beside its flow and the noise."""
    cfg = compose("deform=video", "res=48", "frames=6", "method=particle")
    summary = run(cfg)
    out = Path(cfg.output.dir)
    assert (summary["height"], summary["width"]) == (27, 48)  # the clip's 16:9, longer side 48
    for name in ("video_preview.mp4", "video_preview.gif", "noise.h5"):
        assert (out / name).is_file(), name
    assert (out.parent / "flows.h5").is_file()  # cached beside the run, for its siblings
    with xr.open_dataset(out / "metrics.nc", engine="h5netcdf") as metrics:
        assert (metrics["temporal_corr"].values[1:] > 0.3).all()
        assert metrics["deform"].item() == "video:bigbuckbunny"
    # A rerun reads the cached flows and resumes nothing new: the same stack.
    first = read_frames(out / "noise.h5")
    run(compose("deform=video", "res=48", "frames=6", "method=particle", "output.overwrite=true"))
    np.testing.assert_array_equal(read_frames(out / "noise.h5"), first)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (("deform.path=/nonexistent/clip.mp4",), "clip.mp4"),
        (("frames=500",), "bigbuckbunny.mp4"),
        (("deform.clip=cockatoo", "frames=500"), "cockatoo.mp4"),
        (("deform.clip=bunny",), "deform.clip=bunny is not a bundled clip; bundled: bigbuckbunny"),
        (("+deform.params.degrees=3",), "deform=video has no setting params"),
        (("deform.estimator=magic",), "valid: dis"),
        (("deform.latent_factor=0",), "latent_factor"),
        (("deform.latent_factor=1000",), "latent_factor=1000 leaves no noise pixel"),
        (("deform.settings=fast",), "deform.settings must be a mapping"),
        (("deform.estimator=farneback", "deform.settings={winsize: 0}"), "winsize must be"),
    ],
)
def test_video_config_errors_name_the_problem(compose, overrides, message):
    from noisewarp.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        build_spec(compose("deform=video", "res=32", *overrides))


def test_nan_in_a_flow_file_names_file_and_frame(compose, tmp_path):
    """A NaN in flow field 3 stops the run there, naming the file and the step; frames
    before it are complete and resumable."""
    flow = np.zeros((6, 12, 16, 2), np.float32)
    flow[..., 0] = 0.4
    flow[3, 5, 7, 1] = np.nan
    path = tmp_path / "flows.npy"
    np.save(path, flow)
    cfg = compose("deform=flow", f"deform.path={path}", "frames=7")
    with pytest.raises(ValueError, match=r"flows\.npy.*frame 3"):
        run(cfg)
    assert stack_attrs(Path(cfg.output.dir) / "noise.h5")["frames_written"] == 4


@pytest.mark.parametrize("kind", ["npy", "h5", "flo"])
def test_one_flow_field_repeats_at_every_step(compose, tmp_path, kind):
    """A single [H, W, 2] field (.npy, an HDF5 dataset in a group, a .flo) moves every step
    alike: the run has the frames asked, each the same warp of the one before."""
    field = np.zeros((12, 16, 2), np.float32)
    field[..., 0] = 0.5  # backward flow (dx, dy)
    path = tmp_path / f"one.{kind}"
    extra = []
    if kind == "npy":
        np.save(path, field)
    elif kind == "h5":
        with h5py.File(path, "w") as handle:
            handle.create_dataset("flows/backward", data=field)
        extra = ["deform.dataset=flows/backward"]
    else:
        nw.flow.write_flo(path, field)
    cfg = compose("deform=flow", f"deform.path={path}", "frames=4", *extra)
    summary = run(cfg)
    assert summary["frames"] == 4
    assert not any("asked" in note for note in summary.get("warnings", []))
    tmap = nw.flow.map_from_flow(field.astype(np.float64))
    expected = reference_frames(12, 16, 4, 4, 0, tmap)
    np.testing.assert_array_equal(read_frames(Path(cfg.output.dir) / "noise.h5"), expected)


def test_an_hdf5_group_is_not_a_flow_dataset(compose, tmp_path):
    from noisewarp.config import ConfigError

    path = tmp_path / "flows.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("flows/backward", data=np.zeros((12, 16, 2)))
    with pytest.raises(ConfigError, match=r"'flows' is a group, not a dataset"):
        build_spec(compose("deform=flow", f"deform.path={path}", "deform.dataset=flows"))


def test_noise_blend_trades_coherence_for_variety(compose, tmp_path):
    """noise.blend=g: every frame stays white; the correlation along the motion drops by
    sqrt(1 - g^2) and the run's metric follows it; g = 0 is the plain run, bit for bit;
    an interrupted blended run resumes bit-identically."""
    base = ("deform=rotate", "res=64", "frames=6")
    plain = compose(*base, output_dir=tmp_path / "plain")
    zero = compose(*base, "noise.blend=0.0", output_dir=tmp_path / "zero")
    half = compose(*base, "noise.blend=0.5", output_dir=tmp_path / "half")
    for cfg in (plain, zero, half):
        run(cfg)
    frames = {name: read_frames(tmp_path / name / "noise.h5") for name in ("plain", "zero", "half")}
    np.testing.assert_array_equal(frames["plain"], frames["zero"])
    assert not np.array_equal(frames["plain"][1:], frames["half"][1:])
    for frame in frames["half"]:
        nw.metrics.assert_white_noise(np.moveaxis(frame, 0, -1))
    with (
        xr.open_dataset(tmp_path / "plain" / "metrics.nc", engine="h5netcdf") as first,
        xr.open_dataset(tmp_path / "half" / "metrics.nc", engine="h5netcdf") as second,
    ):
        ratio = second["temporal_corr"].values[1:] / first["temporal_corr"].values[1:]
        np.testing.assert_allclose(ratio, np.sqrt(0.75), atol=0.03)
        expected = second["expected_carried_variance"].values[1:]
        np.testing.assert_allclose(expected, 0.75 * first["expected_carried_variance"].values[1:])
        np.testing.assert_allclose(second["carried_variance"].values[1:], expected, atol=0.03)
    # Interrupt after frame 2 and rerun: the same frames.
    path = tmp_path / "half" / "noise.h5"
    with h5py.File(path, "r+") as handle:
        handle.attrs.modify("frames_written", np.int64(3))
        handle.attrs.modify("complete", np.int64(0))
    run(half)
    np.testing.assert_array_equal(read_frames(path), frames["half"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("seed=18446744073709551616",), "seed must be below 2"),
        (("method=hiwyn", "method.options.n=0"), "n must be a positive integer"),
    ],
)
def test_out_of_range_values_are_config_errors(compose, overrides, message):
    from noisewarp.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        build_spec(compose("deform=rotate", *overrides))


def test_without_a_stack_another_configs_metrics_are_not_replaced(compose, tmp_path):
    out = tmp_path / "run"
    base = ("deform=translate", "res=16", "frames=2", "output.stack=null")
    run(compose(*base, output_dir=out))
    before = (out / "metrics.nc").read_bytes()
    with pytest.raises(StackMismatchError, match="metrics of another run configuration"):
        run(compose(*base, "seed=7", output_dir=out))
    assert (out / "metrics.nc").read_bytes() == before
    run(compose(*base, output_dir=out))  # the same configuration reruns
    run(compose(*base, "seed=7", "output.overwrite=true", output_dir=out))


def test_collect_does_not_take_a_killed_reruns_metrics_as_complete(compose, tmp_path):
    """A rerun killed before it wrote its own metrics.nc leaves the earlier run's beside a
    stack that is not theirs: collect reports the run incomplete, not complete."""
    root = tmp_path / "sweep"
    run(compose("deform=translate", "res=16", "frames=3", output_dir=root / "a"))
    (root / "a" / "status.json").write_text(json.dumps({"status": "complete"}))
    stack = root / "a" / "noise.h5"
    with h5py.File(stack, "r+") as handle:  # as a longer rerun leaves it when killed
        handle.attrs.modify("complete", np.int64(0))
    _, records = collect(root, quiet=True)
    assert [(r.status, "earlier run" in r.error) for r in records] == [("incomplete", True)]
    with h5py.File(stack, "r+") as handle:  # finished, but with another configuration
        handle.attrs.modify("complete", np.int64(1))
        identity = json.loads(handle.attrs["identity"])
        handle.attrs.modify("identity", json.dumps({**identity, "seed": 9}, sort_keys=True))
    _, records = collect(root, quiet=True)
    assert [(r.status, "another configuration" in r.error) for r in records] == [
        ("incomplete", True)
    ]


def test_noise_blend_out_of_range_is_a_config_error(compose):
    from noisewarp.config import ConfigError

    with pytest.raises(ConfigError, match=r"noise.blend must be a number in \[0, 1\]"):
        build_spec(compose("deform=rotate", "noise.blend=1.5"))


def test_collect_draws_a_contact_sheet_with_a_column_per_method(compose, tmp_path):
    from PIL import Image, ImageDraw

    sweep = tmp_path / "sweep"
    flo = Path(nw.__file__).parent / "data" / "swirl_forward_32x48.flo"  # a long label
    for method in ("fixed", "particle"):
        run(compose("deform=flow", f"deform.path={flo}", "deform.direction=forward",
                    "frames=4", f"method={method}", output_dir=sweep / method))  # fmt: skip
    collect(sweep, sweep / "collected.nc", quiet=True)
    sheet = np.asarray(Image.open(sweep / "contact_sheet.png").convert("RGB"))
    tall, wide, gap, header = 64, 96, 4, 16  # the 32 x 48 frames shown twice as large
    label = sheet.shape[1] - 2 * (wide + gap)  # as wide as the longest row label, not cut
    longest = "flow:swirl_forward_32x48 second"
    assert label >= ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(longest)
    assert sheet.shape[0] == header + 3 * (tall + gap)

    def tile(row, column):
        top, left = header + row * (tall + gap), label + column * (wide + gap)
        return sheet[top : top + tall, left : left + wide]

    # Columns in method order (fixed, particle); rows first, second, last sample.
    np.testing.assert_array_equal(tile(0, 0), tile(0, 1))  # the same initial noise
    assert not np.array_equal(tile(2, 0), tile(2, 1))  # fixed stays, particle moves
    assert tile(2, 0).std() > 30  # noise, not an empty tile
    # A method header wider than its column is shortened in the middle, both ends kept.
    from noisewarp.preview import _fit

    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    short = _fit(draw, "hiwyn(n=8,interpolation=bilinear)", 100)
    assert short.startswith("hiwyn") and short.endswith("r)") and "..." in short
    assert draw.textlength(short) <= 100
