"""HDF5 noise stacks: layout, xarray, resume, mismatches, damaged files, SIGKILL mid-write."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

from noisewarp.io import (
    FORMAT,
    StackError,
    StackMismatchError,
    StackWriter,
    open_stack,
    read_frames,
    stack_attrs,
)

SHAPE = (6, 3, 8, 10)  # frames, channels, height, width
IDENTITY = {"method": "particle", "seed": 0}


def frame(index: int, shape=SHAPE) -> np.ndarray:
    rng = np.random.default_rng(index)
    return rng.standard_normal((shape[2], shape[3], shape[1])).astype(np.float32)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write(path, count: int, **kwargs) -> StackWriter:
    writer = StackWriter(
        path,
        SHAPE,
        IDENTITY,
        "res: 10\n",
        ["fresh_pixels", "area_min"],
        attrs={"method": "particle", "seed": 0},
        **kwargs,
    )
    for index in range(writer.frames_written, count):
        diagnostics = {"fresh_pixels": index, "area_min": 0.5} if index else {}
        tmap = np.full((SHAPE[2], SHAPE[3], 2), float(index)) if index else None
        writer.write(index, frame(index), 0.01 * index, diagnostics, tmap)
    return writer


def test_layout_and_xarray(tmp_path):
    path = tmp_path / "s.h5"
    with write(path, SHAPE[0], store_maps=True) as writer:
        writer.finish()
    dataset = xr.open_dataset(path, engine="h5netcdf")  # as-is, no helper
    assert dataset["noise"].dims == ("frame", "channel", "y", "x")
    assert dataset["noise"].dtype == np.float32
    assert dataset["noise"].shape == SHAPE
    assert dataset["map"].dims == ("frame", "y", "x", "component")
    assert dataset["fresh_pixels"].dims == ("frame",)
    assert list(dataset["frame"].values) == list(range(SHAPE[0]))
    assert dataset.attrs["format"] == FORMAT
    assert dataset.attrs["complete"] == 1 and dataset.attrs["frames_written"] == SHAPE[0]
    assert dataset.attrs["method"] == "particle" and dataset.attrs["config"] == "res: 10\n"
    for index in range(SHAPE[0]):
        np.testing.assert_array_equal(
            dataset["noise"].isel(frame=index).transpose("y", "x", "channel").values, frame(index)
        )
    assert np.isnan(dataset["fresh_pixels"].values[0])
    assert dataset["fresh_pixels"].values[3] == 3
    # One frame per chunk.
    import h5py

    with h5py.File(path, "r") as handle:
        assert handle["noise"].chunks == (1, *SHAPE[1:])
    dataset.close()
    np.testing.assert_array_equal(read_frames(path)[2], frame(2))


def test_partial_stack_exposes_only_complete_frames(tmp_path):
    path = tmp_path / "s.h5"
    write(path, 3).close()
    attrs = stack_attrs(path)
    assert attrs["frames_written"] == 3 and attrs["complete"] == 0
    with open_stack(path) as dataset:
        assert dataset.sizes["frame"] == 3
    assert read_frames(path).shape == (3, 8, 10, 3)
    with pytest.raises(IndexError, match="frame 4 is not complete"):
        read_frames(path, [4])


def test_resume_continues_after_the_last_complete_frame(tmp_path):
    path = tmp_path / "s.h5"
    write(path, 2).close()
    with write(path, SHAPE[0]) as writer:
        assert writer.resumed
        writer.finish()
    np.testing.assert_array_equal(read_frames(path), np.stack([frame(i) for i in range(6)]))
    with StackWriter(path, SHAPE, IDENTITY) as writer:
        assert writer.complete and writer.frames_written == SHAPE[0]
        np.testing.assert_array_equal(writer.read(5), frame(5))
        assert writer.table()["fresh_pixels"][4] == 4


def test_frames_must_come_in_order(tmp_path):
    with write(tmp_path / "s.h5", 2) as writer:
        with pytest.raises(ValueError, match="expected frame 2, got 3"):
            writer.write(3, frame(3))


def test_different_config_never_overwrites(tmp_path):
    path = tmp_path / "s.h5"
    write(path, 3).close()
    before = digest(path)
    with pytest.raises(StackMismatchError) as error:
        StackWriter(path, SHAPE, {**IDENTITY, "seed": 1})
    message = str(error.value)
    assert str(path) in message and "seed: stored 0, now 1" in message
    assert "output.overwrite=true" in message and "new output path" in message
    with pytest.raises(StackMismatchError, match="shape"):
        StackWriter(path, (7, *SHAPE[1:]), IDENTITY)
    assert digest(path) == before
    # Asked for explicitly, it is replaced.
    with StackWriter(path, SHAPE, {**IDENTITY, "seed": 1}, overwrite=True) as writer:
        assert not writer.resumed and writer.frames_written == 0


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_file_is_a_clear_error_and_left_alone(tmp_path, damage):
    path = tmp_path / "s.h5"
    write(path, 4).close()
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 3])
    elif damage == "garbage":
        path.write_bytes(b"not hdf5 at all" * 100)
    else:
        path.write_bytes(b"")
    before = digest(path)
    for attempt in (
        lambda: StackWriter(path, SHAPE, IDENTITY),
        lambda: stack_attrs(path),
        lambda: read_frames(path),
    ):
        with pytest.raises(StackError) as error:
            attempt()
        assert str(path) in str(error.value)
        assert "left untouched" in str(error.value)
    assert path.exists() and digest(path) == before


def test_hdf5_that_is_not_a_stack(tmp_path):
    import h5py

    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as handle:
        handle["data"] = np.arange(3)
    before = digest(path)
    with pytest.raises(StackError, match="not a noisewarp stack.*lacks .*'noise' dataset"):
        StackWriter(path, SHAPE, IDENTITY)
    assert digest(path) == before


def test_a_stack_this_process_may_not_write_says_so():
    from noisewarp.io import _open_failure

    reason = _open_failure(PermissionError(13, "Permission denied"))
    assert "permission denied" in reason and "corrupted" not in reason


def test_a_stack_that_fails_to_be_created_is_removed(tmp_path):
    """Half-made, it would block every rerun as "not a noisewarp stack"."""
    path = tmp_path / "s.h5"
    with pytest.raises(TypeError):
        StackWriter(path, SHAPE, IDENTITY, attrs={"seed": 2**64})  # no HDF5 type for it
    assert not path.exists()


def test_maps_asked_of_a_stack_written_without_them_is_refused(tmp_path):
    path = tmp_path / "s.h5"
    write(path, 3).close()
    before = digest(path)
    with pytest.raises(StackMismatchError, match="written without maps"):
        write(path, SHAPE[0], store_maps=True)
    assert digest(path) == before


CHILD = r"""
import sys
import numpy as np
from noisewarp.io import StackWriter

