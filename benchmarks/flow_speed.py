"""Optical-flow estimators: time per frame on the bundled clip and accuracy on known motion.

Time: the backward flow of consecutive frames of ``noisewarp/data/bigbuckbunny.mp4`` (640 x 360)
resized so the longer side is 256 or 1024 (1024 is upscaled), median over ``--frames``
steps after one warm-up step. Accuracy: mean end-point error over the interior (24 px
margin) of a 256 x 256 grey astronaut (scikit-image) moved by known sub-pixel pan, zoom,
rotation and all three, rendered by exact inverse mapping (cubic), against the analytic
backward flow.

    python benchmarks/flow_speed.py                      # all estimators, 256 and 1024
    python benchmarks/flow_speed.py --methods dis --res 256 512 --frames 8

RAFT is included with ``--raft-weights FILE`` (a local torchvision RAFT state_dict).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from noisewarp import flowcheck
from noisewarp import opticalflow as of
from noisewarp.video import open_video

CLIP = Path(__file__).resolve().parent.parent / "noisewarp" / "data" / "bigbuckbunny.mp4"
SIZE = 256
LABELS = {
    "pan": "pan (1.3, -0.7) px",
    "zoom": "zoom 1.03",
    "rotate": "rotate 2 deg",
    "all": "all three",
}


def variants(methods: list[str], raft_weights: str | None) -> dict[str, tuple[str, dict]]:
    """Label -> (method, settings) for the estimators to run."""
    table = {}
    for method in methods:
        if method == "dis":
            for preset in of.DIS_PRESETS:
                table[f"dis {preset}"] = ("dis", {"preset": preset})
        elif method == "raft":
            if raft_weights:
                table["raft"] = ("raft", {"weights": raft_weights})
        else:
            table[method] = (method, {})
    return table


def time_per_frame(method: str, settings: dict, res: int, steps: int) -> float:
    """Median seconds per backward flow over ``steps`` steps (after a warm-up)."""
    frames = list(open_video(CLIP, frames=steps + 2, size=res))
    of.estimate(frames[0], frames[1], method, **settings)
    times = []
    for prev, nxt in zip(frames[1:-1], frames[2:], strict=True):
        start = time.perf_counter()
        of.estimate(prev, nxt, method, **settings)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def epe_table(method: str, settings: dict) -> list[float]:
    """Mean interior EPE (px) for each known motion."""
    image = flowcheck.photo(SIZE)
    out = []
    for motion in LABELS:
        first, second, truth = flowcheck.known_pair(image, flowcheck.MOTIONS[motion])
        flow = of.estimate(first, second, method, **settings)
        out.append(flowcheck.interior_epe(flow, truth))
    return out


def main(argv: list[str] | None = None) -> None:
    """Print the time table and the EPE table (markdown)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(of.METHODS))
    parser.add_argument("--res", nargs="+", type=int, default=[256, 1024])
    parser.add_argument("--frames", type=int, default=5, help="timed steps per estimator")
    parser.add_argument("--raft-weights", default=None)
    args = parser.parse_args(argv)
    table = variants(args.methods, args.raft_weights)

    print("### Time per frame (ms, median), backward flow, bundled clip\n")
    sizes = [open_video(CLIP, size=r).size for r in args.res]
    heads = [f"{r} ({h} x {w})" for r, (h, w) in zip(args.res, sizes, strict=True)]
    print("| estimator | " + " | ".join(heads) + " |")
    print("|---|" + "---:|" * len(args.res))
    for label, (method, settings) in table.items():
        cells = [time_per_frame(method, settings, res, args.frames) * 1e3 for res in args.res]
        print(f"| {label} | " + " | ".join(f"{c:.1f}" for c in cells) + " |", flush=True)

    print("\n### Mean end-point error (px), 256 x 256 astronaut, known motion\n")
    print("| estimator | " + " | ".join(LABELS.values()) + " |")
    print("|---|" + "---:|" * len(LABELS))
    for label, (method, settings) in table.items():
        cells = epe_table(method, settings)
        print(f"| {label} | " + " | ".join(f"{c:.3f}" for c in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
