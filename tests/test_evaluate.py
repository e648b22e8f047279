"""Methods on the bundled clip's real motion (small): white frames and noise that moves."""

import numpy as np
import pytest

from noisewarp.evaluate import compare_methods
from noisewarp.motion import BUNDLED_CLIP, VideoMotion

pytest.importorskip("cv2")


def test_integral_warps_carry_noise_where_the_clip_moves(tmp_path):
    frames = 8
    motion = VideoMotion(BUNDLED_CLIP, res=160, frames=frames, cache=tmp_path / "flows.h5")
    table = compare_methods(motion, ["random", "fixed", "nearest", "grid", "particle"], frames)
    means = table.mean("frame")
    for method in ("grid", "particle"):
        assert means.passed.sel({"method": method}) == 1.0  # every frame white at 5 sigma
        moving = float(means.moving_corr.sel({"method": method}))
        # Along the motion: far above noise stuck to the screen and fresh noise.
        assert moving > float(means.moving_corr.sel({"method": "fixed"})) + 0.3, moving
        assert moving > float(means.moving_corr.sel({"method": "random"})) + 0.4, moving
    assert abs(float(means.moving_corr.sel({"method": "random"}))) < 0.1
    assert np.isfinite(table.moving_corr.sel({"method": "grid"})).sum() >= frames // 2
