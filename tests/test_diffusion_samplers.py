"""The samplers against an exact oracle: data from a Gaussian N(mu, Sigma), whose exact
denoiser is linear, so DDIM (eta = 0) must carry N(0, I) to N(mu, Sigma), and the
ancestral sampler too; sample mean and covariance are compared within their standard
errors."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from noisewarp.diffusion import samplers  # noqa: E402

torch.set_num_threads(1)  # tiny tensors: a second thread only competes for the cores

DIM_SHAPE = (2, 1, 2)  # [C, H, W]: 4 correlated dimensions
# Sample size: with every training timestep the samplers' own discretisation bias stays
# within 1 standard error of 10,000 samples (2 for ancestral sampling on Stable Diffusion's
# schedule, computed exactly by propagating the moments), so a 4.5-sigma check has room
# while a 5% error in the noise shows as 7 standard errors.
SAMPLES = 10_000
MEAN = np.array([0.5, -0.3, 0.2, 0.0])
# A correlated covariance with variances well below 1, as images in [-1, 1] have.
_FACTOR = np.array([[0.5, 0.0, 0.0, 0.0], [0.3, 0.4, 0.0, 0.0], [-0.1, 0.2, 0.3, 0.0],
                    [0.2, -0.1, 0.1, 0.25]])  # fmt: skip
COVARIANCE = _FACTOR @ _FACTOR.T


class GaussianDenoiser:
    """The exact E[x0 | x_t] of x0 ~ N(mu, Sigma), x_t = a x0 + s eps, in the scheduler's
    parameterisation: E[x0 | x_t] = mu + a Sigma (a^2 Sigma + s^2 I)^-1 (x_t - a mu)."""

    def __init__(self, scheduler, mean, covariance):
        self.scheduler = scheduler
        self.mean = torch.as_tensor(mean, dtype=torch.float64)
        self.covariance = torch.as_tensor(covariance, dtype=torch.float64)

    def __call__(self, x, timestep):
        alpha_bar = self.scheduler.alphas_cumprod[int(timestep)].double()
        a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        flat = x.reshape(len(x), -1)
        gain = (
            a
            * self.covariance
            @ torch.linalg.inv(
                a * a * self.covariance + s * s * torch.eye(len(self.mean), dtype=torch.float64)
            )
        )
        x0 = self.mean + (flat - a * self.mean) @ gain.T
        eps = (flat - a * x0) / s
        kind = self.scheduler.config.prediction_type
        out = {"epsilon": eps, "v_prediction": a * eps - s * x0, "sample": x0}[kind]
        return out.reshape(x.shape)


def _moments_agree(samples, mean, covariance, sigmas=4.5):
    """Each mean and covariance entry within ``sigmas`` standard errors of the truth."""
    flat = samples.reshape(len(samples), -1).double().numpy()
    count = len(flat)
    mean_error = (flat.mean(0) - mean) / np.sqrt(np.diag(covariance) / count)
    variances = np.diag(covariance)
    cov_se = np.sqrt((np.outer(variances, variances) + covariance**2) / count)
    cov_error = (np.cov(flat, rowvar=False) - covariance) / cov_se
    return np.abs(mean_error).max(), np.abs(cov_error).max(), sigmas


CONFIGS = {
    # The built-in model's schedule and parameterisation.
    "cosine-v": dict(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction"),
    # Stable Diffusion's.
    "scaled-linear-eps": dict(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type="epsilon",
    ),  # fmt: skip
}


def _run(config, eta, noise_scale=1.0):
    """Sample with every training timestep (100 steps leave a bias of 3-11 standard
    errors), starting from the
    exact law of x_T, N(a mu, a^2 Sigma + s^2 I) (Stable Diffusion's schedule leaves
    a = 0.07 at T). ``noise_scale`` != 1 scales all the sampler's noise: a broken sampler."""
    scheduler = samplers.ddim_scheduler(dict(num_train_timesteps=1000, **config), 1000)
    model = GaussianDenoiser(scheduler, MEAN, COVARIANCE)
    generator = torch.Generator().manual_seed(0)
    alpha_bar = float(scheduler.alphas_cumprod[scheduler.timesteps[0]])
    start_cov = alpha_bar * COVARIANCE + (1 - alpha_bar) * np.eye(len(MEAN))
    z = torch.randn((SAMPLES, len(MEAN)), generator=generator, dtype=torch.float64)
    x = (
        np.sqrt(alpha_bar) * torch.as_tensor(MEAN)
        + noise_scale * z @ torch.as_tensor(np.linalg.cholesky(start_cov)).T
    )
    fresh = samplers.fresh_noise_sampler(generator)
    return samplers.sample(
        model, x.reshape(SAMPLES, *DIM_SHAPE), scheduler, scheduler.timesteps, eta=eta,
        noise_sampler=lambda step, x: noise_scale * fresh(step, x),
    )  # fmt: skip


@pytest.mark.parametrize("config", CONFIGS, ids=list(CONFIGS))
@pytest.mark.parametrize("eta", [0.0, 1.0], ids=["ddim", "ancestral"])
def test_sampler_maps_noise_to_the_gaussian(config, eta):
    mean_z, cov_z, limit = _moments_agree(_run(CONFIGS[config], eta), MEAN, COVARIANCE)
    assert mean_z < limit and cov_z < limit, (mean_z, cov_z)


