"""Merge a sweep's runs into one xarray Dataset: ``python -m noisewarp.collect SWEEP_DIR``.

Every run directory under ``SWEEP_DIR`` (one with ``.hydra/config.yaml``, ``metrics.nc``
or ``status.json``) contributes its ``metrics.nc``. The layout (``docs/outputs.md``):

- dims ``warp_method`` (method name) and ``deform`` (deformation name, ``flow:<stem>``
  or ``video:<stem>``), ``res`` where a run set it, every other setting that differs
  between runs (``channels``, ``seed``, ``noise_blend``, ...), and ``frame``;
- method options and deformation parameters (``n``, ``degrees``, ...) are coordinates:
  dimensions when a sweep varies them, so ``ds.sel(n=8)`` works (a run without the
  option, grid beside hiwyn, appears at every value), else coordinates along
  ``warp_method`` / ``deform``;
- a ``status`` per run: ``complete``, ``failed`` (the job raised; ``error`` says why),
  ``cancelled`` (SLURM cancelled or timed out the job), ``incomplete`` (killed or still
  running) or ``unreadable``; their metrics are NaN. Failed runs are reported, never
  fatal;
- the sample crops (``sample_noise``) in their own netCDF group ``samples``, so
  ``ds.to_dataframe()`` of the metrics stays one row per frame and run.

Written as ``SWEEP_DIR/collected.nc`` (netCDF, engine h5netcdf) unless ``-o`` says
otherwise; open it with ``xr.open_dataset(path, engine="h5netcdf")`` (metrics) and
``group="samples"`` (crops), or :func:`open_collected`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from noisewarp.metrics._common import DATASET_NAMES

__all__ = ["RunRecord", "find_runs", "collect", "open_collected", "run_coords", "main"]

BASE_DIMS = ("warp_method", "deform")
SAMPLES_GROUP = "samples"
# Dims, variables and coordinates of 0.1 files, readable for one release (DeprecationWarning).
LEGACY_NAMES = {"method": "warp_method", **DATASET_NAMES}
# Config keys that are dims or coordinates of their own, or do not change the results.
_NOT_SETTINGS = ("method", "deform", "res", "output", "hydra")
_SAMPLE_DIMS = ("sample", "channel", "sample_y", "sample_x")
# Names an option or parameter may not take (prefixed with method_ / deform_ instead).
_RESERVED = {"warp_method", "deform", "res", "frame", "frames", "channels", "seed", "height",
             "width", "status", "error", "run_dir", *_SAMPLE_DIMS}  # fmt: skip
# Keys of deform=flow / deform=video that change the motion but not its label (not
# ``cache``): coordinates ``deform_<key>`` where a run sets them; ``deform_path`` also
# tells apart two files of one name (the label is ``video:<stem>``).
_READ_KEYS = {
    "flow": ("path", "direction", "order", "dataset"),
    "video": ("path", "start", "stride", "size", "latent_factor", "estimator", "settings"),
}
_RUN_VARIABLES = {
    "status": "how the run ended: complete, failed, cancelled, incomplete, unreadable, duplicate",
    "error": "why the run is not complete (empty when it is)",
    "run_dir": "the run's directory",
}


@dataclass
class RunRecord:
    """What collect found in one run directory."""

    path: Path
    status: str
    coords: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    owners: dict = field(default_factory=dict)  # option/parameter name -> warp_method/deform
    error: str = ""
    dataset: object = None


def find_runs(sweep_dir: str | Path) -> list[Path]:
    """Run directories below ``sweep_dir`` (itself included), sorted."""
    root = Path(sweep_dir)
    found = set()
    for marker in ("metrics.nc", "status.json", ".hydra/config.yaml"):
        for path in root.glob(f"**/{marker}"):
            run = path.parent.parent if marker.startswith(".hydra") else path.parent
            if ".submitit" not in run.parts:
                found.add(run)
    return sorted(found)


def _flatten(tree: Mapping, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = tuple(value) if isinstance(value, list) else value
    return out


def _config(run: Path, dataset) -> dict:
    """The run's config as plain data: the resolved copy in metrics.nc, else Hydra's."""
    import yaml

    text = dataset.attrs.get("config") if dataset is not None else None
    if text:
        return yaml.safe_load(text) or {}
    path = run / ".hydra" / "config.yaml"
    if path.exists():
        return yaml.safe_load(path.read_text()) or {}
    return {}


def _coordinate_value(value):
    """A config value as a netCDF coordinate value: numbers and strings as they are,
    booleans as 0/1, lists as text."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float, str)):
        return value
    return str(list(value) if isinstance(value, tuple) else value)


