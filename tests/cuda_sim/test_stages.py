"""The drivers name their stages to ``on_stage``, which changes nothing they compute, and
``benchmarks/gpu.py`` times exactly those stages (its timings are meaningless here)."""

import importlib.util
from pathlib import Path

import numpy as np
from numba import cuda

import noisewarp as nw
from noisewarp.core.rng import Key, Purpose
from noisewarp.cuda import grid, hiwyn, particle
from noisewarp.deform import Rotate

H, W, C = 11, 14, 4
BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"


def _benchmark():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _runs():
    """One frame of each driver on device arrays, as the benchmark calls them."""
    noise = cuda.to_device(nw.initial_noise(H, W, C, seed=6))
    tmap = cuda.to_device(Rotate(degrees=23.0).map(H, W))
    key = Key(2, 7)
    streams = (key.stream(Purpose.BRIDGE), key.stream(Purpose.FRESH))

    def run_particle(**kwargs):
        return particle.particle_warp(noise, tmap, *streams, **kwargs)

    def run_grid(**kwargs):
        return grid.grid_warp(noise, tmap, None, *streams, **kwargs)

    def run_hiwyn(**kwargs):
        subpixel = key.stream(Purpose.SUBPIXEL)
        return hiwyn.hiwyn_warp(noise, tmap, None, 2, subpixel, streams[1], **kwargs)

    return {particle: run_particle, grid: run_grid, hiwyn: run_hiwyn}


def test_stages_are_named_in_order_and_change_nothing():
    for driver, run in _runs().items():
        named = []
        out, stats = run(on_stage=named.append)
        assert tuple(named) == driver.STAGES
        plain, plain_stats = run()
        np.testing.assert_array_equal(out.copy_to_host(), plain.copy_to_host())
        assert stats == plain_stats


def test_the_benchmark_times_the_drivers_stages():
    stage_times = _benchmark()._stage_times
    for driver, run in _runs().items():
        assert tuple(stage_times(cuda, run, 1)) == driver.STAGES
