"""A collected sweep read the way docs/outputs.md and the README tell an analyst to:
every dim selectable with ``ds.sel(name=value)``, no name shadowing a Dataset method,
options as coordinates, attributes and units kept, NaN for "not applicable", height
and width per run, and the sample crops kept apart from the metrics table."""

from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from noisewarp.collect import collect, open_collected
from noisewarp.experiment import build_spec, run

REPO = Path(__file__).resolve().parents[1]
FLO = REPO / "noisewarp" / "data" / "swirl_forward_32x48.flo"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, compose_any):
    """grid and hiwyn (n = 2, 4) on rotate, particle on a forward .flo and on a one-field
    .npy stack asked for more frames than it has, and a job that failed: collected."""
    compose_config = compose_any
    root = tmp_path_factory.mktemp("sweep")
    common = ("frames=3", "output.previews=false")
    runs = {
        "grid": ("method=grid", "deform=rotate", "res=24"),
        "hiwyn2": ("method=hiwyn", "method.options.n=2", "deform=rotate", "res=24"),
        "hiwyn4": ("method=hiwyn", "method.options.n=4", "deform=rotate", "res=24"),
        "flo": ("deform=flow", f"deform.path={FLO}", "deform.direction=forward"),
    }
    for name, overrides in runs.items():
        run(compose_config(*common, *overrides, output_dir=root / name))
    flows = np.zeros((1, 16, 20, 2), np.float32)
    flows[..., 0] = 0.5
    np.save(root / "one.npy", flows)
    run(compose_config(*common, "deform=flow", f"deform.path={root / 'one.npy'}",
                       output_dir=root / "npy"))  # fmt: skip
    failed = root / "failed"
    cfg = compose_config(*common, "method=particle", "deform=swirl", "res=24", output_dir=failed)
    (failed / ".hydra").mkdir(parents=True)
    (failed / ".hydra" / "config.yaml").write_text(build_spec(cfg).config_yaml)
    (failed / "status.json").write_text(json.dumps({"status": "failed", "error": "boom"}))
    collect(root, root / "collected.nc", quiet=True)
    return root


def test_every_dim_is_selectable_and_no_name_shadows_the_dataset(sweep):
    with xr.open_dataset(sweep / "collected.nc", engine="h5netcdf") as ds:
        keywords = set(inspect.signature(xr.Dataset.sel).parameters)
        for dim in ds.dims:
            assert dim not in keywords, dim
            first = ds[dim].values[0]
            assert dim not in ds.sel({dim: first}).dims or ds.sel(**{dim: [first]}).sizes[dim] == 1
        shadowing = [n for n in ds.variables if hasattr(xr.Dataset, n)]
        assert shadowing == [], shadowing
        assert {"warp_method", "deform", "frame"} <= set(ds.dims)
        grid = ds.sel(warp_method="grid", deform="rotate")
        assert "warp_method" not in grid.dims
        assert np.isfinite(grid["noise_std"].sel(res=24, n=4)).all()


def test_options_are_coordinates(sweep):
    ds = open_collected(sweep / "collected.nc")
    # n is swept: a dim; grid does not depend on it and appears at every n.
    assert list(ds["n"].values) == [2, 4]
    hiwyn = ds["noise_std"].sel(warp_method="hiwyn", deform="rotate", res=24)
    assert np.isfinite(hiwyn.sel(n=2)).all() and np.isfinite(hiwyn.sel(n=4)).all()
    assert not np.array_equal(hiwyn.sel(n=2).values[1:], hiwyn.sel(n=4).values[1:])
    grid = ds["noise_std"].sel(warp_method="grid", deform="rotate", res=24)
    np.testing.assert_array_equal(grid.sel(n=2), grid.sel(n=4))
    # Parameters the sweep does not vary: coordinates along deform, NaN where absent.
    assert ds["degrees"].dims == ("deform",)
    assert ds["degrees"].sel(deform="rotate") == 2.0
    assert np.isnan(ds["degrees"].sel(deform="flow:one"))
    assert all("(" not in str(label) for label in ds["deform"].values)


