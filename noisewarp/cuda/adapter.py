"""Host or device arrays in, the same kind out: the bridge between the public API and
the CUDA drivers. A frame that arrives on the GPU (a torch CUDA tensor, a numba device
array) is warped in place and returned on the GPU; a host frame is copied over and back.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from noisewarp.cpu.diagnostics import Conditional
from noisewarp.cuda.arrays import as_device, is_device_array, shares_memory

__all__ = ["device_conditional", "warp_on_device"]


def device_conditional(pixels: int, channels: int) -> Conditional:
    """Flat device buffers for E[Y | X] (mean [H*W, C], carried [H*W])."""
    return Conditional(
        cuda.device_array((pixels, channels), np.float32), cuda.device_array(pixels, np.float32)
    )


def warp_on_device(driver, noise, centres, key, conditional, out=None):
    """Run ``driver(noise, centres, key, out, buffers) -> (frame, stats)`` on the GPU.

    ``conditional`` is false, True, or a ``Conditional`` of flat buffers (host or device)
    to fill. Returns ``(frame, stats, Conditional or None)``, each on the host when
    ``noise`` came from the host, on the device when it came from the device.
    """
    on_host = not is_device_array(noise)
    noise = as_device(noise, np.float32, "noise")
    centres = as_device(centres, np.float64, "map")
    height, width, channels = noise.shape
    if out is not None and shares_memory(out, noise):
        # The kernels write the frame while other threads still read the source.
        raise ValueError("out shares memory with noise: the warp needs a separate frame")
    buffers = None
    if isinstance(conditional, Conditional) and is_device_array(conditional.mean):
        buffers = conditional
    elif conditional:
        buffers = device_conditional(height * width, channels)
    frame, stats = driver(noise, centres, key, out, buffers)
    moments = None
    if buffers is not None:
        moments = buffers
        if on_host:
            if isinstance(conditional, Conditional):  # host buffers to fill in place
                buffers.mean.copy_to_host(conditional.mean)
                buffers.carried.copy_to_host(conditional.carried)
                moments = conditional
            else:
                moments = Conditional(buffers.mean.copy_to_host(), buffers.carried.copy_to_host())
        moments = moments.frame(height, width)
    if on_host:
        frame = frame.copy_to_host()
    return frame, stats, moments
