"""Compare sampled warps with the exact conditional moments, in standard errors."""

from __future__ import annotations

import numpy as np


def moment_z_scores(
    samples: np.ndarray,
    mean: np.ndarray,
    cov: np.ndarray,
    rng_seed: int = 0,
    extra_pairs: int = 2000,
) -> tuple[float, float]:
    """Largest |z| of the sample mean and of the sample covariance against the exact ones.

    ``samples`` [n, P] are n independent warps (one key each) of the same source;
    ``mean`` [P] and ``cov`` [P, P] are E[Y | X] and Cov[Y | X]. The mean of pixel p
    has standard error sqrt(cov_pp / n); a sample covariance entry of Gaussian data
    has standard error sqrt((cov_pp cov_qq + cov_pq^2) / n). Covariances are
    checked on the diagonal, on every pair with a non-zero exact covariance, and on
    ``extra_pairs`` random pairs (which should be ~0).
    """
    n = samples.shape[0]
    var = np.diag(cov)
    mean_z = (samples.mean(axis=0) - mean) / np.sqrt(np.maximum(var, 1e-300) / n)
    centred = samples - samples.mean(axis=0)
    rows, cols = np.nonzero(np.triu(np.abs(cov) > 1e-12))
    rng = np.random.default_rng(rng_seed)
    npix = cov.shape[0]
    extra_r = rng.integers(0, npix, extra_pairs)
    extra_c = rng.integers(0, npix, extra_pairs)
    rows = np.concatenate([rows, extra_r])
    cols = np.concatenate([cols, extra_c])
    sample_cov = np.einsum("ni,ni->i", centred[:, rows], centred[:, cols]) / (n - 1)
    se = np.sqrt((var[rows] * var[cols] + cov[rows, cols] ** 2) / n)
    cov_z = (sample_cov - cov[rows, cols]) / se
    return float(np.max(np.abs(mean_z))), float(np.max(np.abs(cov_z)))
