"""The diffusion stage: ``python run.py stage=diffuse`` (DESIGN section 11).

The run first writes (or resumes) its noise stack exactly as ``experiment.run`` does, then
streams it frame by frame through a diffusion model: **generate** (the warped frame is the
initial noise) or **edit** (SDEdit: each video frame, or a latent pipeline's VAE encoding of
it, noised to ``strength`` with the warped frame, then denoised). With eta > 0 each sampler
step takes its noise from its own warped stream (one ``NoiseWarper`` per step, seeds derived
from the run's seed, moved along the same motion), so the per-step noise moves with the
video too.

Writes ``video.mp4``, ``video.gif``, ``frames/NNNNN.png`` and ``diffusion.nc`` (per frame:
warping error, texture sticking, quality, structural similarity to the input, time), into
the run directory; existing outputs of another config are never replaced unless
``output.overwrite=true``, and then only once the new ones are complete (a bad input or a
failure mid-run leaves them as they were).
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from noisewarp.diffusion.errors import NoiseStackError

log = logging.getLogger(__name__)

OUTPUTS = ("video.mp4", "video.gif", "frames", "diffusion.nc")
MODES = ("edit", "generate")
DEVICES = r"cpu|auto|cuda(:\d+)?"
# Each ``diffusion`` key's type (str: text, float: any number, int: an integral number) and
# whether it may be null; ``from_cfg`` names the key when a value is not one.
TYPES = {
    "model": (str, True), "mode": (str, False), "strength": (float, False),
    "steps": (int, False), "eta": (float, False), "device": (str, True), "threads": (int, True),
    "stack": (str, True), "prompt": (str, False), "prompt_embeds": (str, True),
    "guidance_scale": (float, False), "fps": (float, True),
}  # fmt: skip
KIND_NAMES = {str: "text", float: "a number", int: "an integer"}


@dataclass(frozen=True)
class DiffusionSettings:
    """The ``diffusion`` config section, validated."""

    model: str | None = None
    mode: str = "edit"
    strength: float = 0.3
    steps: int = 20
    eta: float = 0.0
    device: str = "cpu"
    threads: int | None = 1
    stack: str | None = None
    prompt: str = ""
    prompt_embeds: str | None = None
    guidance_scale: float = 1.0
    fps: float | None = None

    @classmethod
    def from_cfg(cls, section) -> DiffusionSettings:
        from noisewarp.config import ConfigError

        values = dict(section or {})
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(
                f"diffusion has no key(s) {unknown}; valid: {list(cls.__dataclass_fields__)}"
            )
        for key, value in values.items():
            kind, nullable = TYPES[key]
            if not (value is None and nullable or _is(kind, value)):
                shown = "null" if value is None else repr(value)
                raise ConfigError(f"diffusion.{key} must be {KIND_NAMES[kind]}, got {shown}")
        settings = cls(**values)
        if settings.mode not in MODES:
            raise ConfigError(
                f"diffusion.mode={settings.mode} is not a mode; valid: {', '.join(MODES)}"
            )
        if not 0 < settings.strength <= 1:
            raise ConfigError(f"diffusion.strength must be in (0, 1], got {settings.strength!r}")
        if settings.steps < 1:
            raise ConfigError(f"diffusion.steps must be an integer >= 1, got {settings.steps!r}")
        if not 0 <= settings.eta <= 1:
            raise ConfigError(f"diffusion.eta must be in [0, 1], got {settings.eta!r}")
        if settings.device is not None and not re.fullmatch(DEVICES, settings.device):
            raise ConfigError(
                f"diffusion.device={settings.device} is not a device the stage runs on; valid: "
                "cpu, cuda, cuda:N, auto"
            )
        if settings.threads is not None and settings.threads < 1:
            raise ConfigError(
                f"diffusion.threads must be >= 1 (null: torch's default), got {settings.threads}"
            )
        if settings.fps is not None and settings.fps <= 0:
            raise ConfigError(f"diffusion.fps must be > 0 (null: the video's), got {settings.fps}")
        return settings


def _is(kind: type, value) -> bool:
    """Whether ``value`` is a ``kind`` as the config gives it: an int or a finite float for
    a number, an integral number for an integer (20.0 too), never a bool."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return False
    if kind is str:
        return isinstance(value, str)
    if isinstance(value, str) or not math.isfinite(value):
        return False
    return kind is float or float(value).is_integer()


