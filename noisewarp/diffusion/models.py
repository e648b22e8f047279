"""Diffusion models the stage runs: the built-in pixel-space UNet or a user's local
diffusers checkpoint. Nothing is ever downloaded (``local_files_only``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from noisewarp.diffusion.errors import DeviceError, ModelError

# The built-in model (trained by ``python -m noisewarp.diffusion.train``), in diffusers'
# DDPMPipeline layout: model_index.json, unet/, scheduler/.
BUILTIN_MODEL = Path(__file__).resolve().parents[1] / "data" / "builtin-unet"


def builtin_unet_config(sample_size: int = 32) -> dict:
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


def resolve_device(name: str | None) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or None/``auto`` (CUDA when this torch has it)."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else "no visible GPU"
        raise DeviceError(
            f"device {name!r} asked for, but torch {torch.__version__} has {build}; "
            "use device=cpu, or install a CUDA build of torch"
        )
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise DeviceError(
            f"device {name!r} asked for, but torch sees {torch.cuda.device_count()} GPU(s) "
            "(cuda:0 is the first; check CUDA_VISIBLE_DEVICES)"
        )
    return device


class PixelModel:
    """A pixel-space ``UNet2DModel`` and its scheduler config, as the samplers call it:
    ``model(x, t)`` -> the network's output (epsilon, v or x0, per the scheduler)."""

    kind = "pixel"

    def __init__(self, unet, scheduler_config: dict, path: Path):
        self.unet = unet.eval()
        self.scheduler_config = dict(scheduler_config)
        self.path = path
        self.channels = int(unet.config.in_channels)
        # Every down block but the last halves the size: frames must divide by this.
        self.multiple = 2 ** (len(unet.config.down_block_types) - 1)

    def image_size(self, height: int, width: int) -> tuple[int, int]:
        """The image a noise frame of this size becomes (pixel space: the same size)."""
        return height, width

    def to(self, device: torch.device) -> PixelModel:
        self.unet.to(device)
        return self

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, timestep) -> torch.Tensor:
        timestep = torch.as_tensor(timestep, device=x.device).expand(len(x))
        return self.unet(x, timestep).sample

    def denoiser(self, settings) -> PixelModel:
        """What the samplers call: the model itself (unconditional)."""
        return self

    def encode(self, image) -> torch.Tensor:
        """uint8 [H, W, 3] -> the model's input space: [1, 3, H, W] in [-1, 1]."""
        from noisewarp.diffusion.images import to_model_range

        return torch.from_numpy(to_model_range(image)).unsqueeze(0).to(self.unet.device)

    def decode(self, x: torch.Tensor) -> np.ndarray:
        """[1, 3, H, W] in the model's space -> float [H, W, 3] in [0, 1]."""
        return np.clip((x[0].permute(1, 2, 0).cpu().numpy() + 1) / 2, 0, 1)

    def check_noise(self, channels: int, height: int, width: int, where: str) -> None:
        check_noise(self, channels, height, width, where, "an RGB pixel model: noise at image size")


def check_noise(model, channels: int, height: int, width: int, where: str, hint: str) -> None:
    """A clear error for noise ``model`` cannot take (its channels, its size multiple)."""
    if channels != model.channels:
        raise ModelError(
            f"{where} has {channels} channels, the model {model.path} takes {model.channels} "
            f"({hint}: run the noise with channels={model.channels})"
        )
    if height % model.multiple or width % model.multiple:
        raise ModelError(
            f"{where} is {height} x {width}; the model {model.path} needs sides divisible "
            f"by {model.multiple} (choose res, or deform.size with deform.latent_factor, so "
            "both sides are)"
        )


def _scheduler_config(directory: Path) -> dict:
    for candidate in (directory / "scheduler" / "scheduler_config.json",
                      directory / "scheduler_config.json"):  # fmt: skip
        if candidate.exists():
            return json.loads(candidate.read_text())
    return {}  # a bare UNet directory: diffusers' DDPM defaults (linear betas, epsilon)


def load_model(path: str | Path | None = None, device: torch.device | None = None):
    """Load a local diffusers checkpoint (never downloads).

    ``path`` is None (the built-in model), a ``UNet2DModel`` directory (``config.json``
    and weights), a DDPMPipeline-style directory (``unet/`` and ``scheduler/``), or a
    latent pipeline (``model_index.json`` naming e.g. ``StableDiffusionPipeline``),
    returned as ``latent.LatentModel``.
    """
    from diffusers import UNet2DModel

    directory = Path(path).expanduser() if path else BUILTIN_MODEL
    if not directory.is_dir():
        hint = " (train it: python -m noisewarp.diffusion.train)" if path is None else ""
        raise ModelError(f"model directory {str(directory)!r} does not exist{hint}")
    index = directory / "model_index.json"
    kind = json.loads(index.read_text()).get("_class_name", "") if index.exists() else ""
    if kind and kind != "DDPMPipeline":
        from noisewarp.diffusion.latent import LatentModel

        model = LatentModel.load(directory)
    else:
        unet_dir = directory / "unet" if (directory / "unet").is_dir() else directory
        if not (unet_dir / "config.json").exists():
            raise ModelError(
                f"{str(directory)!r} is not a diffusers checkpoint: no model_index.json, "
                "unet/config.json or config.json"
            )
        unet = UNet2DModel.from_pretrained(unet_dir, local_files_only=True)
        model = PixelModel(unet.float(), _scheduler_config(directory), directory)
    return model.to(device or torch.device("cpu"))
