"""Reference against fast ``gaussianity``, side by side in one process (medians of several calls).

Usage: ``python benchmarks/metrics_speed.py [--sizes 256 1024 2048] [--repeat 7]``.
Prints, per float32 [S, S, 4] frame, the numpy reference and the fast path with
its parts (pass 1: histogram and channel sums; pass 2: fused moments, lags,
cross-channel and KS collection; KS: candidate selection, sort and exact terms;
spectrum: ``rfft2`` and radial sums), and their ratio.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path


def _keyed_cache() -> None:
    path = Path(__file__).resolve().parents[1] / "noisewarp" / "jitcache.py"
    spec = importlib.util.spec_from_file_location("_noisewarp_jitcache", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.use_keyed_cache()


def _median_ms(function, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 2048])
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    _keyed_cache()

    import numba

    print(f"numba threads {numba.get_num_threads()} ({numba.threading_layer()})")
    header = ("size", "reference", "fast", "ratio", "pass1", "pass2", "ks", "spectrum")
    print("".join(f"{h:>11}" for h in header) + "   (ms, medians)")
    for size in args.sizes:
        row, candidates, n = _time_size(size, args.channels, args.repeat)
        print(f"{row[0]:>11}" + "".join(f"{v:>11.2f}" for v in row[1:]))
        print(f"{'':>11}KS candidates: {candidates} of {n} values")


def _time_size(size: int, channels: int, repeat: int) -> tuple[list, int, int]:
    """Reference, fast and the fast path's parts on one [size, size, channels] frame."""
    import numpy as np

    from noisewarp.metrics import _kernels as k
    from noisewarp.metrics import spatial as s

    frame = np.random.default_rng(size).standard_normal((size, size, channels))
    frame = frame.astype(np.float32)
    batch = frame[None]
    s.gaussianity(frame)  # compile, build the cached layouts
    blocks = min(k.BLOCKS, size)
    n = frame.size
    hist = s._histogram_buffer()[:blocks]
    sums = k.histogram_sums(batch, hist)[0]
    counts = k.reduce_histogram(hist)
    wanted, before, offsets = k.ks_candidates(hist, counts, s._edge_cdf(), n, s._KS_MARGIN)
    collected = np.empty(offsets[-1])
    mean_c = sums / (n // channels)
    shift = mean_c - sums.sum() / n

    def pass1():
        k.histogram_sums(batch, hist)
        k.reduce_histogram(hist)

    def pass2():
        k.fused_sums(batch, mean_c, shift, blocks, wanted, offsets, collected)

    def ks():
        before = k.ks_candidates(hist, counts, s._edge_cdf(), n, s._KS_MARGIN)[1]
        s._ks_exact(collected, before, n)

    ref_ms = _median_ms(lambda: s._gaussianity_reference(batch), max(3, repeat // 2))
    fast_ms = _median_ms(lambda: s.gaussianity(frame), repeat)
    parts = [
        _median_ms(part, repeat)
        for part in (pass1, pass2, ks, lambda: s._spectrum_fast(batch, blocks))
    ]
    return [size, ref_ms, fast_ms, ref_ms / fast_ms, *parts], int(offsets[-1]), n


if __name__ == "__main__":
    main()