from noisewarp.io import _channels_first

frames, size = int(sys.argv[2]), int(sys.argv[3])
writer = StackWriter(sys.argv[1], (frames, 4, size, size), {"k": 1}, "", ["a"], store_maps=True)
index = writer.frames_written
# Load the frame transpose (numba) before "ready": the kills must fall among the writes.
_channels_first(np.zeros((1, 1, 4), np.float32), np.zeros((4, 1, 1), np.float32))
print("ready", index, flush=True)
while index < frames:
    writer.write(index, np.full((size, size, 4), index, np.float32), 0.1, {"a": index},
                 np.full((size, size, 2), index, np.float64))
    index += 1
writer.finish()
writer.close()
"""


@pytest.mark.slow
def test_sigkill_mid_write_leaves_a_readable_resumable_file(tmp_path):
    """Kill a writer at random moments (mostly inside HDF5 writes and flushes); every time
    the file opens, frames < frames_written are intact, and writing resumes."""
    path = tmp_path / "killed.h5"
    frames, size = 300, 192  # ~600 KiB per frame: the writer spends its time in HDF5
    # The kills fall within the time an uninterrupted writer takes on this machine.
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "timed.h5"), str(frames), str(size)],
        stdout=subprocess.PIPE,
        text=True,
    )
    child.stdout.readline()
    began = time.perf_counter()
    child.wait()
    child.stdout.close()
    duration = time.perf_counter() - began
    rng = random.Random(0)
    kills, progress = 0, []
    for _ in range(12):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), str(frames), str(size)],
            stdout=subprocess.PIPE,
            text=True,
        )
        child.stdout.readline()  # "ready": imports done, file open
        time.sleep(rng.uniform(0.0, 0.15 * duration))
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            kills += 1
        child.wait()
        child.stdout.close()
        attrs = stack_attrs(path)
        written = int(attrs["frames_written"])
        progress.append(written)
        stack = read_frames(path)
        assert stack.shape[0] == written
        for index in range(written):
            assert (stack[index] == index).all(), f"frame {index} of {written} is damaged"
        if attrs["complete"]:
            break
    assert kills >= 3, f"the writer finished too fast to be killed ({progress})"
    assert progress == sorted(progress) and progress[-1] > 0


def test_reading_a_stack_that_does_not_exist_says_so(tmp_path):
    """Not "not a readable HDF5 file (corrupted?)" with advice to move it away."""
    from noisewarp.io import open_stack, read_frames, stack_attrs

    missing = tmp_path / "none.h5"
    for read in (stack_attrs, read_frames, open_stack):
        with pytest.raises(FileNotFoundError, match="no noise stack at .*none.h5"):
            read(missing)
    assert not missing.exists()