def test_attributes_units_and_nan_convention(sweep):
    ds = open_collected(sweep / "collected.nc")
    assert ds["noise_std"].attrs["long_name"].startswith("standard deviation")
    assert ds["time_s"].attrs["units"] == "s"
    assert ds["rss_mb"].attrs["units"] == "MiB"
    assert ds["height"].attrs["units"] == "pixels"
    # hiwyn's "not applicable" counts are NaN, never -1.
    for name, variable in ds.data_vars.items():
        if variable.dtype.kind == "f":
            assert not (variable == -1).any(), name
    assert np.isnan(ds["overclaimed_sources"].sel(warp_method="hiwyn")).all()
    # docs/outputs.md: every numeric variable has a long_name and units (grid's entries too).
    for name, variable in ds.data_vars.items():
        if variable.dtype.kind in "fiu" and name not in ("status",):
            assert {"long_name", "units"} <= set(variable.attrs), name
    assert "samples" in ds.attrs  # this sweep has sample crops; a diffusion sweep has none


def test_height_width_and_res_only_where_set(sweep):
    ds = open_collected(sweep / "collected.nc")
    assert list(ds["res"].values) == [24]  # the flow files' size is no res
    flo = ds.sel(warp_method="particle", deform="flow:swirl_forward_32x48", res=24, n=2)
    assert (flo["height"].item(), flo["width"].item()) == (32, 48)
    assert ds["height"].sel(warp_method="grid", deform="rotate", res=24, n=2).item() == 24
    # The forward flow's inversion residual per frame, in pixels; none elsewhere.
    residual = flo["inversion_residual"].values
    assert np.isnan(residual[0]) and np.isfinite(residual[1]) and residual[1] < 0.1  # one field
    assert ds["inversion_residual"].attrs["units"] == "pixels"
    assert np.isnan(ds["inversion_residual"].sel(deform="rotate")).all()


def test_samples_are_kept_apart_from_the_metrics_table(sweep):
    with xr.open_dataset(sweep / "collected.nc", engine="h5netcdf") as ds:
        assert "sample_noise" not in ds and "sample" not in ds.dims
        assert len(ds.to_dataframe()) == int(np.prod(list(ds.sizes.values())))
    with xr.open_dataset(sweep / "collected.nc", engine="h5netcdf", group="samples") as samples:
        crops = samples["sample_noise"].sel(warp_method="grid", deform="rotate", res=24, n=2)
        # 24 x 24 crops beside the flow run's 32 x 48: padded with NaN.
        assert np.isfinite(crops.isel(sample_y=slice(0, 24), sample_x=slice(0, 24))).all()


def test_failed_runs_and_warnings_are_reported(sweep):
    ds = open_collected(sweep / "collected.nc")
    failed = ds.sel(warp_method="particle", deform="swirl", res=24, n=2)
    assert failed["status"].item() == "failed" and failed["error"].item() == "boom"
    assert np.isnan(failed["noise_std"]).all()
    summary = json.loads((sweep / "npy" / "summary.json").read_text())
    assert summary["frames"] == 2 and "frames=3 asked" in summary["warnings"][0]
    with xr.open_dataset(sweep / "npy" / "metrics.nc", engine="h5netcdf") as metrics:
        assert "holds 1 flow fields" in metrics.attrs["warnings"]


def test_collected_files_of_0_1_are_read_with_a_warning(sweep, tmp_path):
    with xr.open_dataset(sweep / "collected.nc", engine="h5netcdf") as ds:
        old = ds.load().rename({"warp_method": "method", "noise_std": "std"})
    old.to_netcdf(tmp_path / "old.nc", engine="h5netcdf")
    with pytest.warns(DeprecationWarning, match="method, std"):
        upgraded = open_collected(tmp_path / "old.nc")
    assert "noise_std" in upgraded and "warp_method" in upgraded.dims
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        open_collected(sweep / "collected.nc")  # today's files: no warning