def stream_seed(seed: int, step: int) -> int:
    """The seed of sampler step ``step``'s warped noise stream, derived from the run's."""
    return int(np.random.SeedSequence([seed, 0x6E77, step]).generate_state(1)[0])


def reference_seed(seed: int, frame: int) -> int:
    """The seed of frame ``frame``'s white reference noise (``denoiser_ratio``)."""
    return int(np.random.SeedSequence([seed, 0x7266, frame]).generate_state(1)[0])


def _check_outputs(directory: Path, identity: dict, overwrite: bool) -> dict | None:
    """The finished run's summary when ``directory`` already holds this very run; None when
    free or ``overwrite`` (the old outputs are replaced only once the new ones are complete);
    an error when it holds something else."""
    existing = [name for name in OUTPUTS if (directory / name).exists()]
    if not existing:
        return None
    if (directory / "diffusion.nc").exists() and not overwrite:
        import xarray as xr

        from noisewarp.io import as_stored

        with xr.open_dataset(directory / "diffusion.nc", engine="h5netcdf") as done:
            # As stored: the identity's tuples (deform parameters) come back as lists.
            if json.loads(done.attrs.get("identity", "{}")) == as_stored(identity):
                return json.loads(done.attrs["summary"])
    if overwrite:
        log.info("replacing %s in %s once this run completes", ", ".join(existing), directory)
        return None
    raise FileExistsError(
        f"{directory} already holds {', '.join(existing)} from another diffusion config (or an "
        "interrupted run); they were left untouched. Write elsewhere (output.dir=...) or pass "
        "output.overwrite=true to replace them."
    )


def _open_stack(path: Path, given: bool, shape: tuple, frames: int):
    """The stack at ``path`` as a ``NoiseStackDataset``, checked to hold ``frames`` frames
    of ``shape``; ``given``: it is ``diffusion.stack``, which the stage only reads."""
    from noisewarp.diffusion.data import NoiseStackDataset
    from noisewarp.io import StackError

    if given and not path.exists():
        raise NoiseStackError(f"diffusion.stack {str(path)!r} does not exist")
    try:
        noise = NoiseStackDataset(path)
    except StackError as error:
        if not given:
            raise
        why = error.__cause__ or "an HDF5 file but not a noisewarp stack"
        raise NoiseStackError(
            f"cannot read diffusion.stack {str(path)!r} ({why}). The stage only reads this "
            "file (output.overwrite does not touch it): write the stack again with a noise run "
            "(output.stack=PATH), or point diffusion.stack at a complete one"
        ) from error
    if noise.shape != shape or len(noise) < frames:
        raise NoiseStackError(
            f"the stack {path} holds {len(noise)} complete frames of {noise.shape} "
            f"(channels, height, width); this run's video and model need {frames} frames "
            f"of {shape} (set res, channels and frames to match it)"
        )
    return noise


