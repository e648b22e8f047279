"""Benchmark: time per frame and peak memory of the warping kernels.

    python -m noisewarp.bench                       # particle, res 256..2048, C = 4
    python -m noisewarp.bench --methods particle grid --res 512 1024 --deform rotate
    python -m noisewarp.bench --res 1024 --rounds 3 --rng   # interleaved, pooled

Each (method, resolution) runs in a fresh subprocess so that its peak resident
memory is its own: the figure reported is the peak RSS above the process's
baseline after imports and JIT compilation (it includes the input frame, map
and output). Times are medians over ``--repeats`` frames after one warm-up
frame, compile time excluded; the best frame is shown beside the median.
These machines are shared and their speed drifts within minutes: ``--rounds R``
runs the whole set R times, interleaved, and pools each configuration's frames
(peak memory: the largest). The generator's cost per normal is measured
separately (``--rng``), after the frames, so it shows the machine's state.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def _rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(method: str, res: int, channels: int, deform: str, repeats: int, options: dict) -> dict:
    """Time ``repeats`` warps of one frame in this process; return figures as a dict."""
    import numba

    import noisewarp as nw

    deformation = nw.deform.get_deformation(deform)
    small = nw.initial_noise(16, 16, channels, seed=0)
    nw.warp(small, deformation.map(16, 16), method=method, key=1, **options)  # compile
    baseline = _rss_mib()
    noise = nw.initial_noise(res, res, channels, seed=0)
    geometry = nw.Geometry.from_input(deformation, res, res)
    nw.warp(noise, geometry, method=method, key=1, **options)  # warm caches and pages
    times = []
    for t in range(repeats):
        start = time.perf_counter()
        nw.warp(noise, geometry, method=method, key=(0, t + 2), **options)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "method": method,
        "res": res,
        "channels": channels,
        "deform": deform,
        "threads": numba.get_num_threads(),
        "median_ms": 1e3 * median,
        "min_ms": 1e3 * min(times),
        "times_ms": [1e3 * t for t in times],
        "ns_per_pixel": 1e9 * median / (res * res),
        "peak_mib": _rss_mib() - baseline,
        "options": options,
    }


def rng_cost(count: int = 2**24, repeats: int = 5) -> dict:
    """Nanoseconds per standard normal of the counter-based ziggurat (all threads).

    ``count`` should be a multiple of 256 * 4096 (blocks of 4096 in 256 tasks).
    """
    import numba
    import numpy as np
    from numba import njit, prange

    from noisewarp.core.rng import Key, Purpose, fill_normals

    @njit(parallel=True)
    def draw_sum(offset, gamma, n, blocks):
        # Blocks of float32 normals, as the kernels draw them (fill_normals).
        sums = np.zeros(blocks)
        per = n // blocks
        for b in prange(blocks):
            buf = np.empty(4096, dtype=np.float32)
            acc = 0.0
            for lo in range(0, per, buf.size):
                fill_normals(offset, gamma, np.uint64(b * per + lo), buf)
                acc += buf[0]
            sums[b] = acc
        return sums.sum()

    offset, gamma = Key(0, 0).stream(Purpose.BRIDGE)
    draw_sum(offset, gamma, 1024, 64)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        draw_sum(offset, gamma, count, 256)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    threads = numba.get_num_threads()
    return {
        "normals": count,
        "threads": threads,
        "wall_ns_per_normal": 1e9 * median / count,
        "core_ns_per_normal": 1e9 * median * threads / count,
    }


def _run_child(args: argparse.Namespace, method: str, res: int, options: dict) -> dict:
    from noisewarp.jitcache import keyed_cache_env

    cmd = [
        sys.executable, "-m", "noisewarp.bench", "--child",
        "--methods", method, "--res", str(res), "--channels", str(args.channels),
        "--deform", args.deform, "--repeats", str(args.repeats),
        "--options", json.dumps(options),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=keyed_cache_env())
    if done.returncode != 0:
        return {"method": method, "res": res, "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def pool(runs: list[dict]) -> dict:
    """One row from the rounds of a configuration: frames pooled, peak the largest."""
    failed = [r for r in runs if "error" in r]
    if failed:
        return failed[0]
    times = [t for r in runs for t in r["times_ms"]]
    row = dict(runs[0])
    median = statistics.median(times)
    row.update(
        times_ms=times,
        median_ms=median,
        min_ms=min(times),
        ns_per_pixel=1e6 * median / (row["res"] * row["res"]),
        peak_mib=max(r["peak_mib"] for r in runs),
    )
    return row


def _table(rows: list[dict]) -> str:
    lines = [
        "| method | res | C | deform | median ms/frame | best ms/frame | ns/pixel | peak MiB |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | {r['res']} | | | failed: {r['error']} | | | |")
            continue
        label = r["method"] + "".join(f" {k}={v}" for k, v in r["options"].items())
        lines.append(
            f"| {label} | {r['res']} | {r['channels']} | {r['deform']} | {r['median_ms']:.1f} "
            f"| {r['min_ms']:.1f} | {r['ns_per_pixel']:.1f} | {r['peak_mib']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--methods", nargs="+", default=["particle"])
    parser.add_argument("--res", nargs="+", type=int, default=[256, 512, 1024, 2048])
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--deform", default="rotate")
    parser.add_argument("--repeats", type=int, default=7, help="timed frames per round")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds, pooled")
    parser.add_argument("--options", default="{}", help="JSON method options, e.g. '{\"n\": 8}'")
    parser.add_argument("--rng", action="store_true", help="also measure ns per normal")
    parser.add_argument("--json", help="write the rows to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    options = json.loads(args.options)
    if args.child:
        print(
            json.dumps(
                measure(
                    args.methods[0], args.res[0], args.channels, args.deform, args.repeats, options
                )
            )
        )
        return 0
    if args.repeats < 1 or args.rounds < 1:
        parser.error(f"--repeats and --rounds must be >= 1, got {args.repeats}, {args.rounds}")
    from noisewarp.warp import METHODS

    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown method(s) {unknown}; valid: {', '.join(sorted(METHODS))}")
    configs = [(m, r) for m in args.methods for r in args.res]
    rounds = [[_run_child(args, m, r, options) for m, r in configs] for _ in range(args.rounds)]
    rows = [pool(list(runs)) for runs in zip(*rounds, strict=True)]
    print(_table(rows))
    ok = [r for r in rows if "error" not in r]
    if len(ok) > 1:
        first = ok[0]
        print("\nscaling (ns per pixel relative to the smallest frame):")
        for r in ok:
            if r["method"] == first["method"]:
                print(
                    f"  {r['method']} {r['res']}: {r['ns_per_pixel'] / first['ns_per_pixel']:.2f}x"
                )
    if args.rng:
        cost = rng_cost()
        print(
            "\nnormal generator (SplitMix64 hash, two 256-layer ziggurat normals per hash): "
            f"{cost['core_ns_per_normal']:.2f} ns per normal per core, "
            f"{cost['wall_ns_per_normal']:.2f} ns wall on {cost['threads']} threads"
        )
        rows.append({"rng": cost})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 1 if any("error" in row for row in rows) else 0  # a failed configuration


if __name__ == "__main__":
    raise SystemExit(main())
