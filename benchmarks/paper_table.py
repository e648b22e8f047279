"""The paper's speed and memory table on this machine: hiwyn (n = 2, 4, 8), grid, particle.

    python benchmarks/paper_table.py                          # res 256 512 1024 2048, C = 4
    python benchmarks/paper_table.py --res 256 512 --frames 5 --out /tmp/table.md
    python benchmarks/paper_table.py --res 1024 --rounds 3        # interleaved, pooled

Deng et al. (ICLR 2025) report grid 8.0x-19.7x faster than HIWYN with n = 8 and
9.22x less memory, and particle 5.21x faster than grid (on a GPU). This script
measures the same figures for the parallel-CPU kernels, for a near-identity map
(1 degree rotation plus a sub-pixel translation) and a strong zoom (x2 about
the centre).

Each (method, resolution, map) runs in a fresh Python process, so no
measurement sees another's memory or warm caches:

- inputs (noise [H, W, 4] and the Geometry, centres and exact corners) are
  built first; then every kernel is compiled (or loaded from numba's cache) on
  a 32 x 32 frame, so neither compilation nor full-size arrays are in the
  baseline;
- time: one full-size warm-up frame, then the median of ``--frames`` timed
  frames (keys 1, 2, ...), calling the registered kernel directly (what
  ``noisewarp.warp`` does after validating its inputs), with the C library's
  default allocator settings: a process warping a video reuses the memory of
  the frames it has dropped, as these frames do;
- memory: then, in the same process, the work arrays kept between frames are
  released, glibc is switched (``mallopt``) to map every block of 128 KiB or
  more straight from the OS and to return it on free
  (``M_MMAP_THRESHOLD``), the heap is trimmed, and two more frames run: the
  column is the peak resident set size during them minus the resident size
  before them, so it counts the kernel's working arrays (those it keeps
  between frames included, built again by the first of the two) and its
  output, not its inputs. Linux's peak (VmHWM) is reset at that point
  (``/proc/self/clear_refs``), so neither the compiler's peak nor the timed
  frames' mask the kernel's; where that is not possible ``resource.getrusage``
  is the fallback and the column says so. A last frame under ``tracemalloc``
  gives the peak of the allocations themselves (numba's arrays included: its
  allocator goes through Python's raw allocator, which tracemalloc traces) as
  a cross-check. ``M_TRIM_THRESHOLD`` is raised to 1 GiB at the same time:
  fixing the mmap threshold would otherwise pin the trim threshold at 128 KiB,
  and the heaps of the worker threads would hand their small per-row blocks
  back to the OS after every row and fault them in again.

Timing under the memory settings would charge every frame the page faults of
a freshly mapped output (16 MiB at 1024 x 1024 x 4), which transparent huge
pages make expensive and erratic on a VM: measured here, 5-20 ms of system
time per frame (grid 57-61 ms per frame in the default setting, 78-82 ms
under the memory settings; particle 29 and 33 ms), a cost a process warping
a video does not pay after its first frame.

The machine's speed may drift between configurations run minutes apart;
``--rounds R`` runs the whole set R times, interleaved, and pools each
configuration's frames, so a slow spell weighs on every column alike.

The ratio columns are what the paper's claims compare; the last lines check the
targets at 1024: grid >= 8x faster than hiwyn n = 8 with >= 9x less
peak memory, particle >= 3x faster than grid.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

METHODS = [("hiwyn", 2), ("hiwyn", 4), ("hiwyn", 8), ("grid", None), ("particle", None)]
MAPS = {
    "near-identity": "rotate 1 deg + translate (0.3, 0.7)",
    "zoom x2": "zoom in x2 about the centre",
}
CHANNELS = 4


def deformation(name: str):
    from noisewarp.deform import Compose, Rotate, Translate, Zoom

    if name == "near-identity":
        return Compose((Rotate(degrees=1.0), Translate(rows=0.3, cols=0.7)))
    if name == "zoom x2":
        return Zoom(factor=2.0)
    raise ValueError(name)


# --------------------------------------------------------------------------- worker


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the kernel's record of peak RSS (Linux >= 4.0); False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        return False
    return _status_bytes("VmHWM:") is not None


def _release_free_heap() -> None:
    """Return freed heap pages to the OS (glibc), so the baseline RSS holds live data only."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _map_large_blocks() -> None:
    """glibc: blocks of 128 KiB or more from mmap, returned on free; trim at 1 GiB only."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 17)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def worker(method: str, n: int | None, res: int, map_name: str, frames: int) -> dict:
    import gc
    import resource
    import tracemalloc

    import noisewarp as nw
    from noisewarp.core.rng import Key
    from noisewarp.cpu.workspace import release
    from noisewarp.warp import METHODS as REGISTRY
    from noisewarp.warp import Geometry

    spec = REGISTRY[method]
    options = {**spec.options, **({"n": n} if n else {})}
    deform = deformation(map_name)
    # Compile (or load from cache) on a tiny frame first.
    small = nw.initial_noise(32, 32, CHANNELS, seed=1)
    spec.kernel(small, Geometry.from_input(deform, 32, 32), Key(0, 1), options)
    noise = nw.initial_noise(res, res, CHANNELS, seed=1)
    geometry = Geometry.from_input(deform, res, res)
    gc.collect()
    _release_free_heap()

    out, stats = spec.kernel(noise, geometry, Key(0, 1), options)  # full-size warm-up
    del out
    times = []
    for t in range(frames):
        start = time.perf_counter()
        out, stats = spec.kernel(noise, geometry, Key(0, t + 2), options)
        times.append(time.perf_counter() - start)
        del out

    # Memory: large blocks mapped and unmapped with their lifetime from here on.
    release()
    _map_large_blocks()
    gc.collect()
    _release_free_heap()
    base = _status_bytes("VmRSS:")
    resettable = _reset_peak() and base is not None
    if not resettable:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for t in range(2):  # the first builds the kept work arrays again, the second reuses them
        out, _ = spec.kernel(noise, geometry, Key(0, frames + 2 + t), options)
        del out
    if resettable:
        peak = _status_bytes("VmHWM:") - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    gc.collect()
    tracemalloc.start()
    out, _ = spec.kernel(noise, geometry, Key(0, frames + 4), options)
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "method": method,
        "n": n,
        "res": res,
        "map": map_name,
        "times": times,
        "median_s": statistics.median(times),
        "peak_rss_bytes": peak,
        "peak_source": "VmHWM reset" if resettable else "ru_maxrss",
        "traced_bytes": traced,
        "entries": stats.get("entries"),
    }


# --------------------------------------------------------------------------- driver


def label(method: str, n: int | None) -> str:
    return f"hiwyn n={n}" if n else method


def field_bytes(res: int, n: int) -> int:
    return res * res * n * n * CHANNELS * 4


def available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def run_one(method, n, res, map_name, frames, timeout) -> dict | None:
    from noisewarp.jitcache import keyed_cache_env

    command = [sys.executable, __file__, "--worker", method, str(n or 0), str(res), map_name,
               str(frames)]  # fmt: skip
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=keyed_cache_env()
        )
    except subprocess.TimeoutExpired:
        print(f"  {label(method, n)} {res} {map_name}: timed out after {timeout} s", flush=True)
        return None
    if done.returncode != 0:
        print(f"  {label(method, n)} {res} {map_name}: failed\n{done.stderr[-2000:]}", flush=True)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def configurations(resolutions):
    """(res, map, method, n) in table order, without the hiwyn fields memory cannot hold."""
    for res in resolutions:
        for map_name in MAPS:
            for method, n in METHODS:
                available = available_bytes() if n else None
                if available is not None and field_bytes(res, n) * 1.5 > available:
                    needs = f"{field_bytes(res, n) / 2**30:.1f} GiB"
                    print(f"  {label(method, n)} {res}: skipped (needs {needs})", flush=True)
                    continue
                yield res, map_name, method, n


def merge(kept: dict | None, new: dict | None) -> dict | None:
    """Pool a configuration's rounds: all timed frames, the largest peaks."""
    if not kept or not new:
        return None  # a configuration that failed once is reported as failed
    times = kept["times"] + new["times"]
    return {
        **kept,
        "times": times,
        "median_s": statistics.median(times),
        "peak_rss_bytes": max(kept["peak_rss_bytes"], new["peak_rss_bytes"]),
        "traced_bytes": max(kept["traced_bytes"], new["traced_bytes"]),
    }


