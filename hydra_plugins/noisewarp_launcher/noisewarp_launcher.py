"""``hydra/launcher=noisewarp_slurm``: hydra-submitit-launcher's ``submitit_slurm`` with the
same parameters, whose submitting process also notices the jobs that end without running
to completion (cancelled while pending, killed, or no SLURM accounting to ask), writes
their ``status.json`` and goes on (``noisewarp.slurm``, ``docs/cluster.md``)."""

from dataclasses import dataclass

try:
    from hydra.core.config_store import ConfigStore
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
except ImportError:  # no hydra-submitit-launcher: pip install "noisewarp[experiments]"
    SlurmLauncher = None

if SlurmLauncher is not None:

    class NoisewarpSlurmLauncher(SlurmLauncher):
        """submitit_slurm; waiting and reporting by ``noisewarp.slurm.launch``."""

        def launch(self, job_overrides, initial_job_idx):
            from noisewarp.slurm import launch

            return launch(self, job_overrides, initial_job_idx)

    @dataclass
    class NoisewarpSlurmConf(SlurmQueueConf):
        _target_: str = "hydra_plugins.noisewarp_launcher.noisewarp_launcher.NoisewarpSlurmLauncher"

    ConfigStore.instance().store(
        group="hydra/launcher", name="noisewarp_slurm", node=NoisewarpSlurmConf(),
        provider="noisewarp",
    )  # fmt: skip
