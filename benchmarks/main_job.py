"""The main job against its kernel: does ``python run.py`` go at the warp's speed?

    python benchmarks/main_job.py                      # particle and grid, 1024x1024x4, 16 frames
    python benchmarks/main_job.py --methods grid --res 512 --rounds 3

For each method, in a fresh process (numba cache keyed by the package's sources, so
nothing stale is timed), the README's main command path runs in-process:
``noisewarp.experiment.run`` on a config composed by Hydra with the default outputs
(HDF5 stack, metrics on every frame, previews), on the default motion (the bundled
clip's estimated flow, read from the flow cache the bare warps filled; pass
``deform=swirl`` for a synthetic motion), into a temporary directory. In the same
process and on the same frames' geometry, the bare kernel (``NoiseWarper.step``, no
outputs) is timed before and after the run. Printed per method, medians over frames:

- ``kernel``: the bare warp, ms per frame;
- ``in run``: the warp as timed inside the run (``time_s``);
- ``end to end``: the run's ``step_s``, frame to frame (map, warp, write, metrics,
  previews);
- ``ratio``: end to end / kernel (the bar: <= 2, goal <= 1.3);
- ``wall``: the whole ``run()`` (warm-up from cache, metrics.nc, GIFs) / frames.

``--rounds R`` repeats every method R times, interleaved, and pools the frames.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _kernel_ms(spec, frames: int) -> list[float]:
    """Bare warps along the run's own motion (its first ``frames`` - 1 steps): ms per
    frame. For a video this also fills the flow cache the run then reads."""
    from noisewarp.warp import NoiseWarper, initial_noise

    noise = initial_noise(spec.height, spec.width, spec.channels)
    warper = NoiseWarper(
        spec.height, spec.width, spec.channels, method=spec.method, noise=noise, **spec.options
    )
    times = []
    for step in islice(spec.motion.steps(), frames - 1):
        start = time.perf_counter()
        warper.step(step.geometry)
        times.append(1e3 * (time.perf_counter() - start))
    return times


def child(method: str, res: int, frames: int, overrides: list[str]) -> dict:
    """One measurement in this process; returns the figures."""
    import numpy as np
    import xarray as xr
    from hydra import compose, initialize_config_dir

    from noisewarp.experiment import build_spec, run

    directory = Path(tempfile.mkdtemp(prefix="main_job_"))
    with initialize_config_dir(config_dir=str(REPO / "noisewarp" / "conf"), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                f"method={method}",
                f"res={res}",
                f"frames={frames}",
                "output.progress=false",
                f"output.dir='{directory}'",
                *overrides,
            ],
        )
    spec = build_spec(cfg)
    from noisewarp.experiment import configure_threads

    configure_threads(spec.threads)
    kernel = _kernel_ms(spec, min(frames, 6))  # compiles (from cache) and warms up
    kernel = _kernel_ms(spec, frames)
    start = time.perf_counter()
    run(cfg)
    wall = time.perf_counter() - start
    kernel += _kernel_ms(spec, frames)
    with xr.open_dataset(directory / "metrics.nc", engine="h5netcdf") as metrics:
        in_run = 1e3 * metrics["time_s"].values[1:]
        steps = 1e3 * metrics["step_s"].values[1:]
        threads = int(metrics["threads"])
    for path in directory.iterdir():
        if path.is_file():
            path.unlink()
    return {
        "method": method,
        "res": res,
        "frames": frames,
        "threads": threads,
        "kernel": kernel,
        "in_run": [float(v) for v in in_run if np.isfinite(v)],
        "steps": [float(v) for v in steps if np.isfinite(v)],
        "wall_per_frame": 1e3 * wall / frames,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["particle", "grid"])
    parser.add_argument("--res", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides, e.g. deform=rotate")
    args = parser.parse_args()
    # `--methods particle deform=swirl`: argparse hands the override to --methods.
    args.overrides += [m for m in args.methods if "=" in m]
    args.methods = [m for m in args.methods if "=" not in m]
    if args.child:
        print(json.dumps(child(args.child, args.res, args.frames, args.overrides)))
        return 0

    sys.path.insert(0, str(REPO))
    from noisewarp.jitcache import keyed_cache_env

    env = keyed_cache_env()
    pooled: dict[str, dict] = {}
    for _ in range(args.rounds):
        for method in args.methods:
            command = [
                sys.executable,
                __file__,
                "--child",
                method,
                "--res",
                str(args.res),
                "--frames",
                str(args.frames),
                *args.overrides,
            ]
            result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
            if result.returncode != 0:
                print(result.stderr[-3000:], file=sys.stderr)
                return 1
            figures = json.loads(result.stdout.strip().splitlines()[-1])
            entry = pooled.setdefault(
                method,
                {
                    "kernel": [],
                    "in_run": [],
                    "steps": [],
                    "wall": [],
                    "threads": figures["threads"],
                },
            )
            for key in ("kernel", "in_run", "steps"):
                entry[key] += figures[key]
            entry["wall"].append(figures["wall_per_frame"])

    print(
        f"\nmain job, {args.res}x{args.res}x4, {args.frames} frames, default outputs, "
        f"{args.rounds} round(s); {os.cpu_count()} CPUs; ms per frame, medians"
    )
    header = f"{'method':<10}{'threads':>8}{'kernel':>9}{'in run':>9}{'end to end':>12}"
    print(header + f"{'ratio':>8}{'wall':>9}")
    for method, entry in pooled.items():
        kernel = statistics.median(entry["kernel"])
        steps = statistics.median(entry["steps"])
        print(
            f"{method:<10}{entry['threads']:>8}{kernel:>9.1f}"
            f"{statistics.median(entry['in_run']):>9.1f}{steps:>12.1f}{steps / kernel:>7.2f}x"
            f"{statistics.median(entry['wall']):>9.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
