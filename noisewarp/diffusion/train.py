"""Train the built-in model: ``python -m noisewarp.diffusion.train`` (into
``noisewarp/data/builtin-unet``; ``--out DIR`` elsewhere).

A small ``UNet2DModel`` (``models.builtin_unet_config``) learns v-prediction on random
crops of real colour images (``images.training_images``), with an exponential moving
average of its weights, which is what is saved (``save_pretrained``, safetensors, float16
to keep the file small). The loss of every logged step goes to ``loss.csv`` beside it.
One torch thread by default: on a small machine shared with other work, one thread runs
several times faster than two competing for the same cores; on idle cores ``--threads``
as many as there are (the weights depend on the thread count, not on the run).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch

from noisewarp.diffusion import images as image_sets
from noisewarp.diffusion.models import BUILTIN_MODEL, builtin_scheduler_config, builtin_unet_config


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=BUILTIN_MODEL)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--crop", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--ema", type=float, default=0.998, help="EMA decay of the weights")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model")
    return parser.parse_args(argv)


def save(unet, scheduler, out: Path) -> None:
    """The DDPMPipeline layout, weights in float16 (half the size; loaded as float32)."""
    from diffusers import DDPMPipeline

    half = type(unet).from_config(unet.config)
    half.load_state_dict(unet.state_dict())
    half.half()  # nn.Module's cast (diffusers' own .to() warns about fp32-only modules)
    DDPMPipeline(unet=half, scheduler=scheduler).save_pretrained(out, safe_serialization=True)


def train(args: argparse.Namespace) -> dict:
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel

    out = Path(args.out)
    if (out / "model_index.json").exists() and not args.overwrite:
        raise FileExistsError(f"{out} already holds a model; pass --overwrite to replace it")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    data = image_sets.training_images()

    unet = UNet2DModel(**builtin_unet_config(args.crop))
    scheduler = DDPMScheduler(**builtin_scheduler_config())
    ema = EMAModel(unet.parameters(), decay=args.ema, use_ema_warmup=True)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = get_cosine_schedule_with_warmup(optimizer, args.steps // 30, args.steps)
    out.mkdir(parents=True, exist_ok=True)
    log_rows, window, start = [], [], time.perf_counter()
    for step in range(1, args.steps + 1):
        clean = torch.from_numpy(image_sets.random_crops(data, args.batch, args.crop, rng))
        noise = torch.randn_like(clean)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (args.batch,))
        noisy = scheduler.add_noise(clean, noise, timesteps)
        target = scheduler.get_velocity(clean, noise, timesteps)
        loss = torch.nn.functional.mse_loss(unet(noisy, timesteps).sample, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        ema.step(unet.parameters())
        window.append(loss.item())
        if step % args.log_every == 0 or step == args.steps:
            elapsed = time.perf_counter() - start
            log_rows.append((step, float(np.mean(window)), elapsed))
            print(f"step {step:5d}  loss {log_rows[-1][1]:.4f}  {elapsed:7.0f} s", flush=True)
            window = []
    ema.copy_to(unet.parameters())
    save(unet, scheduler, out)
    with open(out / "loss.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "loss", "elapsed_s"])
        writer.writerows((s, f"{loss:.5f}", f"{t:.1f}") for s, loss, t in log_rows)
    record = {key: str(value) for key, value in vars(args).items()}
    record["train_seconds"] = round(time.perf_counter() - start, 1)
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def plot_loss(directory: Path) -> Path | None:
    """``loss.png`` from ``loss.csv`` (skipped without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    with open(Path(directory) / "loss.csv") as handle:
        rows = list(csv.DictReader(handle))
    fig, ax = plt.subplots(figsize=(5, 3), dpi=80)
    ax.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows])
    ax.set(yscale="log", xlabel="step", ylabel="v-prediction MSE (logged mean)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(directory) / "loss.png"
    fig.savefig(path)
    plt.close(fig)
    return path


if __name__ == "__main__":
    arguments = parse_args()
    train(arguments)
    plot_loss(arguments.out)
