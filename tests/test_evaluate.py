"""Methods on the bundled clip's real motion (small): white frames and noise that moves."""

from itertools import islice

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


@pytest.mark.parametrize("method", ["particle", "grid"])
def test_latent_resolution_equals_warping_at_full_size_then_pooling(method, tmp_path):
    """Noise at 1/8 of the clip (its map averaged over each noise pixel's footprint) moves
    like noise warped at the clip's full size and pooled over 8 x 8 blocks (sum / 8): the
    infinite-resolution claim, measured. Both stay white."""
    import noisewarp as nw
    from noisewarp.metrics import assert_white_noise, temporal_metrics

    frames, cache = 6, tmp_path / "flows.h5"
    full = VideoMotion(BUNDLED_CLIP, res=640, frames=frames, cache=cache)
    latent = VideoMotion(BUNDLED_CLIP, latent_factor=8, frames=frames, cache=cache)
    assert (latent.height, latent.width) == (full.height // 8, full.width // 8)

    def pooled(frame):
        h, w, c = frame.shape
        return frame.reshape(h // 8, 8, w // 8, 8, c).sum(axis=(1, 3)) / 8

    sequences = {}
    for name, motion, view in (("full", full, pooled), ("latent", latent, lambda x: x)):
        warper = nw.NoiseWarper(motion.height, motion.width, 4, method=method, seed=1)
        sequence = [view(warper.noise)]
        for step in islice(motion.steps(), frames - 1):
            sequence.append(view(warper.step(step.geometry)))
        sequences[name] = sequence
    maps = [step.geometry for step in islice(latent.steps(), frames - 1)]
    corr = {
        name: np.array(
            [
                temporal_metrics(seq[t], seq[t + 1], maps[t], "grid")["temporal_corr"]
                for t in range(frames - 1)
            ]
        )  # fmt: skip
        for name, seq in sequences.items()
    }
    assert corr["latent"].mean() > 0.5  # the clip moves, and the noise with it
    np.testing.assert_allclose(corr["latent"], corr["full"], atol=0.02)
    for frame in sequences["latent"][1:]:
        assert_white_noise(frame, label=f"{method} at 1/8")