def _option_name(owner: str, key: str) -> str:
    """The coordinate name of a method option / deformation parameter: its own, unless
    that shadows a Dataset attribute or another name (then ``method_n``, ``deform_seed``)."""
    import xarray as xr

    if key in _RESERVED or hasattr(xr.Dataset, key) or not key.isidentifier():
        return f"{'method' if owner == 'warp_method' else 'deform'}_{key}"
    return key


def run_coords(config: Mapping) -> tuple[dict, dict]:
    """Where a run sits in a collected sweep, from its config: ``warp_method``, ``deform``,
    ``res`` (only where the run used it: not for flow files, nor for a video sized by
    ``latent_factor``), one entry per method option and deformation parameter, and for a
    flow file or video how it is read (``deform_direction``, ``deform_start``, ...).

    Returns ``(coords, owners)``; ``owners`` maps each option or parameter's coordinate
    name to the dim it belongs to (``warp_method`` or ``deform``).
    """
    from noisewarp.motion import video_label

    method = config.get("method") or {}
    deform = config.get("deform") or {}
    coords, owners = {}, {}
    if method.get("name"):
        coords["warp_method"] = str(method["name"])
    name = deform.get("name")
    if name == "flow":
        coords["deform"] = f"flow:{Path(str(deform.get('path'))).stem}"
    elif name == "video":
        coords["deform"] = video_label(deform.get("path"), deform.get("clip"))
    elif name:
        coords["deform"] = str(name)
    uses_res = name != "flow" and not (name == "video" and deform.get("latent_factor"))
    res = config.get("res")
    if uses_res and isinstance(res, int) and not isinstance(res, bool):
        coords["res"] = res
    for owner, values in (("warp_method", method.get("options")), ("deform", deform.get("params"))):
        for key, value in (values or {}).items():
            coordinate = _option_name(owner, str(key))
            coords[coordinate] = _coordinate_value(value)
            owners[coordinate] = owner
    # How a flow file or video is read changes the motion but not its label: deform_<key>.
    for key in _READ_KEYS.get(name, ()):
        if deform.get(key) is not None:
            coords[f"deform_{key}"] = _coordinate_value(deform[key])
            owners[f"deform_{key}"] = "deform"
    return coords, owners


def _upgrade(dataset, source: str):
    """A 0.1 dataset (dim ``method``, variables ``mean`` / ``std``) with today's names."""
    old = [name for name in LEGACY_NAMES if name in dataset.variables or name in dataset.dims]
    if not old:
        return dataset
    if "warp_method" in dataset.variables:
        old = [name for name in old if name != "method"]
    warnings.warn(
        f"{source} uses the names {', '.join(old)} of noisewarp 0.1; read as "
        f"{', '.join(LEGACY_NAMES[n] for n in old)} (the old names go in the next release)",
        DeprecationWarning,
        stacklevel=3,
    )
    return dataset.rename({name: LEGACY_NAMES[name] for name in old})


def open_collected(path: str | Path, group: str | None = None):
    """Open a collected sweep (the metrics; ``group="samples"`` for the sample crops),
    loaded into memory; files of noisewarp 0.1 are read with today's names."""
    import xarray as xr

    with xr.open_dataset(path, engine="h5netcdf", group=group) as handle:
        dataset = handle.load()
    if group is None and "sample_noise" in dataset:  # 0.1 kept the crops beside the metrics
        dataset = dataset.drop_vars([n for n in dataset.variables if _is_sample(dataset[n])])
    return _upgrade(dataset, str(path))


def _is_sample(variable) -> bool:
    return any(d in _SAMPLE_DIMS for d in variable.dims)


def _samples_of(metrics: Path):
    """The ``samples`` group of a run's metrics.nc (empty for 0.1 files, which kept the
    crops beside the metrics)."""
    import h5py
    import xarray as xr

    with h5py.File(metrics, "r") as handle:
        if SAMPLES_GROUP not in handle:
            return xr.Dataset()
    with xr.open_dataset(metrics, engine="h5netcdf", group=SAMPLES_GROUP) as handle:
        return handle.load()


def _status_file(run: Path) -> dict:
    path = run / "status.json"
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
    except ValueError:
        return {"status": "unreadable", "error": f"{path} is not JSON"}
    if record.get("status") == "refused":
        # A later run stopped before writing anything: the outputs are the earlier run's.
        return record.get("previous") or {"status": "failed", "error": record.get("error", "")}
    return record


