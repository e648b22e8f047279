"""Peak memory of a long run stays flat: frames are streamed to the stack, not kept.

    python benchmarks/memory_flat.py                    # the bundled clip, res 1024, 200 frames
    python benchmarks/memory_flat.py --res 256 --frames 300     # a 300-frame video
    python benchmarks/memory_flat.py --res 256 --frames 50 -- deform=turbulence

Runs ``noisewarp.experiment.run`` with the default outputs (HDF5 stack, metrics on every
frame, previews) into a temporary directory, then reports resident memory (current and
peak, from the run's own per-frame record in metrics.nc) at frames 10, 100 and the last.
The stack alone is frames x 16 MiB at 1024x1024x4; a run that kept its frames would grow
by that much per frame. On the default motion (the bundled 80-frame clip) a longer run
reads a longer video made from the clip played forwards and backwards (written to the
temporary directory first), so the video, its flow cache and the noise all stream.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

CONF = Path(__file__).resolve().parents[1] / "noisewarp" / "conf"


def _long_clip(directory: Path, frames: int) -> Path:
    """The bundled clip played forwards and backwards until it has ``frames`` frames."""
    from noisewarp.motion import BUNDLED_CLIP
    from noisewarp.video import open_video, write_video

    reader = open_video(BUNDLED_CLIP)

    def ping_pong():
        clip = list(reader)  # 80 frames of 640 x 360: 55 MB, once
        order = clip + clip[-2:0:-1]
        for index in range(frames):
            yield order[index % len(order)]

    path = directory / "long_clip.mp4"
    write_video(path, ping_pong(), reader.fps or 25.0)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--res", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--dir", help="output directory (default: a temporary one, removed)")
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides, e.g. method=grid")
    args = parser.parse_args()

    import xarray as xr
    from hydra import compose, initialize_config_dir

    from noisewarp.experiment import run

    directory = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="memory_flat_"))
    directory.mkdir(parents=True, exist_ok=True)
    try:
        if not any(o.startswith("deform") for o in args.overrides):
            args.overrides.append(f"deform.path='{_long_clip(directory, args.frames)}'")
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(
                "config",
                overrides=[
                    f"res={args.res}",
                    f"frames={args.frames}",
                    f"channels={args.channels}",
                    f"output.dir='{directory}'",
                    *args.overrides,
                ],
            )
        start = time.perf_counter()
        summary = run(cfg)
        wall = time.perf_counter() - start
        with xr.open_dataset(directory / "metrics.nc", engine="h5netcdf") as metrics:
            rss = metrics["rss_mb"].values
            peak = metrics["peak_rss_mb"].values
        stack_mb = summary["height"] * summary["width"] * args.channels * 4 / 2**20
        print(
            f"\n{summary['height']}x{summary['width']}x{args.channels}, {args.frames} frames, "
            f"{summary['method']} on {summary['deform']}: {wall:.0f} s wall, "
            f"{1e3 * summary['time_per_frame_s']:.0f} ms/frame warp; one frame = "
            f"{stack_mb:.0f} MiB"
        )
        print(f"{'frame':>7}{'RSS MiB':>10}{'peak RSS MiB':>14}")
        shown = sorted({min(10, args.frames), min(100, args.frames), args.frames})
        for number in shown:  # 1-based: the 200th frame is index 199
            print(f"{number:>7}{rss[number - 1]:>10.0f}{peak[number - 1]:>14.0f}")
        first, last = peak[min(10, args.frames) - 1], peak[-1]
        growth = last - first
        print(
            f"peak growth from frame {shown[0]} to {args.frames}: {growth:+.0f} MiB "
            f"({growth / stack_mb:+.2f} frames' worth)"
        )
        # Bounded, not per frame: the previews keep at most `output.preview_frames` small
        # tiles and the metrics a record of a few KB per frame until metrics.nc is written.
        return 0 if growth < max(4 * stack_mb, 32.0) else 1
    finally:
        if not args.dir:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
