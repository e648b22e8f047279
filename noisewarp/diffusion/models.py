"""Diffusion models the stage runs: the built-in pixel-space UNet or a user's local
diffusers checkpoint. Nothing is ever downloaded (``local_files_only``)."""

from __future__ import annotations

from pathlib import Path

import torch

# The built-in model (trained by ``python -m noisewarp.diffusion.train``), in diffusers'
# DDPMPipeline layout: model_index.json, unet/, scheduler/.
BUILTIN_MODEL = Path(__file__).resolve().parents[2] / "data" / "builtin-unet"


def builtin_unet_config(sample_size: int = 48) -> dict:
    """A small RGB ``UNet2DModel`` (about 3 M parameters): four levels, attention only at
    the coarsest (1/8), so 128 x 72 frames (divisible by 8) run at 40-70 ms on one core."""
    return dict(
        sample_size=sample_size,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(32, 64, 64, 128),
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=16,
        attention_head_dim=32,
    )


def builtin_scheduler_config() -> dict:
    """Cosine noise schedule, v-prediction: training samples timesteps uniformly, which
    spreads log-SNR logistically around 0, and v's loss weights x0's error by 1 + SNR, so
    the low-SNR end keeps its weight."""
    return dict(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        clip_sample=False,
    )


class ModelError(ValueError):
    """A model directory that is missing or is not a diffusers checkpoint."""


def resolve_device(name: str | None) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or None/``auto`` (CUDA when this torch has it)."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else "no visible GPU"
        raise RuntimeError(
            f"device {name!r} asked for, but torch {torch.__version__} has {build}; "
            "use device=cpu, or install a CUDA build of torch"
        )
    return device
