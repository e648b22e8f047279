"""Merge a sweep's runs into one xarray Dataset: ``python -m noisewarp.collect SWEEP_DIR``.

Every run directory under ``SWEEP_DIR`` (one with ``.hydra/config.yaml``, ``metrics.nc``
or ``status.json``) contributes its ``metrics.nc``. The result has dims
(method, deform, res, frame), plus any other setting that varies across the runs
(channels, seed, frames, backend, backend_threads, ...), and a ``status`` variable
per run: ``complete``, ``failed`` (the job raised; ``error`` says why), ``incomplete``
(killed or still running: the stack holds fewer frames than asked) or ``unreadable``.
Failed and incomplete runs are reported, never fatal; their metrics are NaN.

Written as ``SWEEP_DIR/collected.nc`` (netCDF, engine h5netcdf) unless ``-o`` says
otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["RunRecord", "find_runs", "collect", "main"]

BASE_DIMS = ("method", "deform", "res")
# Config keys folded into a label or a base dim, or that do not change the results.
_NOT_DIMS = ("method", "deform", "res", "output", "hydra")
_PER_RUN = ("height", "width", "frames")  # scalar coords of a run, kept as variables


@dataclass
class RunRecord:
    """What collect found in one run directory."""

    path: Path
    status: str
    coords: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
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


def _coords_from_config(config: Mapping) -> dict:
    """method / deform labels and res of a run that left no metrics (e.g. it failed)."""
    from noisewarp.experiment import deform_label, method_label

    method = config.get("method") or {}
    deform = config.get("deform") or {}
    coords = {}
    if method.get("name"):
        coords["method"] = method_label(method["name"], method.get("options") or {})
    if deform.get("name") == "flow":
        coords["deform"] = f"flow:{Path(str(deform.get('path'))).stem}"
    elif deform.get("name") == "video":
        from noisewarp.motion import video_label

        coords["deform"] = video_label(deform.get("path"))
    elif deform.get("name"):
        coords["deform"] = deform_label(deform["name"], deform.get("params") or {})
    if isinstance(config.get("res"), int):
        coords["res"] = config["res"]
    return coords


def _read_run(run: Path, metrics_file: str = "metrics.nc") -> RunRecord:
    import xarray as xr

    from noisewarp.io import StackError, stack_attrs

    status_path = run / "status.json"
    status = {}
    if status_path.exists():
        try:
            status = json.loads(status_path.read_text())
        except ValueError:
            status = {"status": "unreadable", "error": f"{status_path} is not JSON"}
    dataset, error = None, status.get("error", "")
    metrics = run / metrics_file
    if metrics.exists():
        try:
            with xr.open_dataset(metrics, engine="h5netcdf") as handle:
                dataset = handle.load()
        except Exception as exc:  # a damaged file is reported, not fatal
            error = f"cannot read {metrics}: {exc}"
    record = RunRecord(run, "complete", error=error)
    config = _config(run, dataset)
    record.settings = {
        k: v
        for k, v in _flatten(config).items()
        if not k.startswith(_NOT_DIMS) and isinstance(v, (int, float, str))
    }
    if dataset is not None and status.get("status", "complete") == "complete":
        record.dataset = dataset
        record.coords = {k: dataset.coords[k].item() for k in BASE_DIMS if k in dataset.coords}
        for key in ("channels", "seed"):
            if key in dataset.coords:
                record.settings[key] = dataset.coords[key].item()
        return record
    record.coords = _coords_from_config(config)
    if status.get("status") in ("failed", "interrupted"):
        record.status = "failed"
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
            except StackError as exc:
                record.status, record.error = "unreadable", str(exc)
        else:
            record.error = "no metrics.nc and no stack (killed or still running)"
    return record


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
        The merged metrics with dims (method, deform, res, [other varying settings],
        frame, ...) and a ``status`` / ``error`` per run; and what was found in each
        run directory.
    """
    import xarray as xr

    records = [_read_run(run, metrics_file) for run in find_runs(sweep_dir)]
    if not records:
        raise FileNotFoundError(f"no runs (metrics.nc, status.json or .hydra/) under {sweep_dir}")
    # Dims: the base ones, plus every other setting that differs between runs.
    known = [r for r in records if r.settings]  # runs whose config could be read
    keys = sorted({k for r in known for k in r.settings})
    varying = [k for k in keys if len({repr(r.settings.get(k)) for r in known}) > 1]
    dims = [*BASE_DIMS, *(k.replace(".", "_") for k in varying)]
    for record in known:
        for key in varying:
            record.coords[key.replace(".", "_")] = record.settings.get(key, "")
    seen: dict[tuple, RunRecord] = {}
    for record in records:
        missing = [d for d in dims if d not in record.coords]
        if missing:  # nothing says where it belongs: reported only
            if record.status == "complete":
                record.status = "unreadable"
            record.error = f"{record.error} (no {', '.join(missing)} known)".strip()
            continue
        key = tuple(record.coords[d] for d in dims)
        other = seen.get(key)
        if other is not None:
            # Two runs at the same coordinates: keep the complete / newer one, report both.
            def rank(r: RunRecord) -> tuple:
                return (r.status == "complete", r.path.stat().st_mtime)

            keep, drop = sorted([record, other], key=rank, reverse=True)
            where = dict(zip(dims, key, strict=True))
            drop.error = f"duplicate of {keep.path} at {where}; ignored"
            drop.status = "duplicate"
            seen[key] = keep
        else:
            seen[key] = record

    placed = list(seen.values())
    if not placed:
        raise FileNotFoundError(
            f"no run under {sweep_dir} says what it ran:\n" + format_report(records, dims)
        )
    parts = []
    for record in placed:
        if record.status != "complete":
            continue
        dataset = record.dataset.drop_vars([d for d in dims if d in record.dataset.coords])
        dataset = dataset.reset_coords([k for k in _PER_RUN if k in dataset.coords])
        dataset = dataset.drop_vars([k for k in ("channels", "seed") if k in dataset.coords])
        dataset.attrs = {}
        parts.append(
            dataset.expand_dims({"run": 1}).assign_coords(
                {d: ("run", [record.coords[d]]) for d in dims}
            )
        )
    status = xr.Dataset(
        {
            "status": ("run", [r.status for r in placed]),
            "error": ("run", [r.error for r in placed]),
            "run_dir": ("run", [str(r.path) for r in placed]),
        },
        coords={d: ("run", [r.coords[d] for r in placed]) for d in dims},
    )
    status = status.set_index(run=dims).unstack("run")
    if parts:
        merged = xr.concat(
            parts,
            dim="run",
            join="outer",
            combine_attrs="drop",
            data_vars="all",
            coords="different",
            compat="equals",
        )
        merged = merged.set_index(run=dims).unstack("run")
        merged = xr.merge([merged, status], join="outer", compat="no_conflicts")
    else:
        merged = status
    merged["status"] = merged["status"].fillna("").astype(str)
    merged["error"] = merged["error"].fillna("").astype(str)
    merged["run_dir"] = merged["run_dir"].fillna("").astype(str)
    merged = merged.transpose(*dims, ...)
    for variable in merged.variables.values():
        variable.encoding = {}  # unstacking made integers float (NaN where a run is missing)
    from noisewarp import __version__

    merged.attrs.update(
        {
            "title": "noisewarp sweep",
            "sweep_dir": str(Path(sweep_dir).resolve()),
            "runs_complete": sum(r.status == "complete" for r in records),
            "runs_total": len(records),
            "noisewarp_version": __version__,
        }
    )
    if output is not None:
        output = Path(output)
        tmp = output.with_name(output.name + ".tmp")
        merged.to_netcdf(tmp, engine="h5netcdf")
        tmp.replace(output)
        from noisewarp.preview import contact_sheet

        try:
            contact_sheet(merged, output.with_name("contact_sheet.png"))
        except ImportError as error:  # Pillow is optional
            print(f"collect: contact sheet skipped ({error})", file=sys.stderr)
    if not quiet:
        print(format_report(records, dims), file=sys.stderr)
    return merged, records


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
    default = (
        "collected.nc" if args.file == "metrics.nc" else f"collected_{Path(args.file).stem}.nc"
    )
    output = Path(args.output) if args.output else Path(args.sweep_dir) / default
    try:
        merged, records = collect(args.sweep_dir, output, metrics_file=args.file)
    except FileNotFoundError as error:
        print(f"collect: {error}", file=sys.stderr)
        return 2
    sizes = ", ".join(f"{k}={v}" for k, v in merged.sizes.items())
    print(f"collect: wrote {output} ({sizes})")
    if args.strict and any(r.status not in ("complete", "duplicate") for r in records):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
