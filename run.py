"""Warp a noise video from a config: ``python run.py method=particle res=1024``.

Configs live in conf/ (Hydra). Sweeps: ``python run.py -m method=particle,grid res=256,512``;
add ``hydra/launcher=joblib`` (local processes) or ``hydra/launcher=submitit_slurm`` (a
SLURM cluster). All the work is in ``noisewarp.experiment.run``.
"""

import logging

import hydra
from omegaconf import DictConfig

from noisewarp import experiment

log = logging.getLogger("run")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict | None:
    status, error = "interrupted", None
    try:
        if cfg.get("diffusion") is not None:  # stage=diffuse: noise, then the diffusion model
            from noisewarp.diffusion.stage import run as diffuse

            summary = diffuse(cfg)
        else:
            summary = experiment.run(cfg)
        status = "complete"
        return summary
    except Exception as exc:
        status, error = "failed", exc
        if not experiment.in_multirun():
            raise
        # One failing job must not stop a sweep: status.json records it for collect.
        log.exception("run failed")
        return None
    finally:
        experiment.write_status(cfg, status, error)


if __name__ == "__main__":
    main()
