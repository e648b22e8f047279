"""The diffusion stage's errors in the user's inputs: the CLI prints them as one line
(``noisewarp.cli.USER_ERRORS``), so this module must not import torch."""

from __future__ import annotations


class ModelError(ValueError):
    """A model directory that is missing, is not a diffusers checkpoint, or cannot run
    the asked noise or mode."""


class DeviceError(RuntimeError):
    """A torch device this machine or this build of torch does not have."""


class NoiseStackError(ValueError):
    """A noise stack the stage cannot diffuse: missing, unreadable, of the wrong shape or
    length, or holding non-finite values."""
