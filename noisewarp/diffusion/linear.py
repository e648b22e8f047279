"""Linear denoisers as the yardstick for the built-in model: ``python -m
noisewarp.diffusion.linear`` prints its x0 denoising error against them on held-out
images.

The best linear estimate of an image x from y = x + sigma * noise is
mu + Sigma (Sigma + sigma^2 I)^-1 (y - mu). Three approximations of Sigma, fitted on the
model's own training images: the per-channel Wiener filter (each channel's power spectrum,
channels independent), the cross-channel one (a 3 x 3 spectral density per frequency)
and the full covariance of the crop (no stationarity assumed). A network that merely
learnt second-order statistics would match the last; beating it means it learnt
structure beyond them.

The two spectral filters treat the crop as periodic, which costs them at its edges (the
wrap-around joins unrelated pixels), so every error is also reported over the interior,
``EDGE`` pixels in from each side, where that artefact has died out: a network that wins
only at the edges has learnt nothing a windowed linear filter could not do.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from noisewarp.diffusion import images as image_sets

CROP = 32
SNRS = (4.0, 1.0, 0.25)
# Interior errors leave out this many pixels at each side of the crop (6 or 8 change
# the ratios by under 0.01).
EDGE = 4


class LinearDenoisers:
    """Per-channel Wiener, cross-channel spectral and full-covariance denoisers of
    [N, 3, P, P] crops, fitted from training crops."""

    def __init__(self, crops: np.ndarray, full: bool = True):
        crops = np.asarray(crops, np.float64)
        count, channels, size, _ = crops.shape
        self.mean = crops.mean(axis=(0, 2, 3))[:, None, None]
        centred = crops - self.mean
        spectra = np.fft.fft2(centred) / size  # unitary: white noise keeps variance sigma^2
        # density[k, c, d] = E[X_c(k) conj(X_d(k))]
        self.density = np.einsum("nchw,ndhw->hwcd", spectra, spectra.conj()) / count
        if full:
            flat = centred.reshape(count, -1)
            self.eigenvalues, self.eigenvectors = np.linalg.eigh(flat.T @ flat / count)
        self.shape = (channels, size, size)

    def per_channel(self, noisy: np.ndarray, sigma: float) -> np.ndarray:
        power = np.real(np.einsum("hwcc->hwc", self.density))  # [P, P, C]
        gain = np.moveaxis(power / (power + sigma**2), -1, 0)
        return self.mean + np.real(np.fft.ifft2(gain * np.fft.fft2(noisy - self.mean)))

    def cross_channel(self, noisy: np.ndarray, sigma: float) -> np.ndarray:
        eye = np.eye(self.shape[0])
        gain = self.density @ np.linalg.inv(self.density + sigma**2 * eye)  # [P, P, C, C]
        spectra = np.fft.fft2(noisy - self.mean)
        filtered = np.einsum("hwcd,ndhw->nchw", gain, spectra)
        return self.mean + np.real(np.fft.ifft2(filtered))

    def full_covariance(self, noisy: np.ndarray, sigma: float) -> np.ndarray:
        flat = (noisy - self.mean).reshape(len(noisy), -1)
        shrink = self.eigenvalues / (self.eigenvalues + sigma**2)
        out = ((flat @ self.eigenvectors) * shrink) @ self.eigenvectors.T
        return self.mean + out.reshape(noisy.shape)


def network_x0(model, noisy_scaled, snr: float):
    """The pixel model's x0 estimate from x_t = a x + s noise at log-SNR ``snr`` (a
    fractional timestep of its schedule: diffusers' time embedding takes floats)."""
    import torch

    from noisewarp.diffusion.samplers import ddim_scheduler

    scheduler = ddim_scheduler(model.scheduler_config, 10)
    alpha_bar = scheduler.alphas_cumprod.double().clamp(1e-12, 1 - 1e-12).numpy()
    log_snr = np.log(alpha_bar / (1 - alpha_bar))
    timestep = float(np.interp(-np.log(snr), -log_snr, np.arange(len(log_snr))))
    a, s = np.sqrt(snr / (1 + snr)), np.sqrt(1 / (1 + snr))
    x = torch.from_numpy(noisy_scaled.astype(np.float32))
    outputs = []
    for batch in torch.split(x, 64):
        output = model(batch, torch.tensor(timestep)).double().numpy()
        kind = model.scheduler_config.get("prediction_type", "epsilon")
        if kind == "v_prediction":
            outputs.append(a * batch.double().numpy() - s * output)
        elif kind == "epsilon":
            outputs.append((batch.double().numpy() - s * output) / a)
        else:
            outputs.append(output)
    return np.concatenate(outputs)


def compare(model=None, train_crops: int = 20_000, test_crops: int = 1_000, seed: int = 0,
            full: bool = True):  # fmt: skip
    """x0 MSE of the network and the linear denoisers on held-out crops, per SNR (the
    full-covariance one only with ``full``: its fit is the slow part)."""
    from threadpoolctl import threadpool_limits

    from noisewarp.diffusion.models import load_model

    model = model or load_model()
    rng = np.random.default_rng(seed)
    train = image_sets.random_crops(image_sets.training_images(), train_crops, CROP, rng)
    test = image_sets.random_crops(image_sets.held_out_images(), test_crops, CROP, rng, flip=False)
    with threadpool_limits(limits=1, user_api="blas"):
        linear = LinearDenoisers(train, full)
    rows = []
    for snr in SNRS:
        noise = rng.standard_normal(test.shape)
        sigma = 1 / np.sqrt(snr)
        noisy = test + sigma * noise  # y = x_t / a
        a = np.sqrt(snr / (1 + snr))
        estimates = {"network": network_x0(model, a * noisy, snr)}
        for name in ("per_channel", "cross_channel", "full_covariance")[: 3 if full else 2]:
            estimates[name] = getattr(linear, name)(noisy, sigma)
        row = {"snr": snr}
        for name, estimate in estimates.items():
            error = ((estimate - test) ** 2).mean(axis=(0, 1))  # per pixel of the crop
            row[name] = float(error.mean())
            row[name + "_interior"] = float(error[EDGE:-EDGE, EDGE:-EDGE].mean())
        rows.append(row)
    return rows


def format_table(rows) -> str:
    """One markdown row per SNR and region (whole crop, interior)."""
    lines = [
        "| SNR | pixels | network MSE | per-channel Wiener | cross-channel | full covariance "
        "| network / per-channel | network / cross-channel | network / full covariance |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        for region, suffix in (("whole crop", ""), (f"interior ({EDGE} px in)", "_interior")):
            net = row["network" + suffix]
            cells = [f"{row['snr']:g}", region, f"{net:.4f}"]
            names = ("per_channel", "cross_channel", "full_covariance")
            cells += [f"{row[n + suffix]:.4f}" if n in row else "-" for n in names]
            cells += [f"{net / row[n + suffix]:.2f}" if n in row else "-" for n in names]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    import torch

    from noisewarp.diffusion.models import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a local diffusers directory")
    parser.add_argument("--train-crops", type=int, default=20_000)
    parser.add_argument("--test-crops", type=int, default=1_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = compare(load_model(args.model), args.train_crops, args.test_crops)
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))


if __name__ == "__main__":
    main()
