"""Fill the numba cache before a sweep, so that no job compiles.

    python -m noisewarp.precompile                          # every method, C = 4
    python -m noisewarp.precompile --methods particle grid --channels 3 4

Calls each chosen method once on a tiny frame for each channel count (particle
and grid compile one variant per C), plus ``initial_noise``, and prints each
kernel it compiled or loaded and how long each method took. The compiled code
goes to ``NUMBA_CACHE_DIR`` if it is set, else to ``__pycache__`` folders next
to the package's sources.

The cache on a cluster
    A sweep's jobs share the compiled kernels when ``NUMBA_CACHE_DIR`` points at a
    folder on a shared filesystem, in the submitting shell (the jobs inherit it)::

        export NUMBA_CACHE_DIR=/shared/noisewarp/numba-cache
        python -m noisewarp.precompile --methods particle grid
        python run.py -m method=particle,grid ... hydra/launcher=noisewarp_slurm

    Without it every job pays the first-call compile again (tens of seconds per
    method; ``benchmarks/compile_time.py`` measures it). numba files a kernel
    under the path of its source file, checks the file's modification time and
    size (an edit or a reinstall invalidates it), and keys each compiled
    version by signature and by the CPU: its name and feature set (AVX-512 or
    not, ...). So all nodes must import the same installed copy of noisewarp
    (one install on the shared filesystem), and a cluster with several node
    types needs one precompile per type, run on a node of that type (for
    example a short job per partition): each type adds its own versions to
    the same cache, and a node whose CPU matches none of them compiles and
    adds one. Pinning a common target (``NUMBA_CPU_NAME=generic``) would
    share one version across types but gives up AVX-512, which the generator
    and grid's areas rely on for speed. numba writes cache files atomically,
    so jobs that compile at the same time do not corrupt the cache, they
    only waste time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["precompile", "compiled_kernels"]

# A frame this small compiles the same code as any other size.
_SIZE = 8


def compiled_kernels() -> dict[str, tuple[int, int]]:
    """The package's numba kernels that hold compiled code in this process:
    ``{module.name: (cache hits, cache misses)}`` (a miss is a compile)."""
    from numba.core.registry import CPUDispatcher

    found = {}
    for name, module in list(sys.modules.items()):
        if not name.startswith("noisewarp") or module is None:
            continue
        for value in list(vars(module).values()):
            if isinstance(value, CPUDispatcher) and value.signatures:
                func = value.py_func
                key = f"{func.__module__}.{func.__qualname__}"
                found[key] = (
                    sum(value.stats.cache_hits.values()),
                    sum(value.stats.cache_misses.values()),
                )
    return found


def precompile(methods, channels=(4,), verbose: bool = True) -> dict[str, float]:
    """Warp one tiny frame with each of ``methods`` for each channel count in ``channels``.

    Parameters
    ----------
    methods : iterable of str
        Names from ``noisewarp.METHODS``.
    channels : iterable of int
        Channel counts the sweep will use.
    verbose : bool
        Print the kernels each method compiled or loaded, and the times.

    Returns
    -------
    dict
        Seconds per method (all channel counts together).
    """
    import noisewarp as nw

    deformation = nw.deform.get_deformation("rotate")
    times = {}
    for method in methods:
        before = compiled_kernels()
        start = time.perf_counter()
        for c in channels:
            noise = nw.initial_noise(_SIZE, _SIZE, c, seed=0)
            nw.warp(noise, deformation, method=method, key=nw.Key(0, 1))
        times[method] = time.perf_counter() - start
        if verbose:
            after = compiled_kernels()
            new = {k: v for k, v in after.items() if before.get(k) != v}
            compiled = sorted(k for k, (_, miss) in new.items() if miss > before.get(k, (0, 0))[1])
            loaded = sorted(k for k in new if k not in compiled)
            print(f"{method}: {times[method]:.1f} s, {len(compiled)} compiled, "
                  f"{len(loaded)} loaded from the cache")  # fmt: skip
            for k in compiled:
                print(f"  compiled {k}")
            for k in loaded:
                print(f"  cached   {k}")
    return times


def main(argv: list[str] | None = None) -> int:
    import os

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=None, help="default: every method")
    parser.add_argument("--channels", nargs="+", type=int, default=[4])
    args = parser.parse_args(argv)
    from noisewarp.warp import METHODS

    methods = args.methods or list(METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; valid: {sorted(METHODS)}")
    where = os.environ.get("NUMBA_CACHE_DIR")
    if where:  # numba silently falls back to __pycache__ when it cannot write there
        import tempfile

        try:
            Path(where).mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=where):
                pass
        except OSError as error:
            parser.error(f"NUMBA_CACHE_DIR={where} is not a writable folder ({error})")
    print(f"numba cache: {where or '__pycache__ next to the package sources'}")
    start = time.perf_counter()
    precompile(methods, args.channels)
    print(f"total: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
