"""Tests of the CUDA kernels, under numba's CUDA simulator or on a real GPU.

They run only in a process started with ``NUMBA_ENABLE_CUDASIM=1`` (``tests/test_cuda.py``
starts one), so the simulator never leaks into the CPU tests, or with
``NOISEWARP_CUDA_TESTS=1`` on a machine with a GPU. Launch sizes are lowered so that
tiny frames still span several blocks and scan tiles.
"""

import os

import pytest

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
if not (SIMULATED or os.environ.get("NOISEWARP_CUDA_TESTS") == "1"):
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(autouse=True)
def small_launches(monkeypatch):
    from noisewarp.cuda import arrays, config

    monkeypatch.setattr(config, "THREADS", 32)
    if SIMULATED:  # read at run time by simulated kernels; compiled in on a real GPU
        monkeypatch.setattr(arrays, "SCAN_TILE", 16)
        monkeypatch.setattr(arrays, "SCAN_ITEMS", 2)
