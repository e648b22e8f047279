"""The diffusion stage end to end with tiny models built from configs (no weights
downloaded): outputs, determinism, per-step warped noise, bad inputs, the latent path
(generate and edit)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

torch.set_num_threads(1)  # tiny models: a second thread only competes for the cores


def test_import_noisewarp_does_not_import_torch():
    # The CLI names the stage's error classes (noisewarp.diffusion.errors) without torch.
    code = "import sys, noisewarp, noisewarp.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def tiny_pixel_model(tmp_path_factory):
    """A two-level RGB UNet2DModel with the built-in model's scheduler, random weights."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    from noisewarp.diffusion.models import builtin_scheduler_config

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
                       block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)  # fmt: skip
    path = tmp_path_factory.mktemp("models") / "pixel"
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(**builtin_scheduler_config())).save_pretrained(
        path
    )
    return path


@pytest.fixture(scope="module")
def tiny_latent_pipeline(tmp_path_factory):
    """A Stable-Diffusion-shaped pipeline: tiny UNet2DConditionModel and AutoencoderKL, no
    tokenizer or text encoder (prompt embeddings are given directly)."""
    pytest.importorskip("transformers")
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=8,
        norm_num_groups=4, attention_head_dim=2,
    )  # fmt: skip
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(4, 4, 4, 4), latent_channels=4, norm_num_groups=2, layers_per_block=1,
    )  # fmt: skip
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    pipeline = StableDiffusionPipeline(vae=vae, unet=unet, scheduler=scheduler, text_encoder=None,
                                       tokenizer=None, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)  # fmt: skip
    root = tmp_path_factory.mktemp("models")
    pipeline.save_pretrained(root / "latent")
    np.save(root / "prompt.npy", np.random.default_rng(0).standard_normal((1, 3, 8), np.float32))
    return root / "latent", root / "prompt.npy"


def _diffuse(compose, *overrides, output_dir=None):
    from noisewarp.diffusion.stage import run

    base = ("res=32", "frames=4", "diffusion.steps=4", "diffusion.strength=0.5")
    cfg = compose("stage=diffuse", *base, *overrides, output_dir=output_dir)
    return run(cfg), Path(cfg.output.dir)


def test_without_the_diffusion_extra_the_stage_says_how_to_install_it(compose, monkeypatch):
    from noisewarp.config import ConfigError
    from noisewarp.diffusion.stage import run

    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"needs the diffusion extra.*\[diffusion\]"):
        run(compose("stage=diffuse"))


def test_noise_stack_dataset_reads_lazily(compose, tmp_path):
    from noisewarp import experiment
    from noisewarp.diffusion.data import NoiseStackDataset
    from noisewarp.io import read_frames

    cfg = compose("method=particle", "deform=translate", "res=16", "frames=3", "channels=3",
                  "output.previews=false", "output.metrics=null")  # fmt: skip
    experiment.run(cfg)
    dataset = NoiseStackDataset(tmp_path / "run" / "noise.h5")
    expected = np.moveaxis(read_frames(tmp_path / "run" / "noise.h5"), -1, 1)
    assert len(dataset) == 3 and dataset.shape == (3, 16, 16)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=1)
    (batch,) = list(loader)  # a worker process opens its own handle
    assert batch.dtype == torch.float32 and np.array_equal(batch.numpy(), expected)
    assert np.array_equal(dataset[-1].numpy(), expected[-1])
    with pytest.raises(IndexError, match="not complete"):
        dataset[3]


def test_stage_writes_outputs_and_is_deterministic(compose, tiny_pixel_model, tmp_path):
    import xarray as xr
    from PIL import Image

    first, directory = _diffuse(compose, f"diffusion.model={tiny_pixel_model}",
                                output_dir=tmp_path / "a")  # fmt: skip
    for name in ("video.mp4", "video.gif", "diffusion.nc", "noise.h5"):
        assert (directory / name).exists(), name
    frames = sorted((directory / "frames").glob("*.png"))
    assert len(frames) == 4
    with xr.open_dataset(directory / "diffusion.nc", engine="h5netcdf") as result:
        assert result.sizes["frame"] == 4 and result["warp_method"].item() == "particle"
        assert np.isfinite(result["warping_error"][1:]).all()
        assert np.isfinite(result["ssim"]).all() and np.isfinite(result["quality"]).all()
    # Same stack, model and config: the same video, bit for bit.
    again, other = _diffuse(
        compose, f"diffusion.model={tiny_pixel_model}", output_dir=tmp_path / "b"
    )
    for a, b in zip(frames, sorted((other / "frames").glob("*.png")), strict=True):
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    # Rerunning the same command finds the finished outputs; another config is refused.
    mtime = (directory / "video.mp4").stat().st_mtime_ns
    assert (
        _diffuse(compose, f"diffusion.model={tiny_pixel_model}", output_dir=directory)[0] == first
    )
    with pytest.raises(FileExistsError, match="left untouched"):
        _diffuse(compose, f"diffusion.model={tiny_pixel_model}", "diffusion.strength=0.7",
                 output_dir=directory)  # fmt: skip
    assert (directory / "video.mp4").stat().st_mtime_ns == mtime