def _stale_metrics(run: Path, dataset) -> str:
    """Why the run's metrics are not its stack's (a rerun killed before it wrote its own:
    the stack incomplete, or written with another configuration), or ""."""
    from noisewarp.io import StackError, StackLockedError, stack_attrs

    stack = run / "noise.h5"
    if not stack.exists():
        return ""
    try:
        attrs = stack_attrs(stack)
    except StackLockedError:
        return "a run is writing its stack (still running?): the metrics are an earlier run's"
    except StackError:
        return ""  # reported with the run's other outcomes
    identity = json.loads(attrs.get("identity", "{}"))
    if not attrs.get("complete"):
        return (
            f"stack has {attrs.get('frames_written')} of {identity.get('frames', '?')} frames "
            "and the metrics are an earlier run's (killed or still running)"
        )
    mine = json.loads(dataset.attrs.get("identity", "{}"))
    mine = mine.get("noise", mine)  # diffusion.nc: the noise's identity is one part
    if mine and identity and mine != identity:
        return "the metrics were written with another configuration than the stack"
    return ""


def _read_run(run: Path, metrics_file: str = "metrics.nc") -> RunRecord:
    import xarray as xr

    from noisewarp.io import StackError, StackLockedError, stack_attrs

    status = _status_file(run)
    dataset, error = None, status.get("error", "")
    metrics = run / metrics_file
    if metrics.exists():
        try:
            with xr.open_dataset(metrics, engine="h5netcdf") as handle:
                dataset = handle.load()
            dataset = dataset.merge(_samples_of(metrics), combine_attrs="override")
        except Exception as exc:  # a damaged file is reported, not fatal
            error = f"cannot read {metrics}: {exc}"
    record = RunRecord(run, "complete", error=error)
    config = _config(run, dataset)
    record.coords, record.owners = run_coords(config)
    record.settings = {
        k.replace(".", "_"): _coordinate_value(v)
        for k, v in _flatten(config).items()
        if not k.startswith(_NOT_SETTINGS) and isinstance(v, (int, float, str))
    }
    stale = _stale_metrics(run, dataset) if dataset is not None else ""
    if stale:
        record.status, record.error = "incomplete", stale
        return record
    if dataset is not None and status.get("status", "complete") == "complete":
        with warnings.catch_warnings():  # a 0.1 run's metrics.nc: renamed silently
            warnings.simplefilter("ignore", DeprecationWarning)
            record.dataset = _upgrade(dataset, str(metrics))
        return record
    if status.get("status") in ("failed", "interrupted", "cancelled"):
        record.status = "cancelled" if status["status"] == "cancelled" else "failed"
    elif error:
        record.status = "unreadable"
    else:
        record.status = "incomplete"
        stack = run / "noise.h5"
        if stack.exists():
            try:
                attrs = stack_attrs(stack)
                record.error = (
                    f"stack has {attrs['frames_written']} of "
                    f"{config.get('frames', '?')} frames (killed or still running)"
                )
            except StackLockedError:
                record.error = "a run is writing its stack (still running?)"
            except StackError as exc:
                record.status, record.error = "unreadable", str(exc)
        else:
            record.error = "no metrics.nc and no stack (killed or still running)"
    return record


def _layout(known: list[RunRecord]) -> tuple[list[str], dict, dict]:
    """The sweep's dims, the coordinates along ``warp_method`` / ``deform`` (options and
    parameters the sweep does not vary) and the scalar coordinates (settings it does not
    vary)."""
    keys = sorted({k for r in known for k in (*r.coords, *r.settings)} - set(BASE_DIMS))
    keys.sort(key=lambda k: k != "res")  # res first after the base dims
    dims, along, scalar = [*BASE_DIMS], {}, {}
    for key in keys:
        values = {}  # owner value -> distinct values of key
        for record in known:
            value = record.coords.get(key, record.settings.get(key))
            if value is None:
                continue
            owner = record.owners.get(key)
            group = record.coords.get(owner) if owner else None
            values.setdefault(group, set()).add(repr(value))
        owner = next((r.owners[key] for r in known if key in r.owners), None)
        if key == "res" or any(len(v) > 1 for v in values.values()):
            dims.append(key)
        elif owner is not None:
            along[key] = owner
        elif len(values.get(None, ())) == 1 and all(
            r.settings.get(key) is not None for r in known
        ):  # a setting some runs leave unset (null) is not claimed for all of them
            scalar[key] = next(r.settings.get(key) for r in known if key in r.settings)
    return dims, along, scalar


