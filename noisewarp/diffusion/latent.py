"""Latent diffusion pipelines (Stable Diffusion and kin), as the stage runs them.

Generate: the warped frame is the pipeline's initial latent through its ``latents=``
argument (noise at 1/8 of the image, 4 channels); with eta > 0 the pipeline's scheduler is
a DDIM scheduler that takes each step's noise from the stage's warped streams instead of
the pipeline's generator (``SeamDDIMScheduler``). Edit: the stage's own sampler runs in the
latent space, on the VAE's encoding of each frame (``encode``, ``denoiser``, ``decode``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler

from noisewarp.diffusion.errors import ModelError


class SeamDDIMScheduler(DDIMScheduler):
    """DDIM whose eta > 0 noise comes from ``noise_sampler(step, sample)`` when one is set:
    the pipeline's own loop then runs on warped per-step noise. Each step goes to the next
    of ``timesteps`` (the last to alpha = 1), as ``samplers.sample`` does."""

    noise_sampler = None
    _calls = 0

    def set_timesteps(self, *args, **kwargs):
        self._calls = 0
        return super().set_timesteps(*args, **kwargs)

    def step(self, model_output, timestep, sample, eta=0.0, generator=None,
             variance_noise=None, return_dict=True, **kwargs):  # fmt: skip
        """``DDIMScheduler.step`` (``use_clipped_model_output`` has no effect: no clipping)."""
        from diffusers.schedulers.scheduling_ddim import DDIMSchedulerOutput
        from diffusers.utils.torch_utils import randn_tensor

        from noisewarp.diffusion.samplers import ddim_step, next_timestep

        if eta > 0 and self.noise_sampler is not None:
            variance_noise = self.noise_sampler(self._calls, sample)
        elif eta > 0 and variance_noise is None:
            variance_noise = randn_tensor(
                model_output.shape, generator, model_output.device, model_output.dtype
            )
        self._calls += 1
        target = next_timestep(self.timesteps, timestep)
        prev, x0 = ddim_step(self, model_output, timestep, target, sample, eta, variance_noise)
        if not return_dict:
            return prev, x0
        return DDIMSchedulerOutput(prev_sample=prev, pred_original_sample=x0)


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
                raise ModelError(f"{directory} has no {part}: not a latent diffusion pipeline")
        return cls(pipeline, directory)

    def to(self, device: torch.device) -> LatentModel:
        self.pipeline.to(device)
        return self

    def check_prompt(self, settings) -> None:
        """A clear error when this pipeline has no prompt source for ``settings`` (either
        mode): no text encoder and no ``diffusion.prompt_embeds``, guidance without the
        empty prompt's embeddings, or embeddings the UNet cannot take."""
        where = f"the pipeline {self.path}"
        if self.prompt_embeds is not None:
            dim = self.pipeline.unet.config.cross_attention_dim
            shape = tuple(self.prompt_embeds.shape)
            if len(shape) != 3 or shape[0] != 1 or (isinstance(dim, int) and shape[2] != dim):
                raise ModelError(
                    f"diffusion.prompt_embeds={settings.prompt_embeds} holds an array of shape "
                    f"{shape}; {where} takes [1, tokens, {dim}] (its UNet's "
                    "cross_attention_dim): save the text encoder's output for one prompt"
                )
            if not self.prompt_embeds.is_floating_point():
                raise ModelError(
                    f"diffusion.prompt_embeds={settings.prompt_embeds} holds "
                    f"{self.prompt_embeds.dtype} values; prompt embeddings are floats"
                )
        if self._encodes_prompts():
            return
        if self.prompt_embeds is None:
            raise ModelError(
                f"{where} has no text encoder and tokenizer: give diffusion.prompt_embeds=PATH.npy"
            )
        if settings.guidance_scale > 1:
            raise ModelError(
                f"diffusion.guidance_scale={settings.guidance_scale} needs the empty prompt's "
                f"embeddings from a text encoder; {where} has none (use guidance_scale=1)"
            )

    def check_edit(self, settings) -> None:
        """A clear error when edit mode cannot run this pipeline with ``settings`` (no VAE
        encoder, a UNet that takes more than the latent, no source for the prompt)."""
        pipeline, where = self.pipeline, f"the pipeline {self.path}"
        if getattr(pipeline.vae, "encoder", None) is None or not hasattr(pipeline.vae, "encode"):
            raise ModelError(f"diffusion.mode=edit needs a VAE encoder; {where} has a decoder only")
        latent = int(getattr(pipeline.vae.config, "latent_channels", self.channels))
        if latent != self.channels:
            raise ModelError(
                f"diffusion.mode=edit: {where} has a UNet of {self.channels} input channels and "
                f"a VAE of {latent} latent channels (an inpainting or depth pipeline?)"
            )
        config = pipeline.unet.config
        extra = [key for key in ("addition_embed_type", "time_cond_proj_dim")
                 if getattr(config, key, None) is not None]  # fmt: skip
        if extra:
            raise ModelError(
                f"diffusion.mode=edit conditions the UNet on prompt embeddings alone; {where}'s "
                f"UNet also needs {', '.join(extra)} (Stable Diffusion 1/2-style pipelines only)"
            )
        self.check_prompt(settings)

    def _encodes_prompts(self) -> bool:
        """Whether the pipeline can embed a prompt itself (text encoder and tokenizer)."""
        pipeline = self.pipeline
        parts = (getattr(pipeline, "text_encoder", None), getattr(pipeline, "tokenizer", None))
        return None not in parts and hasattr(pipeline, "encode_prompt")

    @torch.no_grad()
    def denoiser(self, settings) -> LatentDenoiser:
        """The UNet as the samplers call it, conditioned on the prompt (``diffusion.prompt``
        through the text encoder, or ``diffusion.prompt_embeds``), guided as diffusers does."""
        self.check_edit(settings)
        unet = self.pipeline.unet
        guided = settings.guidance_scale > 1
        embeds = None if self.prompt_embeds is None else self.prompt_embeds.to(unet.device)
        if not self._encodes_prompts():
            return LatentDenoiser(unet, embeds)
        prompt = settings.prompt if embeds is None else None
        embeds, negative = self.pipeline.encode_prompt(
            prompt, unet.device, 1, guided, prompt_embeds=embeds
        )[:2]
        return LatentDenoiser(unet, embeds, negative if guided else None, settings.guidance_scale)

    @torch.no_grad()
    def encode(self, image: np.ndarray) -> torch.Tensor:
        """uint8 [H, W, 3] -> the VAE's scaled latent [1, C, H / factor, W / factor]: the
        latent distribution's mode (deterministic), shifted and scaled as diffusers does."""
        from noisewarp.diffusion.images import to_model_range

        vae = self.pipeline.vae
        pixels = torch.from_numpy(to_model_range(image)).unsqueeze(0)
        encoded = vae.encode(pixels.to(device=vae.device, dtype=vae.dtype))
        dist = getattr(encoded, "latent_dist", None)
        latent = dist.mode() if dist is not None else encoded.latents
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return ((latent - shift) * vae.config.scaling_factor).float()

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> np.ndarray:
        """A scaled latent [1, C, h, w] -> float [H, W, 3] in [0, 1] (``encode``'s inverse)."""
        vae = self.pipeline.vae
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        latent = latent.to(device=vae.device, dtype=vae.dtype) / vae.config.scaling_factor + shift
        image = vae.decode(latent).sample[0].float()
        return np.clip((image.permute(1, 2, 0).cpu().numpy() + 1) / 2, 0, 1)

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


class LatentDenoiser:
    """A pipeline's UNet as ``samplers.sample`` calls it: ``model(x, t)`` -> its output,
    conditioned on ``embeds``; with ``negative`` embeddings, classifier-free guidance
    ``negative_out + guidance_scale * (out - negative_out)`` (diffusers' convention)."""

    def __init__(self, unet, embeds, negative=None, guidance_scale: float = 1.0):
        self.unet, self.guidance_scale = unet, float(guidance_scale)
        self.guided = negative is not None
        self.embeds = torch.cat([negative, embeds]) if self.guided else embeds
        self.embeds = self.embeds.to(device=unet.device, dtype=unet.dtype)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, timestep) -> torch.Tensor:
        inputs = torch.cat([x, x]) if self.guided else x
        timestep = torch.as_tensor(timestep, device=x.device).expand(len(inputs))
        out = self.unet(
            inputs.to(self.unet.dtype), timestep, encoder_hidden_states=self.embeds
        ).sample.to(x.dtype)
        if self.guided:
            negative, positive = out.chunk(2)
            out = negative + self.guidance_scale * (positive - negative)
        return out