def test_runs_reading_one_file_differently_get_cells_of_their_own(tmp_path, compose_any):
    """Runs on one flow file read forward and backward, and on a copy of it under the same
    name elsewhere: the label (flow:<stem>) is the same, deform_direction and deform_path
    tell them apart, so no run is dropped as a duplicate."""
    import shutil

    copy = tmp_path / "elsewhere" / FLO.name
    copy.parent.mkdir()
    shutil.copyfile(FLO, copy)
    runs = {"forward": (FLO, "forward"), "backward": (FLO, "backward"), "copy": (copy, "forward")}
    for name, (path, direction) in runs.items():
        run(compose_any("frames=2", "output.previews=false", "deform=flow",
                        f"deform.path={path}", f"deform.direction={direction}",
                        output_dir=tmp_path / "sweep" / name))  # fmt: skip
    ds, records = collect(tmp_path / "sweep", quiet=True)
    assert sorted(r.status for r in records) == ["complete"] * 3
    assert sorted(ds["deform_direction"].values) == ["backward", "forward"]
    assert sorted(ds["deform_path"].values) == sorted([str(FLO), str(copy)])
    at = ds["temporal_corr"].sel(deform_path=str(FLO))
    forward, backward = (at.sel(deform_direction=d).values for d in ("forward", "backward"))
    assert not np.array_equal(forward, backward)


def test_strict_fails_on_a_run_that_is_not_merged(tmp_path, compose_any):
    """The same config run twice: one cell, the second run `duplicate` (not merged), and
    `collect --strict` exits 1; without the twin it exits 0."""
    import shutil

    from noisewarp.collect import main

    for name in ("a", "b"):
        run(compose_any("frames=2", "res=8", "deform=rotate", "output.previews=false",
                        output_dir=tmp_path / "sweep" / name))  # fmt: skip
    assert main([str(tmp_path / "sweep"), "--strict", "-o", str(tmp_path / "c.nc")]) == 1
    _, records = collect(tmp_path / "sweep", quiet=True)
    assert sorted(r.status for r in records) == ["complete", "duplicate"]
    shutil.rmtree(tmp_path / "sweep" / "b")
    assert main([str(tmp_path / "sweep"), "--strict", "-o", str(tmp_path / "c.nc")]) == 0


def test_a_run_still_writing_its_stack_is_incomplete(tmp_path, compose_any):
    """A stack another process holds open for writing (a run in progress) makes the run
    `incomplete`, not `unreadable`, and a reader is told to wait for that run."""
    import subprocess
    import sys

    from noisewarp.io import StackLockedError, stack_attrs

    directory = tmp_path / "sweep" / "live"
    cfg = compose_any("frames=2", "res=8", "deform=rotate", "output.previews=false",
                      output_dir=directory)  # fmt: skip
    run(cfg)
    (directory / "metrics.nc").unlink()  # as a Hydra job looks before it writes them
    (directory / ".hydra").mkdir()
    (directory / ".hydra" / "config.yaml").write_text(build_spec(cfg).config_yaml)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import h5py, sys, time; f = h5py.File(sys.argv[1], 'a'); "
         "print('open', flush=True); time.sleep(60)", str(directory / "noise.h5")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(StackLockedError, match="a run is writing it"):
            stack_attrs(directory / "noise.h5")
        _, records = collect(tmp_path / "sweep", quiet=True)
        assert [(r.status, r.error) for r in records] == [
            ("incomplete", "a run is writing its stack (still running?)")
        ]
    finally:
        holder.kill()
        holder.wait()


def test_a_setting_only_some_runs_set_is_not_claimed_for_all(tmp_path, compose_any):
    """backend.threads=1 in one run, unset (null) in the other: no scalar coordinate
    backend_threads = 1 for the whole sweep (the unset run used the default)."""
    common = ("frames=2", "res=8", "deform=rotate", "output.previews=false")
    run(compose_any(*common, "method=fixed", output_dir=tmp_path / "sweep" / "a"))
    run(compose_any(*common, "method=particle", "backend.threads=1",
                    output_dir=tmp_path / "sweep" / "b"))  # fmt: skip
    ds, records = collect(tmp_path / "sweep", quiet=True)
    assert [r.status for r in records] == ["complete", "complete"]
    assert "backend_threads" not in ds.coords