def test_side_by_side_input_column_is_the_video_the_runs_edited(
    compose, tiny_pixel_model, tmp_path
):
    """benchmarks/diffusion_table.py's GIF takes its input column from the video a run's
    diffusion.nc names (it showed bigbuckbunny beside edits of another clip): the run's
    frames at its output size, none for a synthetic motion, an error if the video changed."""
    import importlib.util
    import shutil

    from noisewarp.diffusion.images import resized
    from noisewarp.motion import BUNDLED_CLIPS
    from noisewarp.video import open_video

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "diffusion_table.py"
    spec = importlib.util.spec_from_file_location("diffusion_table", script)
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    clip = tmp_path / "clip.mp4"
    shutil.copyfile(BUNDLED_CLIPS["bigbuckbunny"], clip)
    model = f"diffusion.model={tiny_pixel_model}"
    _, directory = _diffuse(compose, model, f"deform.path={clip}", "deform.start=5",
                            output_dir=tmp_path / "video")  # fmt: skip
    frames = table.input_frames(directory, 4, 18, 32)
    expected = [resized(f, 18, 32) for f in open_video(clip, start=5, frames=4)]
    assert len(frames) == 4
    for got, want in zip(frames, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    _, synthetic = _diffuse(compose, model, "deform=translate", "diffusion.mode=generate",
                            output_dir=tmp_path / "synthetic")  # fmt: skip
    assert table.input_frames(synthetic, 4, 32, 32) is None
    with clip.open("ab") as file:
        file.write(b"\0")
    with pytest.raises(ValueError, match="clip.mp4 changed since the run"):
        table.input_frames(directory, 4, 18, 32)


def test_overwrite_replaces_outputs_only_once_the_new_run_is_complete(
    compose, tiny_pixel_model, tmp_path
):
    """output.overwrite=true with a mistyped stack, or with a stack holding a NaN (found at
    its frame 2, mid-run): a clear error naming the file (and frame), the finished outputs
    untouched; then a good stack replaces them."""
    import h5py

    from noisewarp.diffusion.errors import NoiseStackError

    model = f"diffusion.model={tiny_pixel_model}"
    _, directory = _diffuse(compose, model, output_dir=tmp_path / "done")
    before = {p: p.stat().st_mtime_ns for p in directory.rglob("*") if p.is_file()}
    nan_stack = tmp_path / "nan.h5"
    nan_stack.write_bytes((directory / "noise.h5").read_bytes())
    with h5py.File(nan_stack, "r+") as handle:
        handle["noise"][2, 0, 0, 0] = np.nan
    cases = [
        (tmp_path / "typo.h5", "diffusion.stack '.*typo.h5' does not exist"),
        (nan_stack, "frame 2 of the noise stack '.*nan.h5' holds 1 non-finite values"),
    ]
    for stack, match in cases:
        with pytest.raises(NoiseStackError, match=match):
            _diffuse(compose, model, "output.overwrite=true", f"diffusion.stack={stack}",
                     output_dir=directory)  # fmt: skip
        after = {p: p.stat().st_mtime_ns for p in directory.rglob("*") if p.is_file()}
        assert after == before, stack
    _diffuse(compose, model, "output.overwrite=true", "diffusion.strength=0.25",
             f"diffusion.stack={directory / 'noise.h5'}", output_dir=directory)  # fmt: skip
    assert (directory / "video.mp4").stat().st_mtime_ns != before[directory / "video.mp4"]
    assert len(list((directory / "frames").iterdir())) == 4
    assert not (directory / ".diffusion-partial").exists()


def test_rerun_of_a_synthetic_deform_finds_its_outputs(compose, tiny_pixel_model, tmp_path):
    """deform=rotate's identity holds tuples (JSON lists once stored): the same command
    again returns the finished run's summary and rewrites nothing."""
    overrides = (f"diffusion.model={tiny_pixel_model}", "deform=rotate", "diffusion.mode=generate")
    first, directory = _diffuse(compose, *overrides, output_dir=tmp_path / "rotate")
    mtime = (directory / "video.mp4").stat().st_mtime_ns
    assert _diffuse(compose, *overrides, output_dir=directory)[0] == first
    assert (directory / "video.mp4").stat().st_mtime_ns == mtime


def test_ancestral_takes_warped_per_step_noise(compose, tiny_pixel_model, tmp_path):
    """eta = 1: each step's noise is its own warped stream: deterministic, and not the
    DDIM result."""
    from PIL import Image

    def frames(directory):
        return [np.asarray(Image.open(p)) for p in sorted((directory / "frames").glob("*.png"))]

    model = f"diffusion.model={tiny_pixel_model}"
    _, ddim = _diffuse(compose, model, output_dir=tmp_path / "ddim")
    _, first = _diffuse(compose, model, "diffusion.eta=1.0", output_dir=tmp_path / "eta1")
    _, second = _diffuse(compose, model, "diffusion.eta=1.0", output_dir=tmp_path / "eta1b")
    assert all(np.array_equal(a, b) for a, b in zip(frames(first), frames(second), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(frames(first), frames(ddim), strict=True))


def test_panning_shot_moves_the_whole_frame(tmp_path):
    """``images.panning_shot``: each frame is the previous one moved by the speed (an exact
    copy at whole source pixels), either direction; a pan leaving the clip's frame is a
    clear error that writes nothing."""
    from PIL import Image

    from noisewarp.diffusion.images import panning_shot

    def frames(folder):
        return [np.asarray(Image.open(f)) for f in sorted(folder.glob("*.png"))]

    # 480 x 270 read at 160: 3 source pixels per stage pixel, so 1 px per frame is 3 exactly.
    right = frames(panning_shot(tmp_path / "right", 3, speed=(1.0, 0.0), size=160))
    assert len(right) == 3 and right[0].shape == (270, 480, 3)
    assert np.array_equal(right[1][:, :-3], right[0][:, 3:])
    assert np.array_equal(right[2][:, :-3], right[1][:, 3:])
    left = frames(panning_shot(tmp_path / "left", 3, speed=(-1.0, 0.0), size=160))
    assert np.array_equal(left[1][:, 3:], left[0][:, :-3])
    assert np.array_equal(left[2], right[0])  # the leftward pan ends where the rightward starts
    with pytest.raises(ValueError, match="leaves the 640 x 360 frame"):
        panning_shot(tmp_path / "far", 40, speed=(2.0, 0.0), size=160)
    assert not (tmp_path / "far").exists()


def test_stream_seeds_differ():
    from noisewarp.diffusion.stage import stream_seed

    seeds = {stream_seed(0, step) for step in range(50)} | {stream_seed(1, 0)}
    assert len(seeds) == 51


def test_bad_inputs_are_clear_and_write_nothing(compose, tiny_pixel_model, tmp_path):
    from noisewarp import experiment
    from noisewarp.cli import USER_ERRORS
    from noisewarp.config import ConfigError
    from noisewarp.diffusion.errors import DeviceError, NoiseStackError
    from noisewarp.diffusion.models import ModelError

    model = f"diffusion.model={tiny_pixel_model}"
    cases = [
        ((model, "channels=4"), ModelError, "4 channels, the model .* takes 3"),
        ((model, "res=35"), ModelError, "divisible by 2"),
        (("diffusion.model=/nonexistent/model",), ModelError, "does not exist"),
        ((model, "diffusion.device=cuda"), DeviceError, "CPU-only build|no visible GPU"),
        ((model, "diffusion.mode=paint"), ConfigError, "not a mode"),
        ((model, "diffusion.strength=null"), ConfigError, "strength must be a number, got null"),
        ((model, "diffusion.steps=abc"), ConfigError, "steps must be an integer, got 'abc'"),
        ((model, "diffusion.device=meta"), ConfigError, "device=meta is not a device"),
        ((model, "diffusion.fps=0"), ConfigError, "fps must be > 0"),
        ((model, "diffusion.steps=1001"), ConfigError, "steps=1001 is more than the 1000 "),
    ]
    for index, (overrides, error, match) in enumerate(cases):
        if "cuda" in overrides[-1] and torch.cuda.is_available():
            continue
        directory = tmp_path / f"bad{index}"
        with pytest.raises(error, match=match) as raised:
            _diffuse(compose, *overrides, output_dir=directory)
        assert isinstance(raised.value, USER_ERRORS), overrides  # the CLI: one line, exit 2
        assert not directory.exists() or not any(directory.iterdir()), overrides
    # A stack whose size does not match this run's video and model.
    stack_cfg = compose("res=16", "channels=3", "frames=4", "output.previews=false",
                        "output.metrics=null", output_dir=tmp_path / "stack16")  # fmt: skip
    experiment.run(stack_cfg)
    stack = tmp_path / "stack16" / "noise.h5"
    with pytest.raises(NoiseStackError, match="need 4 frames of"):
        _diffuse(compose, model, f"diffusion.stack={stack}", output_dir=tmp_path / "mismatch")
    assert not (tmp_path / "mismatch" / "video.mp4").exists()
    # A truncated stack: the way out for a stack the stage only reads.
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(stack.read_bytes()[: stack.stat().st_size // 2])
    with pytest.raises(NoiseStackError, match="truncated file.*output.overwrite does not touch"):
        _diffuse(compose, model, f"diffusion.stack={truncated}", output_dir=tmp_path / "cut")


def test_missing_model_is_a_one_line_error(run_py, tmp_path):
    result = run_py("stage=diffuse", "diffusion.model=/nonexistent/model",
                    f"hydra.run.dir={tmp_path}", check=False)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    error = "noisewarp: error: model directory '/nonexistent/model' does not exist"
    assert result.stderr.strip().splitlines()[-1] == error


def test_latent_pipeline_generates_from_warped_latents(compose, tiny_latent_pipeline, tmp_path):
    """A Stable-Diffusion-shaped pipeline takes the warped noise as ``latents=`` (1/8 size,
    4 channels), its eta > 0 noise from the warped streams; deterministic."""
    import xarray as xr

    pipeline, prompt = tiny_latent_pipeline
    overrides = (f"diffusion.model={pipeline}", f"diffusion.prompt_embeds={prompt}",
                 "diffusion.mode=generate", "channels=4", "deform.size=256",
                 "deform.latent_factor=8", "diffusion.eta=1.0")  # fmt: skip
    summary, directory = _diffuse(compose, *overrides, output_dir=tmp_path / "latent")
    with xr.open_dataset(directory / "diffusion.nc", engine="h5netcdf") as result:
        assert result.sizes["frame"] == 4 and np.isfinite(result["warping_error"][1:]).all()
    from PIL import Image

    assert Image.open(directory / "frames" / "00000.png").size == (256, 144)
    again, _ = _diffuse(compose, *overrides, output_dir=tmp_path / "latent2")
    measured = ("seconds", "time_s", "step_s", "rss_mb")  # the only figures that may vary
    assert {k: v for k, v in again.items() if k not in measured} == {
        k: v for k, v in summary.items() if k not in measured
    }


def _latent_edit(tiny_latent_pipeline, *overrides, size=256):
    """Overrides for an edit of the clip at ``size`` x 9/16 of it (256: noise 4 x 18 x 32)
    through the tiny latent pipeline, 3 frames."""
    pipeline, prompt = tiny_latent_pipeline
    return (f"diffusion.model={pipeline}", f"diffusion.prompt_embeds={prompt}", "frames=3",
            "channels=4", f"deform.size={size}", "deform.latent_factor=8", "diffusion.mode=edit",
            *overrides)  # fmt: skip


def _frames(directory):
    from PIL import Image

    return [np.asarray(Image.open(p)) for p in sorted((directory / "frames").glob("*.png"))]


def test_latent_pipeline_edits_video(compose, tiny_latent_pipeline, tmp_path):
    """Edit mode with a latent pipeline: frames at the image size (noise x 8), finite
    metrics measured there with the video's flow."""
    import xarray as xr

    _, directory = _diffuse(compose, *_latent_edit(tiny_latent_pipeline), output_dir=tmp_path / "a")
    for name in ("video.mp4", "video.gif", "diffusion.nc", "noise.h5"):
        assert (directory / name).exists(), name
    frames = _frames(directory)
    assert len(frames) == 3 and all(frame.shape == (144, 256, 3) for frame in frames)
    with xr.open_dataset(directory / "diffusion.nc", engine="h5netcdf") as result:
        assert result.attrs["mode"] == "edit" and result.sizes["frame"] == 3
        for name in ("ssim", "quality", "detail_energy"):
            assert np.isfinite(result[name]).all(), name
        for name in ("warping_error", "texture_sticking", "input_warping_error"):
            assert np.isfinite(result[name][1:]).all(), name


def test_latent_edit_is_bit_identical_on_rerun(compose, tiny_latent_pipeline, tmp_path):
    """Same stack, pipeline and config (eta = 1: per-step warped latent streams too): the
    same frames bit for bit."""
    overrides = _latent_edit(tiny_latent_pipeline, "diffusion.eta=1.0")
    _, first = _diffuse(compose, *overrides, output_dir=tmp_path / "a")
    _, second = _diffuse(compose, *overrides, output_dir=tmp_path / "b")
    assert all(np.array_equal(a, b) for a, b in zip(_frames(first), _frames(second), strict=True))


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_latent_edit_noises_the_vae_latent_with_the_warped_frame(
    compose, tiny_latent_pipeline, tmp_path, monkeypatch, prediction
):
    """With an oracle UNet (it answers the true noise, the warped frame, in the scheduler's
    parameterisation) the sampler's first input must be add_noise(encode(frame), warped, t0)
    and DDIM must land on the frame's VAE round trip; both computed here with diffusers."""
    import json
    import shutil

    from diffusers import AutoencoderKL, DDIMScheduler

    from noisewarp.diffusion.data import NoiseStackDataset
    from noisewarp.diffusion.images import resized, to_model_range
    from noisewarp.diffusion.latent import LatentModel
    from noisewarp.motion import BUNDLED_CLIPS
    from noisewarp.video import open_video

    source, prompt = tiny_latent_pipeline
    pipeline = tmp_path / "pipeline"
    shutil.copytree(source, pipeline)
    config_path = pipeline / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "prediction_type": prediction}))
    vae = AutoencoderKL.from_pretrained(pipeline / "vae")
    alphas = DDIMScheduler.from_pretrained(pipeline / "scheduler").alphas_cumprod
    video = open_video(BUNDLED_CLIPS[compose("stage=diffuse").deform.clip], frames=3, size=256)
    with torch.no_grad():
        clean = [
            vae.encode(torch.from_numpy(to_model_range(resized(f, 144, 256)))[None])
            .latent_dist.mode() * vae.config.scaling_factor
            for f in video
        ]  # fmt: skip
        round_trip = [vae.decode(c / vae.config.scaling_factor).sample[0] for c in clean]
    directory = tmp_path / "edit"
    # diffusion.steps=4 at strength 0.5, then denoiser_ratio's white-noise reference.
    steps_per_frame = 2 + 1
    calls = []

    def oracle(x, timestep):
        frame = len(calls) // steps_per_frame
        warped = NoiseStackDataset(directory / "noise.h5")[frame][None]
        calls.append((x.clone(), int(timestep), warped))
        if prediction == "epsilon":
            return warped
        a = alphas[int(timestep)]
        return a.sqrt() * warped - (1 - a).sqrt() * clean[frame]

    monkeypatch.setattr(LatentModel, "denoiser", lambda self, settings: oracle)
    overrides = (f"diffusion.model={pipeline}", f"diffusion.prompt_embeds={prompt}", "frames=3",
                 "channels=4", "deform.size=256", "deform.latent_factor=8")  # fmt: skip
    _diffuse(compose, *overrides, "diffusion.mode=edit", output_dir=directory)
    assert len(calls) == 3 * steps_per_frame
    for frame, output in enumerate(_frames(directory)):
        x, t0, warped = calls[frame * steps_per_frame]
        expected = DDIMScheduler.from_pretrained(pipeline / "scheduler").add_noise(
            clean[frame], warped, torch.tensor([t0])
        )
        assert t0 == 499 and torch.allclose(x, expected, atol=1e-6), frame
        decoded = np.rint(np.clip((round_trip[frame].permute(1, 2, 0).numpy() + 1) / 2, 0, 1) * 255)
        assert np.abs(output.astype(float) - decoded).max() <= 1, frame


def test_latent_denoiser_guides_as_diffusers(tiny_latent_pipeline):
    """guidance_scale > 1: negative + g * (conditional - negative), one batched UNet call."""
    from noisewarp.diffusion.latent import LatentDenoiser
    from noisewarp.diffusion.models import load_model

    unet = load_model(tiny_latent_pipeline[0]).pipeline.unet
    generator = torch.Generator().manual_seed(0)
    embeds, negative = torch.randn(2, 1, 3, 8, generator=generator)
    x = torch.randn(1, 4, 4, 4, generator=generator)
    guided = LatentDenoiser(unet, embeds, negative, 3.0)(x, 500)
    positive = LatentDenoiser(unet, embeds)(x, 500)
    unconditional = LatentDenoiser(unet, negative)(x, 500)
    expected = unconditional + 3.0 * (positive - unconditional)
    assert torch.allclose(guided, expected, atol=1e-5)
    assert not torch.allclose(guided, positive, atol=1e-3)


def test_latent_denoiser_encodes_prompt_and_empty_prompt(tiny_latent_pipeline, tmp_path):
    """With a text encoder: the prompt's embeddings, and the empty prompt's as the negative
    ones for guidance, as ``pipeline.encode_prompt`` makes them (tiny CLIP from configs)."""
    import json
    from types import SimpleNamespace

    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from noisewarp.diffusion.models import load_model

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"),
                              model_max_length=4)  # fmt: skip
    torch.manual_seed(0)
    encoder = CLIPTextModel(CLIPTextConfig(vocab_size=3, hidden_size=8, intermediate_size=16,
                                           num_hidden_layers=1, num_attention_heads=2,
                                           max_position_embeddings=4, bos_token_id=0,
                                           eos_token_id=1, pad_token_id=1)).eval()  # fmt: skip
    model = load_model(tiny_latent_pipeline[0])
    model.pipeline.register_modules(text_encoder=encoder, tokenizer=tokenizer)
    denoiser = model.denoiser(SimpleNamespace(prompt="a", guidance_scale=2.0))

    def embed(text):
        ids = tokenizer(text, padding="max_length", max_length=4, return_tensors="pt").input_ids
        with torch.no_grad():
            return encoder(ids)[0]

    assert denoiser.guided and denoiser.guidance_scale == 2.0
    assert torch.equal(denoiser.embeds, torch.cat([embed(""), embed("a")]))


