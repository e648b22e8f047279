"""The diffusion stage's table and side-by-side GIF from a collected sweep.

    python run.py -m stage=diffuse method=random,fixed,nearest,bilinear,hiwyn,grid,particle \
        diffusion.strength=0.3,0.5,0.7 hydra.sweep.dir=multirun/diffusion
    python -m noisewarp.collect multirun/diffusion --file diffusion.nc
    python benchmarks/diffusion_table.py multirun/diffusion/collected_diffusion.nc \
        --gif docs/diffusion_side_by_side.gif

Per method and strength, means over frames 1..T-1: warping error (occlusions masked) and
its ratio to random's and fixed's, over the whole frame and over the moving pixels only
(``noisewarp.diffusion.metrics.MOVING``), texture sticking, quality (fine-detail energy of
the output over the input's), the denoiser ratio (the model's noise-prediction error on the
start over white noise's; whole frame and moving pixels), SSIM to the input at half size,
seconds per frame.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import xarray as xr

ORDER = ("random", "fixed", "nearest", "bilinear", "hiwyn", "grid", "particle")
GIF_COLUMNS = ("random", "fixed", "particle", "grid")


def _strength_dim(dataset) -> str | None:
    return next((d for d in dataset.dims if d.endswith("strength")), None)


def _ratio(value) -> str:
    """Ratios near 1 to three decimals; bilinear noise's runaway variance in powers of ten."""
    value = float(value)
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1e}"


def table(dataset) -> str:
    means = dataset.isel(frame=slice(1, None)).mean("frame").squeeze(drop=True)
    dim = _strength_dim(dataset)
    strengths = means[dim].values if dim else [None]
    present = [str(v) for v in means["warp_method"].values]
    methods = [m for m in ORDER if any(v.startswith(m) for v in present)]
    labels = {m: next(v for v in present if v.startswith(m)) for m in methods}
    lines = [
        "| strength | method | warping error | / random | / fixed | moving: warping error "
        "| / random | / fixed | texture sticking | quality | denoiser ratio "
        "| moving: denoiser ratio | SSIM to input | s per frame |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for strength in strengths:
        at = means.sel({dim: strength}) if dim else means
        for method in methods:
            row = at.sel({"warp_method": labels[method]})
            cells = [str(strength) if strength is not None else "", labels[method]]
            for name in ("warping_error", "warping_error_moving"):
                error = float(row[name])
                random_error = float(at[name].sel({"warp_method": labels["random"]}))
                fixed_error = float(at[name].sel({"warp_method": labels["fixed"]}))
                cells += [f"{error:.5f}", f"{error / random_error:.2f}"]
                cells.append(f"{error / fixed_error:.2f}")
            lines.append(
                f"| {' | '.join(cells)} "
                f"| {float(row['texture_sticking']):+.3f} | {float(row['quality']):.3f} "
                f"| {_ratio(row['denoiser_ratio'])} | {_ratio(row['denoiser_ratio_moving'])} "
                f"| {float(row['ssim']):.3f} | {float(row['time_s']):.2f} |"
            )
    reference = float(means["input_warping_error"].mean())
    lines.append(f"\nThe input video's own warping error (the flow's floor): {reference:.5f}")
    return "\n".join(lines)


def input_frames(run_dir: Path, count: int, height: int, width: int):
    """The video frames a run edited, at its output size (``height`` x ``width``), read
    from the video its ``diffusion.nc`` names; None where the run had no video (a
    synthetic motion). A video changed since the run is an error, not a wrong column."""
    import json

    from noisewarp.diffusion.images import resized
    from noisewarp.video import open_video

    with xr.open_dataset(run_dir / "diffusion.nc", engine="h5netcdf") as stored:
        motion = json.loads(stored.attrs["identity"])["noise"]["motion"]
    if motion.get("name") != "video":
        return None
    reader = open_video(motion["path"], start=motion["start"], stride=motion["stride"],
                        frames=count, size=tuple(motion["video_size"]))  # fmt: skip
    if reader.content_hash() != motion["sha256"]:
        raise ValueError(f"{motion['path']} changed since the run in {run_dir}")
    return [resized(frame, height, width) for frame in reader]


def side_by_side_gif(dataset, path: Path, strengths, fps: float = 12.5) -> Path:
    """input | random | fixed | particle | grid, one row per strength, from the runs' PNGs;
    the input column is the video the runs edited (omitted for a synthetic motion)."""
    from PIL import Image

    from noisewarp.video import write_video

    dim = _strength_dim(dataset)
    runs = dataset["run_dir"].squeeze(drop=True)
    names = [str(v) for v in runs["warp_method"].values]
    rows = []
    for strength in strengths:
        at = runs.sel({dim: strength}) if dim else runs
        labels = [next(v for v in names if v.startswith(m)) for m in GIF_COLUMNS]
        runs_at = [at.sel({"warp_method": label}).item() for label in labels]
        rows.append([Path(str(run)) / "frames" for run in runs_at])
    count = dataset.sizes["frame"]
    height, width = np.asarray(Image.open(rows[0][0] / "00000.png")).shape[:2]
    inputs = input_frames(rows[0][0].parent, count, height, width)

    def join(tiles, axis):
        shape = list(tiles[0].shape)
        shape[axis] = 2
        gap = np.full(shape, 255, np.uint8)
        return np.concatenate([x for tile in tiles for x in (tile, gap)][:-1], axis=axis)

    def frames():
        for index in range(count):
            lines = []
            for folders in rows:
                tiles = [inputs[index]] if inputs is not None else []
                tiles += [np.asarray(Image.open(f / f"{index:05d}.png")) for f in folders]
                lines.append(join(tiles, axis=1))
            yield join(lines, axis=0)

    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, frames(), fps=fps)
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("collected", type=Path)
    parser.add_argument("--gif", type=Path, help="write the side-by-side GIF here")
    parser.add_argument(
        "--strengths", type=float, nargs="+", default=[0.3, 0.5], help="the GIF's rows"
    )
    args = parser.parse_args(argv)
    with xr.open_dataset(args.collected, engine="h5netcdf") as dataset:
        dataset = dataset.load()
    print(table(dataset))
    if args.gif:
        print(f"wrote {side_by_side_gif(dataset, args.gif, args.strengths)}")


if __name__ == "__main__":
    main()