def _order(value) -> tuple:
    """Numbers in numeric order, then strings."""
    return (isinstance(value, str), value if not isinstance(value, str) else 0, str(value))


def _places(record: RunRecord, dims: list[str], values: dict) -> list[tuple]:
    """The cells of the dims grid a run fills: one, or, for each dim the run has no value
    for (hiwyn's n for a grid run, res for a flow file), one at every value of it."""
    axes = []
    for dim in dims:
        value = record.coords.get(dim, record.settings.get(dim))
        axes.append([value] if value is not None else values[dim])
    return list(itertools.product(*axes))


def collect(
    sweep_dir: str | Path,
    output: str | Path | None = None,
    quiet: bool = False,
    metrics_file: str = "metrics.nc",
):
    """Merge the runs under ``sweep_dir`` into one Dataset; optionally write it to ``output``.

    ``metrics_file`` is the per-run file merged: ``diffusion.nc`` for a ``stage=diffuse``
    sweep (the diffusion stage's per-frame metrics).

    Returns
    -------
    (xarray.Dataset, list[RunRecord])
        The merged metrics with dims (warp_method, deform, [res], [other varying
        settings], frame) and a ``status`` / ``error`` / ``run_dir`` per run (the sample
        crops go to ``output``'s ``samples`` group only); and what was found in each run
        directory.
    """
    import numpy as np
    import xarray as xr

    records = [_read_run(run, metrics_file) for run in find_runs(sweep_dir)]
    if not records:
        raise FileNotFoundError(f"no runs (metrics.nc, status.json or .hydra/) under {sweep_dir}")
    placeable = []
    for record in records:
        missing = [d for d in BASE_DIMS if d not in record.coords]
        if missing:  # nothing says where it belongs: reported only
            if record.status == "complete":
                record.status = "unreadable"
            record.error = f"{record.error} (no {', '.join(missing)} known)".strip()
        else:
            placeable.append(record)
    if not placeable:
        raise FileNotFoundError(
            f"no run under {sweep_dir} says what it ran:\n" + format_report(records, BASE_DIMS)
        )
    dims, along, scalar = _layout(placeable)
    values = {
        d: sorted({r.coords.get(d, r.settings.get(d)) for r in placeable} - {None}, key=_order)
        for d in dims
    }
    seen: dict[tuple, RunRecord] = {}
    for record in placeable:
        for key in _places(record, dims, values):
            other = seen.get(key)
            if other is None or other is record:
                seen[key] = record
                continue

            # Two runs at the same coordinates: keep the complete / newer one, report both.
            def rank(r: RunRecord) -> tuple:
                return (r.status == "complete", r.path.stat().st_mtime)

            keep, drop = sorted([record, other], key=rank, reverse=True)
            drop.error = f"duplicate of {keep.path} at {dict(zip(dims, key, strict=True))}; ignored"
            drop.status = "duplicate"
            seen[key] = keep

    cells = [(key, record) for key, record in seen.items() if record.status != "duplicate"]
    drop_names = {*dims, *along, *scalar, "method", "res", "channels", "seed", "frames"}
    parts = []
    for key, record in cells:
        if record.status != "complete":
            continue
        dataset = record.dataset.drop_vars([n for n in drop_names if n in record.dataset.variables])
        dataset = dataset.reset_coords([n for n in ("height", "width") if n in dataset.coords])
        dataset = dataset.drop_vars([n for n in dataset.coords if n not in dataset.dims])
        dataset.attrs = {}
        parts.append(
            dataset.expand_dims({"run": 1}).assign_coords(
                {d: ("run", [v]) for d, v in zip(dims, key, strict=True)}
            )
        )

    def grid(dataset):
        return dataset.set_index(run=dims).unstack("run")

    status = grid(
        xr.Dataset(
            {
                "status": ("run", [r.status for _, r in cells]),
                "error": ("run", [r.error for _, r in cells]),
                "run_dir": ("run", [str(r.path) for _, r in cells]),
            },
            coords={d: ("run", [key[i] for key, _ in cells]) for i, d in enumerate(dims)},
        )
    )
    if parts:
        merged = xr.concat(parts, dim="run", join="outer", combine_attrs="override",
                           data_vars="all", coords="different", compat="equals")  # fmt: skip
        merged = xr.merge([grid(merged), status], join="outer", compat="no_conflicts",
                          combine_attrs="override")  # fmt: skip
    else:
        merged = status
    for name, variable in list(merged.data_vars.items()):
        if variable.dtype.kind in "OUS":  # text; missing runs "" (netCDF has no NaN text)
            merged[name] = variable.fillna("").astype(str)
    for name, long_name in _RUN_VARIABLES.items():
        merged[name].attrs["long_name"] = long_name
    # Options / parameters the sweep does not vary: coordinates along their owner dim.
    for key, owner in along.items():
        by_owner = {r.coords[owner]: r.coords[key] for r in placeable if key in r.coords}
        labels = merged[owner].values
        column = [by_owner.get(label) for label in labels]
        if all(isinstance(v, (int, float)) or v is None for v in column):
            column = np.array([math.nan if v is None else v for v in column], dtype=np.float64)
        else:
            column = np.array(["" if v is None else str(v) for v in column])
        merged = merged.assign_coords({key: (owner, column)})
    merged = merged.assign_coords(scalar)
    merged = merged.transpose(*dims, ...)
    samples_names = [n for n in merged.data_vars if _is_sample(merged[n])]
    samples = merged[samples_names]
    merged = merged.drop_vars(samples_names)
    merged = merged.drop_dims([d for d in _SAMPLE_DIMS if d in merged.dims])
    for variable in (*merged.variables.values(), *samples.variables.values()):
        variable.encoding = {}  # unstacking made integers float (NaN where a run is missing)
    from noisewarp import __version__

    merged.attrs = {
        "title": "noisewarp sweep",
        "sweep_dir": str(Path(sweep_dir).resolve()),
        "runs_complete": sum(r.status == "complete" for r in records),
        "runs_total": len(records),
        "noisewarp_version": __version__,
        "documentation": "docs/outputs.md in the noisewarp repository",
    }
    if samples.data_vars:
        merged.attrs["samples"] = f"the sample crops are in the netCDF group {SAMPLES_GROUP!r}"
    if output is not None:
        _write(merged, samples, Path(output))
    if not quiet:
        print(format_report(records, dims), file=sys.stderr)
    return merged, records