def test_latent_edit_bad_inputs_are_clear_and_write_nothing(
    compose, tiny_latent_pipeline, tmp_path, monkeypatch
):
    from noisewarp.diffusion import models

    pipeline, prompt = tiny_latent_pipeline
    edit = _latent_edit(tiny_latent_pipeline)
    no_embeds = tuple(o for o in edit if not o.startswith("diffusion.prompt_embeds"))
    no_video = (f"diffusion.model={pipeline}", f"diffusion.prompt_embeds={prompt}", "channels=4",
                "deform=translate", "diffusion.mode=edit")  # fmt: skip
    odd = _latent_edit(tiny_latent_pipeline, size=128)  # noise 9 x 16
    generate = (*no_embeds, "diffusion.mode=generate")
    guided = (f"diffusion.prompt_embeds={prompt}", "diffusion.guidance_scale=2")
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros((3, 16), np.float32))
    cases = [
        (no_embeds, "no text encoder and tokenizer: give diffusion.prompt_embeds"),
        ((*edit, "diffusion.guidance_scale=2"), "guidance_scale=2 needs the empty prompt"),
        # The pipeline's own loop (generate) needs a prompt source as much.
        (generate, "no text encoder and tokenizer: give diffusion.prompt_embeds"),
        ((*generate, *guided), "guidance_scale=2 needs the empty prompt"),
        ((*no_embeds, f"diffusion.prompt_embeds={flat}"), "\\(3, 16\\); .* \\[1, tokens, 8\\]"),
        (no_video, "needs a video \\(deform=video\\)"),
        (odd, "latent_factor\\) is 9 x 16; .* divisible by 2 \\(choose .*deform.latent_factor"),
    ]
    for index, (overrides, match) in enumerate(cases):
        directory = tmp_path / f"bad{index}"
        with pytest.raises(ValueError, match=match):
            _diffuse(compose, *overrides, output_dir=directory)
        assert not directory.exists() or not any(directory.iterdir()), overrides
    load = models.load_model

    def decoder_only(*args, **kwargs):
        model = load(*args, **kwargs)
        model.pipeline.vae.encoder = None
        return model

    monkeypatch.setattr(models, "load_model", decoder_only)
    with pytest.raises(ValueError, match="needs a VAE encoder; the pipeline .* decoder only"):
        _diffuse(compose, *edit, output_dir=tmp_path / "decoder")
    assert not (tmp_path / "decoder").exists()