def fmt_ms(result) -> str:
    return f"{result['median_s'] * 1e3:.1f}" if result else "-"


def fmt_mib(result, key="peak_rss_bytes") -> str:
    return f"{result[key] / 2**20:.1f}" if result else "-"


def ratio(a, b, key) -> str:
    if not a or not b or b[key] <= 0:
        return "-"
    return f"{a[key] / b[key]:.2f}x"


def machine() -> str:
    import numba

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, numba {numba.__version__} "
        f"({numba.config.NUMBA_NUM_THREADS} threads), Python {platform.python_version()}"
    )


def table(results: dict, resolutions, frames: int, command: str, rounds: int = 1) -> str:
    lines = [
        "# Speed and memory: hiwyn vs grid vs particle (parallel CPU)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine()}  ",
        f"Date: {datetime.date.today().isoformat()}; C = {CHANNELS}; time = median of {frames} "
        "frames after a warm-up frame, each configuration in a fresh process"
        + (f", {rounds} interleaved rounds pooled" if rounds > 1 else "")
        + ".  ",
        "Maps: " + "; ".join(f"{k}: {v}" for k, v in MAPS.items()) + ".",
    ]
    lines += _section("Time per frame (ms)", results, resolutions, "median_s", lambda r: fmt_ms(r))
    lines += _section(
        "Peak memory (MiB): resident-set growth during the frames (tracemalloc peak)",
        results,
        resolutions,
        "peak_rss_bytes",
        lambda r: f"{fmt_mib(r)} ({fmt_mib(r, 'traced_bytes')})" if r else "-",
    )
    sources = {r["peak_source"] for r in results.values() if r}
    lines += ["", f"Peak RSS measured with: {', '.join(sorted(sources))}.", ""]
    lines += bars(results)
    return "\n".join(lines) + "\n"


