"""GPU benchmark of the CUDA kernels, beside the CPU kernels on the same machine.

    python benchmarks/gpu.py                       # 1024 x 1024 x 4, rotate / swirl / zoom_out
    python benchmarks/gpu.py --res 2048 --repeats 100 --json out.json

Runs unchanged on any machine with an NVIDIA GPU and numba-cuda. Prints, per map:
the kernel time per frame on the device, excluding host transfers (CUDA events around
each call on device-resident arrays; median over ``--repeats``), the time per launch
of each stage, the time through ``noisewarp.warp`` with host arrays (transfers
included), the device memory the warp holds, the bytes it must move at the least
(read the frame and the map, write the frame) as a bandwidth against the device's
measured copy bandwidth, the CPU kernels' time on this machine's cores, and the
ratios. Parity: the largest difference from the CPU kernel for the same key. Grid is
timed the same way when it has a CUDA kernel (its corners interpolated on the device
from the map, as ``warp()`` does with a map array), with the particle/grid GPU ratio, and
hiwyn (``--hiwyn-n``, 8 by default; fewer repeats, ``--hiwyn-repeats``) with hiwyn/grid.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import noisewarp as nw  # noqa: E402
from noisewarp.core.rng import Key, Purpose  # noqa: E402


def _events(cuda):
    return cuda.event(timing=True), cuda.event(timing=True)


def _time_device(cuda, call, repeats: int) -> list[float]:
    """Milliseconds of each of ``repeats`` calls, by CUDA events (warm-up excluded)."""
    for _ in range(3):
        call()
    cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, stop = _events(cuda)
        start.record()
        call()
        stop.record()
        stop.synchronize()
        times.append(cuda.event_elapsed_time(start, stop))
    return times


def copy_bandwidth(cuda, gib: float = 2.0) -> float:
    """Device-to-device copy bandwidth in GB/s (bytes read plus bytes written)."""
    n = int(gib * 2**30) // 4
    a = cuda.to_device(np.ones(n, dtype=np.float32))
    b = cuda.device_array_like(a)
    times = _time_device(cuda, lambda: b.copy_to_device(a), 10)
    return 2 * a.nbytes / (statistics.median(times) * 1e-3) / 1e9


def _stage_times(cuda, call, repeats: int) -> dict[str, float]:
    """Median ms of each stage of a driver: ``call(on_stage=mark)`` runs one frame and
    names each stage (the driver's ``STAGES``) to ``mark`` just before its first launch,
    which records a CUDA event there. A stage runs from its event to the next one (a scan
    between two kernels counts with the stage before it; the last stage, to the return)."""
    marks: list[tuple[str, object]] = []

    def mark(name: str) -> None:
        event = cuda.event()  # timing is the default (numba's simulator takes no arguments)
        event.record()
        marks.append((name, event))

    per_stage: dict[str, list[float]] = {}
    for _ in range(repeats):
        marks.clear()
        call(on_stage=mark)
        end = cuda.event()
        end.record()
        end.synchronize()
        marks.append(("end", end))
        for (name, a), (_, b) in zip(marks, marks[1:], strict=False):
            per_stage.setdefault(name, []).append(a.elapsed_time(b))
    return {name: statistics.median(v) for name, v in per_stage.items()}


def _held_bytes(ws) -> int:
    """Device bytes a driver's workspace holds (its arrays, and tuples of them)."""
    held = 0
    for value in vars(ws).values():
        for item in value if isinstance(value, tuple) else (value,):
            held += getattr(item, "nbytes", 0)
    return held


def _parity(noise, tmap, key, method: str, **options) -> dict[str, float]:
    """Largest difference from the CPU kernel for the same key, and the identical share."""
    ref = nw.warp(noise, tmap, method=method, key=key, backend="cpu", **options)
    got = nw.warp(noise, tmap, method=method, key=key, backend="cuda", **options)
    return {"max_abs_diff_vs_cpu": float(np.abs(got - ref).max()),
            "identical_fraction": float(np.mean(got == ref))}  # fmt: skip


def _api_ms(noise, tmap, key, method: str) -> float:
    """Median ms of ``warp()`` with host arrays: transfers and validation included."""
    api = []
    for _ in range(10):
        tick = time.perf_counter()
        nw.warp(noise, tmap, method=method, key=key, backend="cuda")
        api.append((time.perf_counter() - tick) * 1e3)
    return statistics.median(api)


def _cpu_ms(method: str, noise, deformation, repeats: int) -> float:
    nw.warp(noise, deformation, method=method, key=(0, 1), backend="cpu")
    times = []
    for _ in range(repeats):
        tick = time.perf_counter()
        nw.warp(noise, deformation, method=method, key=(0, 1), backend="cpu")
        times.append((time.perf_counter() - tick) * 1e3)
    return statistics.median(times)


def _grid_row(cuda, grid, noise, tmap, d_noise, d_map, d_out, key, streams, row, repeats):
    """The grid driver's figures for one map, beside the particle row ``row``."""
    out = _parity(noise, tmap, key, "grid")
    run_grid = functools.partial(grid.grid_warp, d_noise, d_map, None, *streams, out=d_out)
    times = _time_device(cuda, run_grid, repeats)
    out["grid_gpu_ms"] = statistics.median(times)
    out["grid_gpu_ms_min"] = min(times)
    out["stages_ms"] = _stage_times(cuda, run_grid, 10)
    out["grid_api_host_ms"] = _api_ms(noise, tmap, key, "grid")
    held = _held_bytes(grid.workspace(*noise.shape))
    out["device_mib"] = (held + d_noise.nbytes * 2 + d_map.nbytes) / 2**20
    out["particle_over_grid_gpu"] = row["particle_gpu_ms"] / out["grid_gpu_ms"]
    out["grid_cpu_over_gpu"] = row["grid_cpu_ms"] / out["grid_gpu_ms"]
    stages = ", ".join(f"{k} {v:.3f}" for k, v in out["stages_ms"].items())
    print(f"  grid GPU {out['grid_gpu_ms']:.3f} ms/frame (min {out['grid_gpu_ms_min']:.3f}); "
          f"via warp() with host arrays {out['grid_api_host_ms']:.2f} ms; device memory "
          f"{out['device_mib']:.0f} MiB\n  grid stages: {stages}\n"
          f"  particle/grid GPU {out['particle_over_grid_gpu']:.2f}x; grid CPU/GPU "
          f"{out['grid_cpu_over_gpu']:.1f}x\n  grid parity vs CPU: max |diff| "
          f"{out['max_abs_diff_vs_cpu']:.2e}, {100 * out['identical_fraction']:.2f}% "
          "bit-identical", flush=True)  # fmt: skip
    return out


def _hiwyn_row(cuda, hiwyn, noise, tmap, d_noise, d_map, d_out, key, n, row, repeats):
    """The hiwyn driver's figures for one map at upsampling ``n``, beside grid's."""
    out = _parity(noise, tmap, key, "hiwyn", n=n)
    streams = (key.stream(Purpose.SUBPIXEL), key.stream(Purpose.FRESH))
    run_hiwyn = functools.partial(hiwyn.hiwyn_warp, d_noise, d_map, None, n, *streams,
                                  out=d_out)  # fmt: skip
    times = _time_device(cuda, run_hiwyn, repeats)
    out["n"] = n
    out["hiwyn_gpu_ms"] = statistics.median(times)
    out["stages_ms"] = _stage_times(cuda, run_hiwyn, 3)
    held = _held_bytes(hiwyn.workspace(*noise.shape, n))
    out["device_mib"] = (held + d_noise.nbytes * 2 + d_map.nbytes) / 2**20
    grid_ms = row.get("grid", {}).get("grid_gpu_ms")
    if grid_ms:
        out["hiwyn_over_grid_gpu"] = out["hiwyn_gpu_ms"] / grid_ms
    stages = ", ".join(f"{k} {v:.3f}" for k, v in out["stages_ms"].items())
    versus = f"; hiwyn/grid GPU {out['hiwyn_over_grid_gpu']:.1f}x" if grid_ms else ""
    print(f"  hiwyn n={n} GPU {out['hiwyn_gpu_ms']:.3f} ms/frame; device memory "
          f"{out['device_mib']:.0f} MiB{versus}\n  hiwyn stages: {stages}\n"
          f"  hiwyn parity vs CPU: max |diff| {out['max_abs_diff_vs_cpu']:.2e}, "
          f"{100 * out['identical_fraction']:.2f}% bit-identical", flush=True)  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--res", type=int, default=1024)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--maps", default="rotate,swirl,zoom_out")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--cpu-repeats", type=int, default=5)
    parser.add_argument("--hiwyn-n", type=int, default=8, help="hiwyn's upsampling; 0: skip")
    parser.add_argument("--hiwyn-repeats", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import numba
    from numba import cuda

    from noisewarp.cuda import particle

    grid = hiwyn = None
    if "cuda" in nw.METHODS["grid"].backends:
        from noisewarp.cuda import grid
    if "cuda" in nw.METHODS["hiwyn"].backends and args.hiwyn_n > 0:
        from noisewarp.cuda import hiwyn

    device = cuda.get_current_device()
    free0, total_mem = cuda.current_context().get_memory_info()
    report = {
        "device": device.name.decode() if isinstance(device.name, bytes) else str(device.name),
        "compute_capability": list(device.compute_capability),
        "numba": numba.__version__,
        "cpu_threads": numba.get_num_threads(),
        "res": args.res,
        "channels": args.channels,
        "copy_bandwidth_gbs": copy_bandwidth(cuda),
        "maps": {},
    }
    print(f"{report['device']} (cc {device.compute_capability}), numba {numba.__version__}, "
          f"{report['cpu_threads']} CPU threads; device copy {report['copy_bandwidth_gbs']:.0f} "
          "GB/s", flush=True)  # fmt: skip
    res, channels = args.res, args.channels
    noise = nw.initial_noise(res, res, channels, seed=0)
    key = Key(0, 1)
    streams = (key.stream(Purpose.BRIDGE), key.stream(Purpose.FRESH))
    d_noise = cuda.to_device(noise)
    d_out = cuda.device_array_like(d_noise)
    for name in args.maps.split(","):
        deformation = nw.deform.get_deformation(name)
        tmap = np.ascontiguousarray(deformation.map(res, res), dtype=np.float64)
        d_map = cuda.to_device(tmap)
        row: dict = {}
        row.update(_parity(noise, tmap, key, "particle"))
        # Kernel time on device-resident arrays, no transfers.
        run_particle = functools.partial(particle.particle_warp, d_noise, d_map, *streams,
                                         out=d_out)  # fmt: skip
        times = _time_device(cuda, run_particle, args.repeats)
        row["particle_gpu_ms"] = statistics.median(times)
        row["particle_gpu_ms_min"] = min(times)
        row["stages_ms"] = _stage_times(cuda, run_particle, 10)
        row["particle_api_host_ms"] = _api_ms(noise, tmap, key, "particle")
        # Device memory held: the workspace plus the frame, the map and the output.
        held = _held_bytes(particle.workspace(res, res, channels))
        row["device_mib"] = (held + d_noise.nbytes * 2 + d_map.nbytes) / 2**20
        least = 2 * noise.nbytes + tmap.nbytes  # read frame and map, write frame
        row["least_bytes_gbs"] = least / (row["particle_gpu_ms"] * 1e-3) / 1e9
        row["bandwidth_fraction"] = row["least_bytes_gbs"] / report["copy_bandwidth_gbs"]
        row["particle_cpu_ms"] = _cpu_ms("particle", noise, deformation, args.cpu_repeats)
        row["grid_cpu_ms"] = _cpu_ms("grid", noise, deformation, args.cpu_repeats)
        row["cpu_over_gpu_particle"] = row["particle_cpu_ms"] / row["particle_gpu_ms"]
        row["grid_cpu_over_particle_gpu"] = row["grid_cpu_ms"] / row["particle_gpu_ms"]
        report["maps"][name] = row
        stages = ", ".join(f"{k} {v:.3f}" for k, v in row["stages_ms"].items())
        print(f"\n{name}: particle GPU {row['particle_gpu_ms']:.3f} ms/frame (min "
              f"{row['particle_gpu_ms_min']:.3f}); via warp() with host arrays "
              f"{row['particle_api_host_ms']:.2f} ms\n  stages: {stages}\n"
              f"  device memory {row['device_mib']:.0f} MiB; least bytes at "
              f"{row['least_bytes_gbs']:.0f} GB/s = {100 * row['bandwidth_fraction']:.1f}% of "
              f"copy bandwidth\n  CPU ({report['cpu_threads']} threads): particle "
              f"{row['particle_cpu_ms']:.1f} ms, grid {row['grid_cpu_ms']:.1f} ms; "
              f"particle CPU/GPU {row['cpu_over_gpu_particle']:.1f}x\n"
              f"  parity vs CPU: max |diff| {row['max_abs_diff_vs_cpu']:.2e}, "
              f"{100 * row['identical_fraction']:.2f}% bit-identical", flush=True)  # fmt: skip
        if grid is not None:
            row["grid"] = _grid_row(cuda, grid, noise, tmap, d_noise, d_map, d_out, key,
                                    streams, row, args.repeats)  # fmt: skip
        if hiwyn is not None:
            row["hiwyn"] = _hiwyn_row(cuda, hiwyn, noise, tmap, d_noise, d_map, d_out, key,
                                      args.hiwyn_n, row, args.hiwyn_repeats)  # fmt: skip
    free1, _ = cuda.current_context().get_memory_info()
    report["device_memory_used_mib"] = (free0 - free1) / 2**20
    report["device_memory_total_mib"] = total_mem / 2**20
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_bench.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
