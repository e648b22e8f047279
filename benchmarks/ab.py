"""Same-run A/B of the kernels: this tree against an earlier revision, alternating processes.

    python benchmarks/ab.py --base d943dc9                     # particle and grid, 1024, 2 threads
    python benchmarks/ab.py --base HEAD~3 --methods grid --rounds 8 --threads 1

The base revision is exported (``git archive``) into a temporary folder; each variant
gets its own numba cache there. Every round runs each (method, variant) once in a fresh
process, the variants' order alternating between rounds so that drifts in the machine's
speed hit both alike. A process warps one 1024 x 1024 x 4 frame along ``rotate`` to
compile and warm up, then times ``--frames`` warps: wall time and the process's CPU time
(robust to other load when ``--threads 1``). Printed per method: the medians over rounds
of each variant, their ratio (head / base), and whether the outputs' hashes agree.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import hashlib, json, statistics, sys, time
import numpy as np
import noisewarp as nw

method, res, frames, deform = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
noise = nw.initial_noise(res, res, 4, seed=0)
geometry = nw.Geometry.from_input(nw.deform.get_deformation(deform), res, res)
out = nw.warp(noise, geometry, method=method, key=1)
digest = hashlib.sha256(np.ascontiguousarray(out).tobytes()).hexdigest()[:16]
wall, cpu = [], []
for t in range(frames):
    start, start_cpu = time.perf_counter(), time.process_time()
    nw.warp(noise, geometry, method=method, key=(0, t + 2))
    cpu.append(time.process_time() - start_cpu)
    wall.append(time.perf_counter() - start)
print(json.dumps({"hash": digest, "wall_ms": 1e3 * statistics.median(wall),
                  "cpu_ms": 1e3 * statistics.median(cpu)}))
"""


def export(revision: str, into: Path) -> Path:
    """The package of ``revision`` under ``into`` (importable with PYTHONPATH=into)."""
    into.mkdir(parents=True)
    archive = into.parent / "base.tar"
    subprocess.run(
        ["git", "archive", "--format=tar", "-o", str(archive), revision, "noisewarp"],
        cwd=REPO,
        check=True,
    )
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--methods", nargs="+", default=["particle", "grid"])
    parser.add_argument("--res", type=int, default=1024)
    parser.add_argument("--deform", default="rotate")
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="noisewarp_ab_") as scratch:
        scratch = Path(scratch)
        trees = {"base": export(args.base, scratch / "base"), "head": REPO}
        results: dict[tuple[str, str], list[dict]] = {}
        for round_ in range(args.rounds):
            order = ("base", "head") if round_ % 2 == 0 else ("head", "base")
            for method in args.methods:
                for variant in order:
                    env = {
                        **os.environ,
                        "PYTHONPATH": str(trees[variant]),
                        "NUMBA_CACHE_DIR": str(scratch / f"cache_{variant}"),
                        "NUMBA_NUM_THREADS": str(args.threads),
                    }
                    command = [
                        sys.executable,
                        "-c",
                        CHILD,
                        method,
                        str(args.res),
                        str(args.frames),
                        args.deform,
                    ]
                    done = subprocess.run(
                        command, env=env, capture_output=True, text=True, cwd=scratch
                    )
                    if done.returncode:
                        print(done.stderr[-3000:], file=sys.stderr)
                        return 1
                    figures = json.loads(done.stdout.strip().splitlines()[-1])
                    results.setdefault((method, variant), []).append(figures)
                    print(f"round {round_} {method:<9}{variant:<5} {figures}", flush=True)

    print(
        f"\n{args.res}x{args.res}x4 {args.deform}, {args.threads} thread(s), "
        f"{args.rounds} rounds of {args.frames} frames; medians over rounds (ms)"
    )
    print(
        f"{'method':<10}{'base wall':>10}{'head wall':>10}{'ratio':>8}"
        f"{'base cpu':>10}{'head cpu':>10}{'ratio':>8}  same output"
    )
    for method in args.methods:
        row = {}
        for variant in ("base", "head"):
            runs = results[(method, variant)]
            row[variant] = (
                statistics.median(r["wall_ms"] for r in runs),
                statistics.median(r["cpu_ms"] for r in runs),
                {r["hash"] for r in runs},
            )
        same = row["base"][2] == row["head"][2] and len(row["head"][2]) == 1
        print(
            f"{method:<10}{row['base'][0]:>10.1f}{row['head'][0]:>10.1f}"
            f"{row['head'][0] / row['base'][0]:>7.3f}x{row['base'][1]:>10.1f}"
            f"{row['head'][1]:>10.1f}{row['head'][1] / row['base'][1]:>7.3f}x  {same}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
