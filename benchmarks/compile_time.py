"""Benchmark: time to the first frame of each method, from an empty and from a filled numba cache.

    python benchmarks/compile_time.py                       # every method, then run.py
    python benchmarks/compile_time.py --methods particle grid --run-py particle
    python benchmarks/compile_time.py --run-py none --json out.json

For each method, a fresh Python process with an empty temporary ``NUMBA_CACHE_DIR``
imports noisewarp (timed) and warps one ``--res`` x ``--res`` x ``--channels`` frame
(timed: the first call compiles that method's kernels). Each step is timed as wall
time and as the process's CPU time (user + system): numba compiles on one thread,
so the CPU time of a first call is its compile cost even on a loaded machine,
where the wall time also counts the time other jobs hold the cores. A second fresh process
with the now-filled cache does the same (the first frame from the cache). Each
child also reports which of the package's kernels it compiled or loaded, so the
table shows whether a method compiles only its own kernels. Last, ``run.py``
(``frames=4``, no previews) runs end to end in another empty cache.

This is a benchmark, not a test: the figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METHODS = ("particle", "grid", "hiwyn", "random", "fixed", "nearest", "bilinear")


def _kernels() -> dict[str, dict]:
    """The package's kernels holding compiled code, with their cache hits and misses."""
    from noisewarp.precompile import compiled_kernels

    return {
        name: {"cache_hits": hits, "cache_misses": misses}
        for name, (hits, misses) in compiled_kernels().items()
    }


def child(method: str, res: int, channels: int) -> dict:
    """Import the package and warp one frame with ``method``, timing each step."""
    start, start_cpu = time.perf_counter(), time.process_time()
    import noisewarp as nw

    imported, imported_cpu = time.perf_counter(), time.process_time()
    at_import = len(_kernels())
    noise = nw.initial_noise(res, res, channels, seed=0)
    tmap = nw.deform.get_deformation("rotate").map(res, res)
    before, before_cpu = time.perf_counter(), time.process_time()
    nw.warp(noise, tmap, method=method, key=nw.Key(0, 1))
    first, first_cpu = time.perf_counter(), time.process_time()
    nw.warp(noise, tmap, method=method, key=nw.Key(0, 2))
    second = time.perf_counter()
    return {
        "method": method,
        "import_s": imported - start,
        "import_cpu_s": imported_cpu - start_cpu,
        "setup_s": before - imported,
        "setup_cpu_s": before_cpu - imported_cpu,
        "first_s": first - before,
        "first_cpu_s": first_cpu - before_cpu,
        "second_s": second - first,
        "kernels_at_import": at_import,
        "kernels": _kernels(),
    }


def _spawn(method: str, res: int, channels: int, cache: str) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--res", str(res),
           "--channels", str(channels)]  # fmt: skip
    env = {**os.environ, "NUMBA_CACHE_DIR": cache}
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, cwd=REPO)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"child for {method} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    return result


def run_py(method: str, res: int) -> float:
    """Wall time of ``run.py`` (4 frames, no previews) in an empty numba cache."""
    with tempfile.TemporaryDirectory(prefix="nw-cache-") as cache:
        with tempfile.TemporaryDirectory(prefix="nw-run-") as out:
            cmd = [sys.executable, "run.py", f"method={method}", f"res={res}", "frames=4",
                   "output.previews=false", "output.progress=false",
                   f"hydra.run.dir={out}"]  # fmt: skip
            env = {**os.environ, "NUMBA_CACHE_DIR": cache}
            start = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
            wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"run.py failed:\n{done.stderr[-3000:]}")
    return wall


def _others(kernels: dict, method: str) -> list[str]:
    """Kernels of method modules other than ``method``'s (baselines share one module)."""
    own = {
        "particle": "noisewarp.cpu.particle",
        "grid": "noisewarp.cpu.grid",
        "hiwyn": "noisewarp.cpu.hiwyn",
    }.get(method, "noisewarp.cpu.baselines")
    modules = ("noisewarp.cpu.particle", "noisewarp.cpu.grid", "noisewarp.cpu.hiwyn",
               "noisewarp.cpu.baselines")  # fmt: skip
    return [k for k in kernels if k.rsplit(".", 1)[0] in modules and not k.startswith(own + ".")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--res", type=int, default=64)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--run-py", nargs="*", default=["particle"],
                        help="methods to run run.py with end to end ('none': skip)")  # fmt: skip
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.res, args.channels)))
        return 0
    rows = []
    for method in args.methods:
        with tempfile.TemporaryDirectory(prefix="nw-cache-") as cache:
            cold = _spawn(method, args.res, args.channels, cache)
            warm = _spawn(method, args.res, args.channels, cache)
        rows.append({"method": method, "cold": cold, "warm": warm})
        print(f"{method}: cold first frame {cold['first_cpu_s']:.1f} s CPU, "
              f"{cold['first_s']:.1f} s wall", file=sys.stderr)  # fmt: skip
    runs = {m: run_py(m, args.res) for m in args.run_py if m != "none"}
    res = f"{args.res}x{args.res}x{args.channels}"
    print(f"First frame at {res}, each in a fresh process (s; CPU = user + system):\n")
    print("| method | import | first frame, empty cache: CPU | wall | kernels compiled | "
          "other methods' kernels | import, cache | first frame, cache | "
          "cache misses |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|")
    for row in rows:
        cold, warm = row["cold"], row["warm"]
        others = ", ".join(_others(cold["kernels"], row["method"])) or "none"
        misses = sum(k["cache_misses"] for k in warm["kernels"].values())
        print(f"| {row['method']} | {cold['import_s']:.2f} | {cold['first_cpu_s']:.2f} | "
              f"{cold['first_s']:.2f} | "
              f"{len(cold['kernels'])} | {others} | {warm['import_s']:.2f} | "
              f"{warm['first_s']:.2f} | {misses} |")  # fmt: skip
    for method, wall in runs.items():
        print(f"\n`run.py method={method} res={args.res} frames=4 output.previews=false`, "
              f"empty cache: {wall:.1f} s wall")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "run_py": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