def _write(merged, samples, output: Path) -> None:
    """The metrics, the ``samples`` group, and ``contact_sheet.png`` beside them."""
    tmp = output.with_name(output.name + ".tmp")
    merged.to_netcdf(tmp, engine="h5netcdf")
    if samples.data_vars:
        samples.to_netcdf(tmp, engine="h5netcdf", group=SAMPLES_GROUP, mode="a")
    tmp.replace(output)
    from noisewarp.preview import contact_sheet

    try:
        contact_sheet(samples, output.with_name("contact_sheet.png"))
    except ImportError as error:  # Pillow is optional
        print(f"collect: contact sheet skipped ({error})", file=sys.stderr)


def format_report(records: list[RunRecord], dims) -> str:
    """One line per run that is not complete, and a count."""
    bad = [r for r in records if r.status != "complete"]
    lines = [
        f"collect: {len(records) - len(bad)} of {len(records)} runs complete "
        f"(dims: {', '.join(dims)})"
    ]
    for record in bad:
        where = ", ".join(f"{k}={v}" for k, v in record.coords.items())
        message = record.error.strip().splitlines()[-1] if record.error.strip() else ""
        lines.append(f"  {record.status:<10} {where}  [{record.path}] {message}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m noisewarp.collect",
        description="Merge a sweep directory's metrics.nc files into one netCDF Dataset.",
    )
    parser.add_argument("sweep_dir", help="a Hydra multirun directory (or any tree of runs)")
    parser.add_argument("-o", "--output", help="output file (default: SWEEP_DIR/collected.nc)")
    parser.add_argument(
        "--file",
        default="metrics.nc",
        help="per-run file to merge (diffusion.nc: a stage=diffuse sweep, written to "
        "collected_diffusion.nc unless -o says otherwise)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 if any run is not complete"
    )
    args = parser.parse_args(argv)
    default = f"collected_{Path(args.file).stem}.nc"
    default = "collected.nc" if args.file == "metrics.nc" else default
    output = Path(args.output) if args.output else Path(args.sweep_dir) / default
    try:
        merged, records = collect(args.sweep_dir, output, metrics_file=args.file)
    except FileNotFoundError as error:
        print(f"collect: {error}", file=sys.stderr)
        return 2
    sizes = ", ".join(f"{k}={v}" for k, v in merged.sizes.items())
    print(f"collect: wrote {output} ({sizes})")
    if args.strict and any(r.status != "complete" for r in records):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
