"""The RAFT flow path with randomly initialised weights: ``python tests/raft_check.py DIR``.

Run by ``tests/test_opticalflow.py`` in its own process. Exit 77 (and the reason) when
torch or torchvision is missing. Checks loading from a local file, padding (frames under
RAFT's 128 x 128 minimum too), normalisation and layout (the estimate is torchvision's
RAFT on the padded [-1, 1] frames, cropped, as (dx, dy)), not accuracy; and that the
weights' content, not their path, keys the flow cache.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO / "noisewarp" / "data" / "bigbuckbunny.mp4"


def _import_raft():
    """torchvision's RAFT constructor, or exit 77 with the reason.

    A torchvision wheel built for CUDA torch cannot load its compiled ops beside a CPU
    torch of the same version (CI's pair), and its import then fails while registering
    fake kernels for two of them (nms, qnms). RAFT is plain PyTorch and uses none:
    declare the two schemas in this process and import again.
    """
    try:
        import torch
    except ImportError as error:
        sys.exit(print(f"RAFT path needs torch: {error}") or 77)
    try:
        from torchvision.models.optical_flow import raft_small
    except ImportError as error:
        sys.exit(print(f"RAFT path needs torchvision: {error}") or 77)
    except RuntimeError as error:
        if "torchvision::" not in str(error):
            raise
        ops = torch.library.Library("torchvision", "DEF")
        for name in ("nms", "qnms"):
            ops.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _import_raft.ops = ops  # keep the declarations alive
        from torchvision.models.optical_flow import raft_small
    return raft_small


def main(directory: Path) -> None:
    raft_small = _import_raft()
    import torch

    from noisewarp import opticalflow as of
    from noisewarp.video import open_video

    torch.manual_seed(0)
    net = raft_small(weights=None).eval()
    weights = directory / "raft_small.pth"
    torch.save(net.state_dict(), weights)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 36, 44, 3), dtype=np.uint8)
    flow = of.estimate(*frames, method="raft", weights=str(weights), model="small", updates=2)
    assert flow.shape == (36, 44, 2) and flow.dtype == np.float32, (flow.shape, flow.dtype)
    assert np.isfinite(flow).all()

    # Padded to RAFT's smallest input, 128 x 128; the backward flow runs next -> prev.
    padded = np.pad(frames, ((0, 0), (0, 128 - 36), (0, 128 - 44), (0, 0)), mode="edge")
    batch = torch.from_numpy(padded.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2)
    with torch.no_grad():
        reference = net(batch[1:], batch[:1], num_flow_updates=2)[-1][0]
    # Same model and inputs; float32 convolutions may take another path per call.
    np.testing.assert_allclose(flow, reference.permute(1, 2, 0).numpy()[:36, :44], atol=1e-5)
    assert np.abs(flow).max() > 0

    # Other weights under the same path: a new estimate and a new cache key.
    settings = {"weights": str(weights), "model": "small", "updates": 2}
    reader = open_video(CLIP, frames=2, size=48)
    described = of.cache_description(reader, "raft", settings)
    torch.manual_seed(1)
    torch.save(raft_small(weights=None).state_dict(), weights)
    os.utime(weights, (1, 1))  # a new stamp even within the file system's time resolution
    again = of.estimate(*frames, method="raft", weights=str(weights), model="small", updates=2)
    assert not np.array_equal(again, flow)
    assert of.cache_description(reader, "raft", settings)["settings"] != described["settings"]
    print("raft ok")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