def run(cfg) -> dict:
    """Write (or resume) the noise stack, then diffuse it; return a summary dict."""
    from noisewarp.config import ConfigError, build_spec

    try:
        import diffusers  # noqa: F401
        import torch
    except ImportError as error:
        raise ConfigError(
            f"stage=diffuse needs the diffusion extra ({error}): pip install -e "
            '".[diffusion]", torch first (README, Quick start)'
        ) from None

    from noisewarp import experiment
    from noisewarp.diffusion.models import load_model, resolve_device

    settings = DiffusionSettings.from_cfg(cfg.get("diffusion"))
    device = resolve_device(settings.device)  # fails before anything is written
    if settings.threads:
        torch.set_num_threads(int(settings.threads))
    model = load_model(settings.model, device)
    if settings.prompt_embeds is not None:
        if model.kind != "latent":
            raise ConfigError(
                f"diffusion.prompt_embeds is for latent pipelines only; {model.path} is a "
                "pixel-space model (drop diffusion.prompt_embeds)"
            )
        model.prompt_embeds = _load_embeds(Path(settings.prompt_embeds).expanduser())
    train_steps = int(model.scheduler_config.get("num_train_timesteps", 1000))
    if settings.steps > train_steps:
        raise ConfigError(
            f"diffusion.steps={settings.steps} is more than the {train_steps} timesteps the "
            f"model {model.path} was trained on (num_train_timesteps); use at most {train_steps}"
        )
    if model.kind == "latent":
        model.check_prompt(settings)  # both modes: the pipeline's own loop needs one too
    spec = build_spec(cfg)
    video = getattr(spec.motion, "reader", None)
    if settings.mode == "edit" and video is None:
        raise ConfigError(
            f"diffusion.mode=edit needs a video (deform=video); got deform {spec.motion.label} "
            "(use diffusion.mode=generate)"
        )
    if settings.mode == "edit" and model.kind == "latent":
        model.check_edit(settings)
    by_factor = video is not None and (cfg.get("deform") or {}).get("latent_factor")
    sized_by = "video size / deform.latent_factor" if by_factor else "res"
    model.check_noise(spec.channels, spec.height, spec.width, f"the noise (channels, {sized_by})")
    given = settings.stack is not None
    stack_path = Path(settings.stack).expanduser() if given else spec.output.stack
    expected = (spec.channels, spec.height, spec.width)
    noise = _open_stack(stack_path, True, expected, spec.frames) if given else None
    identity = {
        "noise": spec.identity(),
        "stack": str(stack_path),
        "diffusion": asdict(settings),
        "model": str(model.path),
    }
    directory = spec.output.dir
    directory.mkdir(parents=True, exist_ok=True)
    done = _check_outputs(directory, identity, spec.output.overwrite)
    if done is not None:
        log.info("diffusion outputs in %s are complete for this config", directory)
        return done
    if noise is None:
        experiment.run(cfg)
        noise = _open_stack(stack_path, False, expected, spec.frames)
    return Diffuser(model, settings, spec, noise, spec.frames, device, identity).run(directory)


def _load_embeds(path: Path):
    """``diffusion.prompt_embeds``: a .npy array as a tensor (its shape checked by the model)."""
    import torch

    from noisewarp.config import ConfigError

    try:
        array = np.load(path)
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"diffusion.prompt_embeds {str(path)!r} cannot be read as a .npy array ({error})"
        ) from error
    if not isinstance(array, np.ndarray):
        raise ConfigError(f"diffusion.prompt_embeds {str(path)!r} holds several arrays (.npz); "
                          "save one array [1, tokens, dim] with numpy.save")  # fmt: skip
    return torch.from_numpy(array)