def _section(title, results, resolutions, field, cell) -> list[str]:
    """One markdown table: a row per (res, map), a column per method, then the two ratios."""
    lines = [
        "",
        f"## {title}",
        "",
        "| res | map | hiwyn n=2 | hiwyn n=4 | hiwyn n=8 | grid | particle "
        "| hiwyn n=8 / grid | grid / particle |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for res in resolutions:
        for map_name in MAPS:
            row = [results.get((m, n, res, map_name)) for m, n in METHODS]
            lines.append(
                f"| {res} | {map_name} | "
                + " | ".join(cell(r) for r in row)
                + f" | {ratio(row[2], row[3], field)} | {ratio(row[3], row[4], field)} |"
            )
    return lines


def bars(results: dict) -> list[str]:
    """The targets at 1024 (near-identity map, and the zoom for reference)."""
    out = ["## Against the targets at 1024", ""]
    for map_name in MAPS:
        hiwyn8 = results.get(("hiwyn", 8, 1024, map_name))
        grid = results.get(("grid", None, 1024, map_name))
        particle = results.get(("particle", None, 1024, map_name))
        if not (hiwyn8 and grid and particle):
            out.append(f"- {map_name}: not measured")
            continue
        speed = hiwyn8["median_s"] / grid["median_s"]
        memory = hiwyn8["peak_rss_bytes"] / grid["peak_rss_bytes"]
        particle_speed = grid["median_s"] / particle["median_s"]
        out.append(
            f"- {map_name}: grid {speed:.2f}x faster than hiwyn n=8 "
            f"({'meets' if speed >= 8 else 'misses'} >= 8x); "
            f"{memory:.2f}x less peak memory ({'meets' if memory >= 9 else 'misses'} >= 9x); "
            f"particle {particle_speed:.2f}x faster than grid "
            f"({'meets' if particle_speed >= 3 else 'misses'} >= 3x)"
        )
    return out


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        method, n, res, map_name, frames = sys.argv[2:7]
        result = worker(method, int(n) or None, int(res), map_name, int(frames))
        print(json.dumps(result))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--res", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--frames", type=int, default=5, help="timed frames (median)")
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="run every configuration this many times, interleaved, and take the median "
             "over all rounds' frames (steadier ratios on a machine whose speed drifts)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=int, default=900, help="seconds per configuration")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).with_name("paper_table.md"),
        help="markdown file for the table",
    )  # fmt: skip
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.frames < 5:
        print("note: fewer than 5 timed frames", file=sys.stderr)
    command = "python benchmarks/paper_table.py " + " ".join(sys.argv[1:])
    results = {}
    for round_ in range(args.rounds):
        if args.rounds > 1:
            print(f"round {round_ + 1} of {args.rounds}", flush=True)
        for res, map_name, method, n in configurations(args.res):
            result = run_one(method, n, res, map_name, args.frames, args.timeout)
            key = (method, n, res, map_name)
            results[key] = merge(results.get(key), result) if round_ else result
            if result:
                print(
                    f"  {res:>5} {map_name:<14} {label(method, n):<11} "
                    f"{result['median_s'] * 1e3:9.1f} ms  "
                    f"{result['peak_rss_bytes'] / 2**20:8.1f} MiB RSS  "
                    f"{result['traced_bytes'] / 2**20:8.1f} MiB traced",
                    flush=True,
                )
    text = table(results, args.res, args.frames, command.strip(), args.rounds)
    print()
    print(text)
    args.out.write_text(text)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
