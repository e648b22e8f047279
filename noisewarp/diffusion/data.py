"""Noise stacks as a torch ``Dataset``: frames read lazily from the HDF5 file."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from noisewarp.diffusion.errors import NoiseStackError
from noisewarp.io import stack_attrs


class NoiseStackDataset(torch.utils.data.Dataset):
    """The complete frames of a noise stack (``noisewarp.io``), one [C, H, W] float32 tensor
    per item, read from disk when asked for (``NoiseStackError`` if it is not finite).

    The file is opened on first use in each process (a ``DataLoader`` worker opens its
    own: an HDF5 handle must not cross a fork) and only the asked frame is read.

    >>> dataset = NoiseStackDataset("outputs/run/noise.h5")  # doctest: +SKIP
    >>> dataset[0].shape                                     # doctest: +SKIP
    torch.Size([4, 144, 256])
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        attrs = stack_attrs(self.path)  # checks the file is a stack; clear error if not
        self.frames = int(attrs["frames_written"])
        self.attrs = attrs
        self._handle, self._pid = None, None
        with self._open() as handle:
            self.shape = tuple(int(n) for n in handle["noise"].shape[1:])

    def _open(self):
        from noisewarp.io import _open_h5

        return _open_h5(self.path, "r")

    def __len__(self) -> int:
        return self.frames

    def __getitem__(self, index: int) -> torch.Tensor:
        if not -self.frames <= index < self.frames:
            raise IndexError(f"frame {index} is not complete in {self.path} ({self.frames} frames)")
        if self._handle is None or self._pid != os.getpid():
            self._handle, self._pid = self._open(), os.getpid()
        frame = torch.from_numpy(self._handle["noise"][index % self.frames])
        # torch's count, not core.checks.count_nonfinite: numba's parallel kernels are not
        # safe in a DataLoader worker forked from a process that ran them.
        bad = int((~torch.isfinite(frame)).sum())
        if bad:  # NaN noise would come out as black frames and NaN metrics
            raise NoiseStackError(
                f"frame {index % self.frames} of the noise stack {str(self.path)!r} holds {bad} "
                "non-finite values (NaN or Inf): the file is corrupt; write the stack again"
            )
        return frame

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __getstate__(self) -> dict:  # workers get the path, never the open handle
        return {**self.__dict__, "_handle": None, "_pid": None}
