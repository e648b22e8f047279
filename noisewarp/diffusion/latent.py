"""Latent diffusion pipelines (Stable Diffusion and kin) through their ``latents=`` argument.

The warped frame is the pipeline's initial latent (noise at 1/8 of the image, 4 channels);
with eta > 0 the pipeline's scheduler is a DDIM scheduler that takes each step's noise from
the stage's warped streams instead of the pipeline's generator (``SeamDDIMScheduler``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler


class SeamDDIMScheduler(DDIMScheduler):
    """DDIM whose eta > 0 noise comes from ``noise_sampler(step, sample)`` when one is set:
    the pipeline's own loop then runs on warped per-step noise."""

    noise_sampler = None
    _calls = 0

    def set_timesteps(self, *args, **kwargs):
        self._calls = 0
        return super().set_timesteps(*args, **kwargs)

    def step(self, model_output, timestep, sample, eta=0.0, **kwargs):
        if eta > 0 and self.noise_sampler is not None:
            kwargs["variance_noise"] = self.noise_sampler(self._calls, sample)
            kwargs.pop("generator", None)
        self._calls += 1
        return super().step(model_output, timestep, sample, eta=eta, **kwargs)


class LatentModel:
    """A diffusers pipeline with a VAE and a ``latents=`` argument, as the stage runs it."""

    kind = "latent"

    def __init__(self, pipeline, path: Path | str, prompt_embeds: torch.Tensor | None = None):
        from noisewarp.diffusion.samplers import ddim_scheduler

        self.pipeline = pipeline
        self.path = Path(path)
        self.prompt_embeds = prompt_embeds
        self.channels = int(pipeline.unet.config.in_channels)
        self.factor = 2 ** (len(pipeline.vae.config.block_out_channels) - 1)
        self.multiple = 2 ** (len(pipeline.unet.config.down_block_types) - 1)
        self.scheduler_config = dict(pipeline.scheduler.config)
        # The stage's DDIM settings (trailing spacing, no clipping), with the noise seam.
        template = ddim_scheduler(self.scheduler_config, 1)
        pipeline.scheduler = SeamDDIMScheduler.from_config(template.config)
        pipeline.set_progress_bar_config(disable=True)

    @classmethod
    def load(cls, directory: Path) -> LatentModel:
        from diffusers import DiffusionPipeline

        # Components saved as None (no safety checker, no text encoder) stay None.
        index = json.loads((directory / "model_index.json").read_text())
        absent = {name: None for name, entry in index.items()
                  if not name.startswith("_") and isinstance(entry, list)
                  and (entry[0] is None or not (directory / name).exists())}  # fmt: skip
        pipeline = DiffusionPipeline.from_pretrained(directory, local_files_only=True, **absent)
        for part in ("unet", "vae"):
            if getattr(pipeline, part, None) is None:
                raise ValueError(f"{directory} has no {part}: not a latent diffusion pipeline")
        return cls(pipeline, directory)

    def to(self, device: torch.device) -> LatentModel:
        self.pipeline.to(device)
        return self

    def image_size(self, height: int, width: int) -> tuple[int, int]:
        return height * self.factor, width * self.factor

    def check_noise(self, channels: int, height: int, width: int, where: str) -> None:
        from noisewarp.diffusion.models import check_noise

        check_noise(self, channels, height, width, where, f"latent channels, 1/{self.factor} size")

    def generate(self, warped, settings, noise_sampler=None) -> np.ndarray:
        """One frame from the warped initial latent [1, C, h, w]: float [H, W, 3] in [0, 1]."""
        pipeline = self.pipeline
        pipeline.scheduler.noise_sampler = noise_sampler
        prompt = {"prompt": settings.prompt}
        if self.prompt_embeds is not None:
            prompt = {"prompt_embeds": self.prompt_embeds.to(warped.device)}
        image = pipeline(
            **prompt,
            latents=warped,  # the pipeline scales it by init_noise_sigma itself
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance_scale,
            eta=settings.eta,
            height=warped.shape[-2] * self.factor,
            width=warped.shape[-1] * self.factor,
            output_type="np",
        ).images[0]
        return np.clip(image, 0, 1)
