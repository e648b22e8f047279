"""Launch tunables of the CUDA kernels. Tests lower ``THREADS`` so that tiny frames
still span several blocks; the scans' tile and the channel bound are compiled in."""

THREADS = 256  # threads per block of the per-pixel and per-source kernels
REDUCE_BLOCKS = 128  # blocks of the diagnostics reduction (fixed: its sums are ordered)

SCAN_TILE = 256  # threads (and elements) per block of the prefix scans; a power of two
MAX_CHANNELS = 16  # channels a frame may have on the GPU (latent models use 4 or 16)
