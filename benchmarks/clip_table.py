"""Every method on the bundled clip's estimated motion: white frames, and noise that moves.

    python benchmarks/clip_table.py                  # noise 256 x 144, 24 frames
    python benchmarks/clip_table.py --res 512 --frames 40 --methods particle grid fixed

Prints, per method, averaged over the frames (``noisewarp.evaluate.compare_methods``):
the share of frames passing the 5-sigma white-noise battery, the run's temporal metric
(own model), and the correlation along the motion where it moves (grid's exact areas as
one yardstick for all methods) beside what an exact integral warp would reach there.
"""

from __future__ import annotations

import argparse
import sys
import time

METHODS = ["random", "fixed", "nearest", "bilinear", "hiwyn", "grid", "particle"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--res", type=int, default=256, help="the noise frame's longer side")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--cache", default=None, help="HDF5 flow cache (default: none)")
    args = parser.parse_args()

    from noisewarp.evaluate import compare_methods
    from noisewarp.motion import BUNDLED_CLIP, VideoMotion

    motion = VideoMotion(BUNDLED_CLIP, res=args.res, frames=args.frames, cache=args.cache)
    start = time.perf_counter()
    table = compare_methods(motion, args.methods, args.frames)
    means = table.mean("frame")
    print(
        f"\nbundled clip, noise {motion.height} x {motion.width} x 4, {args.frames} frames "
        f"({time.perf_counter() - start:.0f} s); moving: > {table.moving_threshold_px} px, "
        f"{100 * float(means.moving_fraction[0]):.1f}% of pixels on average"
    )
    print(f"{'method':<10}{'white':>8}{'own corr':>10}{'moving corr':>13}{'exact':>8}")
    for method in args.methods:
        row = means.sel({"method": method})
        print(
            f"{method:<10}{100 * float(row.passed):>7.0f}%{float(row.temporal_corr):>10.3f}"
            f"{float(row.moving_corr):>13.3f}{float(row.expected_moving):>8.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
