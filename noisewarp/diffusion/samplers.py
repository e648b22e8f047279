"""Samplers that take their noise from outside: the seam where warped noise plugs in.

Every sampler has one signature, ``sample(model, x, scheduler, timesteps, eta=...,
noise_sampler=...)``, in the k-diffusion manner: ``model(x, t)`` returns the network's
output in the scheduler's parameterisation (epsilon, v or x0, diffusers' convention), and
all randomness after the starting ``x`` comes through ``noise_sampler(step, x)``. The
update is diffusers' ``DDIMScheduler.step`` (``ddim_step``, its arithmetic) between
consecutive timesteps of the schedule: eta = 0 is DDIM (a deterministic function of the
starting noise), eta = 1 is DDPM's ancestral sampler on the same timesteps (DDIM's eta = 1
variance is DDPM's posterior variance).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

NoiseSampler = Callable[[int, torch.Tensor], torch.Tensor]
Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ddim_scheduler(config: dict, steps: int):
    """A ``DDIMScheduler`` built from a model's scheduler config (any diffusers scheduler's
    config: the betas and the parameterisation carry over), ``steps`` inference steps.

    Trailing spacing, so a full run starts at the last training timestep, where the
    signal is gone and the initial noise alone is a valid x_T; no clipping or
    thresholding, which would make the map from noise to sample non-linear for no reason.
    """
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(
        dict(config),
        timestep_spacing="trailing",
        clip_sample=False,
        thresholding=False,
        set_alpha_to_one=True,
    )
    scheduler.set_timesteps(steps)
    return scheduler


def edit_timesteps(scheduler, strength: float) -> torch.Tensor:
    """The timesteps an SDEdit run of ``strength`` in (0, 1] walks: the last
    ``round(strength * steps)`` of the schedule (strength 1: all of them, plain generation)."""
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength!r}")
    steps = len(scheduler.timesteps)
    keep = max(1, round(strength * steps))
    return scheduler.timesteps[steps - keep :]


def fresh_noise_sampler(generator: torch.Generator | None = None) -> NoiseSampler:
    """Independent N(0, I) per step (the usual sampler's noise), from ``generator``."""

    def sampler(step: int, x: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)

    return sampler


def stream_noise_sampler(streams: torch.Tensor) -> NoiseSampler:
    """Per-step noise from precomputed streams [steps, *x.shape]: step k takes stream k
    (for the stage: the k-th warped noise stream's current frame)."""

    def sampler(step: int, x: torch.Tensor) -> torch.Tensor:
        if step >= len(streams):
            raise IndexError(f"step {step} needs a noise stream, only {len(streams)} given")
        return streams[step].to(device=x.device, dtype=x.dtype)

    return sampler


def sample(
    model: Model,
    x: torch.Tensor,
    scheduler,
    timesteps: Sequence | torch.Tensor,
    eta: float = 0.0,
    noise_sampler: NoiseSampler | None = None,
    callback: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Run ``scheduler`` (a ``DDIMScheduler``) from ``x`` at ``timesteps[0]`` to x0.

    Parameters
    ----------
    model : callable
        ``model(x, t)`` -> output in ``scheduler.config.prediction_type``.
    x : Tensor
        The sample at the first timestep (pure noise for generation; the noised input
        for SDEdit, ``scheduler.add_noise``).
    timesteps : sequence
        Decreasing timesteps of ``scheduler`` (``scheduler.timesteps`` or a tail of it).
    eta : float
        0: deterministic DDIM; 1: DDPM ancestral; in between, DDIM's interpolation.
    noise_sampler : callable, optional
        ``noise_sampler(step, x)`` -> the step's N(0, I) noise (eta > 0 only);
        default: fresh ``torch.randn``.
    callback : callable, optional
        ``callback(step, timestep, x, output)`` after each model call (x is the sample
        the model saw).

    Returns
    -------
    Tensor, x0: each step goes to the next of ``timesteps``, the last to alpha = 1
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta!r}")
    if eta > 0 and noise_sampler is None:
        noise_sampler = fresh_noise_sampler()
    for step, timestep in enumerate(timesteps):
        output = model(x, timestep)
        if callback is not None:
            callback(step, timestep, x, output)
        noise = noise_sampler(step, x) if eta > 0 else None
        target = timesteps[step + 1] if step + 1 < len(timesteps) else -1
        x = ddim_step(scheduler, output, timestep, target, x, eta, noise)[0]
    return x


def next_timestep(timesteps: torch.Tensor, timestep) -> int | torch.Tensor:
    """The entry of ``timesteps`` after ``timestep``; -1 (the end, alpha = 1) after the last."""
    (index,) = (timesteps == timestep).nonzero()[0]
    return timesteps[index + 1] if index + 1 < len(timesteps) else -1


def ddim_step(scheduler, output: torch.Tensor, timestep, target, x: torch.Tensor,
              eta: float = 0.0, noise: torch.Tensor | None = None):  # fmt: skip
    """One DDIM update of ``x`` from ``timestep`` to ``target`` (< 0: the end, alpha = 1):
    (x at ``target``, the x0 estimate).

    ``DDIMScheduler.step``'s arithmetic, operation for operation (the same bits where both
    apply), but with the target given: diffusers steps to ``t - T // steps``, which misses
    the schedule's next timestep, and the end, when ``steps`` does not divide T. No
    clipping or thresholding (``ddim_scheduler`` turns them off).
    """
    abar = scheduler.alphas_cumprod[timestep]
    abar_prev = scheduler.alphas_cumprod[target] if target >= 0 else scheduler.final_alpha_cumprod
    beta = 1 - abar
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        x0 = (x - beta ** (0.5) * output) / abar ** (0.5)
        eps = output
    elif kind == "sample":
        x0 = output
        eps = (x - abar ** (0.5) * x0) / beta ** (0.5)
    elif kind == "v_prediction":
        x0 = (abar**0.5) * x - (beta**0.5) * output
        eps = (abar**0.5) * output + (beta**0.5) * x
    else:
        raise ValueError(f"unknown prediction_type {kind!r}")
    variance = ((1 - abar_prev) / beta) * (1 - abar / abar_prev)
    std = eta * variance ** (0.5)
    prev = abar_prev ** (0.5) * x0 + (1 - abar_prev - std**2) ** (0.5) * eps
    if eta > 0:
        prev = prev + std * noise
    return prev, x0


def predicted_noise(scheduler, output: torch.Tensor, x: torch.Tensor, timestep) -> torch.Tensor:
    """The model's estimate of the noise in ``x`` at ``timestep``, from its ``output`` in
    ``scheduler.config.prediction_type`` (epsilon, v_prediction or sample), with
    x = sqrt(abar) x0 + sqrt(1 - abar) eps."""
    abar = scheduler.alphas_cumprod[int(timestep)].to(device=x.device, dtype=x.dtype)
    alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return output
    if kind == "v_prediction":
        return alpha * output + sigma * x
    if kind == "sample":
        return (x - alpha * output) / sigma
    raise ValueError(f"unknown prediction_type {kind!r}")


def noise_error_map(model: Model, scheduler, x: torch.Tensor, noise: torch.Tensor, timestep,
                    output: torch.Tensor | None = None):  # fmt: skip
    """Squared error of the model's noise estimate in ``x`` [1, C, h, w] (the sample at
    ``timestep`` made with ``noise``), mean over channels: numpy [h, w]. Its mean is the
    denoising loss, a likelihood proxy of ``x``. ``output``: the model's output on ``x``
    when already computed."""
    if output is None:
        with torch.no_grad():
            output = model(x, timestep)
    estimate = predicted_noise(scheduler, output, x, timestep).double()
    error = (estimate - noise.to(estimate.device).double()) ** 2
    return error.mean(dim=1)[0].cpu().numpy()


def noise_to(scheduler, clean: torch.Tensor, noise: torch.Tensor, timestep) -> torch.Tensor:
    """SDEdit's start: ``clean`` noised to ``timestep`` with the given (warped) noise."""
    return scheduler.add_noise(clean, noise.to(clean.dtype), torch.as_tensor([timestep]))
