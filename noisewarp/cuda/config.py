"""Launch tunables of the CUDA kernels. Tests lower ``THREADS`` so that tiny frames
still span several blocks; the scans' tile and the channel bound are compiled in."""

THREADS = 256  # threads per block of the per-pixel kernels: a power of two <= MAX_THREADS

SCAN_TILE = 256  # threads per block of the prefix scans (their shared arrays' size)
SCAN_ITEMS = 8  # consecutive values each scan thread sums: one tile = 2048 values
MAX_THREADS = 1024  # the block reductions' shared arrays hold this many threads
MAX_CHANNELS = 16  # channels a frame may have on the GPU (latent models use 4 or 16)
