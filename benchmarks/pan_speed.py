"""Warped against fixed noise as a camera pan speeds up: the diffusion stage's warping error
(whole frame, occlusions masked) of each noise method over fixed noise's and random's.

    python benchmarks/pan_speed.py                       # 0.1 .. 2 px per frame, strength 0.3
    python benchmarks/pan_speed.py --speeds 0.25 1 --strength 0.5 --methods particle grid

Each speed is a pan of the bundled clip's first frame (``images.panning_shot``: the whole
frame moves in x, no still background) edited at 128 x 72 with the built-in model. Integral
warping keeps the noise white by renewing 1 - (1 - d)^2 - d^2 of its variance per frame for a
fractional shift d (half at d = 0.5), so its gain over fixed noise grows with the speed: the
table tells where the paper's point holds on a given shot (the bundled clip's background
drifts 0.1 px per frame).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speeds", type=float, nargs="+",
                        default=[0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0],
                        help="pan speeds in x, pixels per frame at 128 x 72")  # fmt: skip
    parser.add_argument("--methods", nargs="+", default=["particle", "grid"])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--strength", type=float, default=0.3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def measure(args: argparse.Namespace, work: Path) -> list[dict]:
    from hydra import compose

    from noisewarp.collect import collect
    from noisewarp.diffusion.images import panning_shot
    from noisewarp.diffusion.stage import run

    methods = ["random", "fixed", *[m for m in args.methods if m not in ("random", "fixed")]]
    rows = []
    for speed in args.speeds:
        shot = panning_shot(work / f"pan-{speed}", args.frames, speed=(speed, 0.0))
        sweep = work / f"sweep-{speed}"
        for method in methods:
            overrides = [
                "stage=diffuse", f"method={method}", f"frames={args.frames}",
                f"seed={args.seed}", f"deform.path='{shot}'",
                f"diffusion.strength={args.strength}", f"diffusion.steps={args.steps}",
                "output.progress=false", f"output.dir='{sweep / method}'",
            ]  # fmt: skip
            with contextlib.redirect_stdout(io.StringIO()):  # each run's noise summary
                run(compose("config", overrides=overrides))
        merged, _ = collect(sweep, quiet=True, metrics_file="diffusion.nc")
        error = merged["warping_error"].isel(frame=slice(1, None)).mean("frame").squeeze()
        at = {str(m): float(error.sel(warp_method=m)) for m in error.warp_method.values}
        by_name = {m: next(v for k, v in at.items() if k.startswith(m)) for m in methods}
        rows.append({"speed": speed, **by_name})
        print(f"  {speed:.2f} px/frame: " + ", ".join(f"{m} {v:.5f}" for m, v in by_name.items()),
              file=sys.stderr, flush=True)  # fmt: skip
    return rows


def table(rows: list[dict], methods: list[str]) -> str:
    head = "| px per frame | fixed | " + " | ".join(f"{m} / fixed | {m} / random" for m in methods)
    lines = [head + " |", "|---:|---:|" + "---:|---:|" * len(methods)]
    for row in rows:
        cells = [f"{row['speed']:.2f}", f"{row['fixed']:.5f}"]
        for m in methods:
            cells += [f"{row[m] / row['fixed']:.2f}", f"{row[m] / row['random']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from hydra import initialize_config_dir

    from noisewarp.cli import CONFIG_DIR

    with tempfile.TemporaryDirectory(prefix="pan-speed-") as work:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            rows = measure(args, Path(work))
    methods = [m for m in args.methods if m not in ("random", "fixed")]
    print(f"strength {args.strength}, {args.steps} DDIM steps, {args.frames} frames, "
          f"means over frames 1..{args.frames - 1}")  # fmt: skip
    print(table(rows, methods))


if __name__ == "__main__":
    main()