class Diffuser:
    """One stage run: streams noise frames, video frames and motion steps in lockstep."""

    def __init__(self, model, settings: DiffusionSettings, spec, noise, frames, device, identity):
        from noisewarp.diffusion.samplers import ddim_scheduler, edit_timesteps

        self.model, self.settings, self.spec = model, settings, spec
        self.noise, self.frames, self.device, self.identity = noise, frames, device, identity
        self.scheduler = ddim_scheduler(model.scheduler_config, settings.steps)
        strength = settings.strength if settings.mode == "edit" else 1.0
        self.timesteps = edit_timesteps(self.scheduler, strength)
        # Latent generation runs the pipeline's own loop (``LatentModel.generate``).
        own_loop = model.kind == "latent" and settings.mode == "generate"
        self.denoiser = None if own_loop else model.denoiser(settings)
        channels, self.height, self.width = noise.shape
        self.streams = []
        if settings.eta > 0:
            from noisewarp.warp import NoiseWarper

            self.streams = [
                NoiseWarper(
                    self.height,
                    self.width,
                    channels,
                    method=spec.method,
                    seed=stream_seed(spec.seed, step),
                    backend=spec.backend,
                    **spec.options,
                )  # fmt: skip
                for step in range(len(self.timesteps))
            ]

    def _inputs(self):
        """(video frame at the image size or None, map at the image size or None,
        occlusion at the image size or None) for frames 0, 1, ..."""
        from noisewarp.diffusion.images import resized
        from noisewarp.diffusion.metrics import occlusion_at
        from noisewarp.opticalflow import flow_to_noise_map

        image_h, image_w = self.model.image_size(self.height, self.width)
        video = getattr(self.spec.motion, "reader", None)
        first = resized(self.spec.motion.first_image(), image_h, image_w) if video else None
        yield first, None, None, None
        for step in self.spec.motion.steps(images=video is not None):
            tmap = step.geometry.centres
            if step.flow is not None:
                tmap = flow_to_noise_map(step.flow, image_h, image_w)
            elif (image_h, image_w) != (self.height, self.width):
                tmap = None  # a synthetic motion on latent noise: no map at the image size
            occluded = (
                None if step.occlusion is None else occlusion_at(step.occlusion, image_h, image_w)
            )
            image = None if step.image is None else resized(step.image, image_h, image_w)
            yield image, tmap, occluded, step.geometry

    def _frame(self, index: int, image: np.ndarray | None) -> np.ndarray:
        """The model's output for frame ``index`` (video frame ``image``, uint8, for edit),
        float [H, W, 3] in [0, 1]."""
        import torch

        from noisewarp.diffusion.samplers import (
            noise_error_map,
            noise_to,
            sample,
            stream_noise_sampler,
        )

        if self.settings.threads:
            # numba's OpenMP regions (the noise run, the per-step streams) reset the thread
            # count torch's OpenMP uses; two threads next to a busy process ran 5-20x slower.
            torch.set_num_threads(int(self.settings.threads))
        warped = self.noise[index].unsqueeze(0).to(self.device)
        streams = None
        if self.streams:
            per_step = np.stack([np.moveaxis(w.noise, -1, 0) for w in self.streams])
            streams = stream_noise_sampler(torch.from_numpy(per_step).unsqueeze(1))
        if self.denoiser is None:
            return self.model.generate(warped, self.settings, streams), None
        if self.settings.mode != "edit":
            start = warped * self.scheduler.init_noise_sigma
            out = sample(self.denoiser, start, self.scheduler, self.timesteps, self.settings.eta,
                         streams)  # fmt: skip
            return self.model.decode(out), None
        # The frame in the model's space (pixels, or the VAE's latent) noised to t0.
        clean = self.model.encode(image).to(self.device)
        t0 = self.timesteps[0]
        start = noise_to(self.scheduler, clean, warped, t0)
        first = {}

        def keep_first(step, timestep, x, output):
            if step == 0:
                first["output"] = output

        out = sample(self.denoiser, start, self.scheduler, self.timesteps, self.settings.eta,
                     streams, callback=keep_first)  # fmt: skip
        # The denoiser's error on the warped start and on a white-noise start of the same
        # frame and level (docs/outputs.md: denoiser_ratio).
        generator = torch.Generator().manual_seed(reference_seed(self.spec.seed, index))
        white = torch.randn(warped.shape, generator=generator).to(self.device)
        white_start = noise_to(self.scheduler, clean, white, t0)
        errors = [
            noise_error_map(self.denoiser, self.scheduler, start, warped, t0, first["output"]),
            noise_error_map(self.denoiser, self.scheduler, white_start, white, t0),
        ]
        return self.model.decode(out), errors

    def _records(self, frames_dir: Path, records: dict):
        """Yield the output frames (uint8), recording metrics and writing PNGs on the way."""
        from PIL import Image

        from noisewarp.diffusion import metrics
        from noisewarp.experiment import _rss_mb

        prev = prev_image = None
        for index, (image, tmap, occluded, geometry) in zip(
            range(self.frames), self._inputs(), strict=False
        ):
            started = time.perf_counter()
            if index and self.streams:
                for warper in self.streams:
                    warper.step(geometry)
            output, errors = self._frame(index, image)
            modelled = time.perf_counter() - started  # time_s: everything but the metrics
            source = None if image is None else image / 255.0
            row = {"time_s": modelled, "detail_energy": metrics.detail_energy(output)}
            if errors is not None:
                row["denoiser_ratio"] = metrics.denoiser_ratio(*errors)
                if index and tmap is not None:
                    row["denoiser_ratio_moving"] = metrics.denoiser_ratio(
                        *errors, metrics.moving_mask(tmap)
                    )
            if source is not None:
                row["quality"] = row["detail_energy"] / max(metrics.detail_energy(source), 1e-12)
                row["ssim"] = metrics.structural_similarity(output, source)
            if index and tmap is not None:
                row["warping_error"] = metrics.warping_error(prev, output, tmap, occluded)
                row["warping_error_moving"] = metrics.warping_error(
                    prev, output, tmap, occluded, moving_only=True
                )
                row["texture_sticking"] = metrics.texture_sticking(prev, output, tmap, occluded)
                if source is not None:
                    row["input_warping_error"] = metrics.warping_error(
                        prev_image, source, tmap, occluded
                    )
            frame = np.rint(output * 255).astype(np.uint8)
            Image.fromarray(frame).save(frames_dir / f"{index:05d}.png")
            row["step_s"] = time.perf_counter() - started
            row["rss_mb"] = _rss_mb()[0]
            for key, value in row.items():
                records.setdefault(key, np.full(self.frames, np.nan))[index] = value
            prev, prev_image = output, source
            yield frame

    def run(self, directory: Path) -> dict:
        from noisewarp.video import open_video, write_video

        staging = directory / ".diffusion-partial"
        if staging.exists():
            shutil.rmtree(staging)  # our own leftovers from an interrupted run
        (staging / "frames").mkdir(parents=True)
        video = getattr(self.spec.motion, "reader", None)
        fps = self.settings.fps or (video.fps if video is not None and video.fps else 12.0)
        records: dict = {}
        started = time.perf_counter()
        try:
            frames = self._records(staging / "frames", records)
            write_video(staging / "video.mp4", frames, fps=fps)
            elapsed = time.perf_counter() - started
            write_video(staging / "video.gif", open_video(staging / "frames", fps=fps), fps=fps)
            summary = self._summary(records, elapsed)
            self._dataset(records, summary).to_netcdf(staging / "diffusion.nc", engine="h5netcdf")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # outputs already there stay as they were
            raise
        for name in OUTPUTS:  # old ones only with output.overwrite=true (_check_outputs)
            target = directory / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            (staging / name).rename(target)
        staging.rmdir()
        log.info("diffusion: %s", ", ".join(f"{k} {v:.4g}" for k, v in summary.items()
                                             if isinstance(v, float)))  # fmt: skip
        return summary

    def _summary(self, records: dict, elapsed: float) -> dict:
        summary = {"frames": self.frames, "seconds": round(elapsed, 3)}
        for key, values in records.items():
            tail = values[1:] if len(values) > 1 else values
            if np.isfinite(tail).any():
                summary[key] = float(np.nanmean(tail))
        return summary

    def _dataset(self, records: dict, summary: dict):
        import xarray as xr
        import yaml

        from noisewarp.collect import run_coords
        from noisewarp.diffusion.metrics import VARIABLES

        place, _ = run_coords(yaml.safe_load(self.spec.config_yaml))  # as metrics.nc has it
        coords = {"frame": np.arange(self.frames), **place}
        variables = {}
        for key, values in records.items():
            long_name, units = VARIABLES.get(key, (key, "1"))
            variables[key] = ("frame", values, {"long_name": long_name, "units": units})
        attrs = {
            "config": self.spec.config_yaml,
            "identity": json.dumps(self.identity, sort_keys=True),
            "summary": json.dumps(summary),
            "mode": self.settings.mode,
            "model": str(self.model.path),
        }
        return xr.Dataset(variables, coords=coords, attrs=attrs)