@pytest.mark.parametrize("eta", [0.0, 1.0], ids=["ddim", "ancestral"])
def test_broken_sampler_is_rejected(eta):
    """The same check goes red for a sampler whose noise is 5% too strong."""
    mean_z, cov_z, limit = _moments_agree(
        _run(CONFIGS["cosine-v"], eta, noise_scale=1.05), MEAN, COVARIANCE
    )
    assert max(mean_z, cov_z) > limit


def test_ddim_is_deterministic_and_ancestral_uses_the_given_noise():
    scheduler = samplers.ddim_scheduler(dict(num_train_timesteps=1000, **CONFIGS["cosine-v"]), 10)
    model = GaussianDenoiser(scheduler, MEAN, COVARIANCE)
    x = torch.randn((8, *DIM_SHAPE), generator=torch.Generator().manual_seed(1))
    a = samplers.sample(model, x.double(), scheduler, scheduler.timesteps)
    b = samplers.sample(model, x.double(), scheduler, scheduler.timesteps)
    assert torch.equal(a, b)
    streams = torch.randn((10, *x.shape), dtype=torch.float64)
    run = [
        samplers.sample(model, x.double(), scheduler, scheduler.timesteps, eta=1.0,
                        noise_sampler=samplers.stream_noise_sampler(streams))
        for _ in range(2)
    ]  # fmt: skip
    assert torch.equal(run[0], run[1]) and not torch.equal(run[0], a)
    with pytest.raises(IndexError, match="noise stream"):
        samplers.sample(model, x.double(), scheduler, scheduler.timesteps, eta=1.0,
                        noise_sampler=samplers.stream_noise_sampler(streams[:3]))  # fmt: skip


def test_edit_timesteps():
    scheduler = samplers.ddim_scheduler(dict(num_train_timesteps=1000), 20)
    assert len(samplers.edit_timesteps(scheduler, 0.5)) == 10
    assert samplers.edit_timesteps(scheduler, 1.0)[0] == 999
    with pytest.raises(ValueError, match="strength"):
        samplers.edit_timesteps(scheduler, 0.0)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_predicted_noise_in_every_parameterisation(kind):
    """``predicted_noise`` turns the exact denoiser's output, in any parameterisation, into
    the same noise estimate; the sampler's callback sees every model call."""
    config = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    reference = samplers.ddim_scheduler({**config, "prediction_type": "epsilon"}, 10)
    scheduler = samplers.ddim_scheduler({**config, "prediction_type": kind}, 10)
    x = torch.randn((6, *DIM_SHAPE), generator=torch.Generator().manual_seed(2)).double()
    seen = []
    samplers.sample(GaussianDenoiser(scheduler, MEAN, COVARIANCE), x, scheduler,
                    scheduler.timesteps, callback=lambda *args: seen.append(args))  # fmt: skip
    assert [int(s[1]) for s in seen] == [int(t) for t in scheduler.timesteps]
    for _, timestep, sample, output in seen:
        expected = GaussianDenoiser(reference, MEAN, COVARIANCE)(sample, timestep)
        got = samplers.predicted_noise(scheduler, output, sample, timestep)
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("eta", [0.0, 1.0], ids=["ddim", "ancestral"])
def test_steps_that_do_not_divide_the_schedule_land_on_x0(kind, eta):
    """7 steps of 1000 (timesteps 999, 856, ..., 142): with a denoiser that knows x0 every
    step must go to the next timestep of the schedule and the last to alpha = 1, so the
    sample is x0 itself, whatever the noise (stepping t - 1000 // 7 ends at alpha < 1)."""
    config = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    scheduler = samplers.ddim_scheduler({**config, "prediction_type": kind}, 7)
    generator = torch.Generator().manual_seed(3)
    x0, eps = torch.randn((2, 4, *DIM_SHAPE), generator=generator, dtype=torch.float64)

    def exact(x, timestep):
        abar = scheduler.alphas_cumprod[int(timestep)].double()
        noise = (x - abar.sqrt() * x0) / (1 - abar).sqrt()
        return noise if kind == "epsilon" else abar.sqrt() * noise - (1 - abar).sqrt() * x0

    start = samplers.noise_to(scheduler, x0, eps, scheduler.timesteps[0])
    out = samplers.sample(exact, start, scheduler, scheduler.timesteps, eta=eta,
                          noise_sampler=samplers.fresh_noise_sampler(generator))  # fmt: skip
    assert (out - x0).abs().max() < 1e-6


@pytest.mark.parametrize("eta", [0.0, 1.0], ids=["ddim", "ancestral"])
def test_steps_that_divide_the_schedule_are_diffusers_bit_for_bit(eta):
    """20 steps (the stage's default): the same bits as ``DDIMScheduler.step`` (float32, as
    the stage runs)."""
    scheduler = samplers.ddim_scheduler(dict(num_train_timesteps=1000, **CONFIGS["cosine-v"]), 20)
    exact = GaussianDenoiser(scheduler, MEAN, COVARIANCE)

    def model(x, timestep):
        return exact(x, timestep).float()

    x = torch.randn((8, *DIM_SHAPE), generator=torch.Generator().manual_seed(4))
    streams = torch.randn((20, *x.shape), generator=torch.Generator().manual_seed(5))
    ours = samplers.sample(model, x, scheduler, scheduler.timesteps, eta=eta,
                           noise_sampler=samplers.stream_noise_sampler(streams))  # fmt: skip
    theirs = x
    for step, timestep in enumerate(scheduler.timesteps):
        noise = streams[step] if eta > 0 else None
        output = model(theirs, timestep)
        theirs = scheduler.step(output, timestep, theirs, eta=eta, variance_noise=noise).prev_sample
    assert torch.equal(ours, theirs)
