"""``hydra/launcher=noisewarp_slurm``: hydra-submitit-launcher's ``submitit_slurm`` with the
same parameters, whose submitting process also notices the jobs that end without running
to completion (cancelled while pending, killed, or no SLURM accounting to ask), writes
their ``status.json`` and goes on (``noisewarp.slurm``, ``docs/cluster.md``)."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

try:
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
except ImportError:  # no hydra-submitit-launcher: pip install "noisewarp[experiments]"
    SlurmLauncher = None

TARGET = "hydra_plugins.noisewarp_launcher.noisewarp_launcher.NoisewarpSlurmLauncher"
INSTALL = (
    "hydra/launcher=noisewarp_slurm needs hydra-submitit-launcher, which is not installed "
    'here: pip install "noisewarp[experiments]" (where the compute nodes see the same Python)'
)

if SlurmLauncher is not None:

    class NoisewarpSlurmLauncher(SlurmLauncher):
        """submitit_slurm; waiting and reporting by ``noisewarp.slurm.launch``."""

        def launch(self, job_overrides, initial_job_idx):
            from noisewarp.slurm import launch

            return launch(self, job_overrides, initial_job_idx)

    @dataclass
    class NoisewarpSlurmConf(SlurmQueueConf):
        _target_: str = TARGET

else:
    from hydra.errors import HydraException
    from hydra.plugins.launcher import Launcher

    class NoisewarpSlurmLauncher(Launcher):
        """Stands in while hydra-submitit-launcher is missing: says how to install it (else
        Hydra would only say it cannot find ``noisewarp_slurm``)."""

        def __init__(self, **params: Any) -> None:
            raise HydraException(INSTALL)

        def setup(self, *, hydra_context, task_function, config) -> None:
            raise HydraException(INSTALL)

        def launch(self, job_overrides, initial_job_idx):
            raise HydraException(INSTALL)

    @dataclass
    class NoisewarpSlurmConf:
        """submitit_slurm's usual settings, so that overrides of them reach the hint."""

        _target_: str = TARGET
        submitit_folder: str = "${hydra.sweep.dir}/.submitit/%j"
        timeout_min: int = 60
        cpus_per_task: Any = None
        gpus_per_node: Any = None
        tasks_per_node: int = 1
        mem_gb: Any = None
        nodes: int = 1
        name: str = "${hydra.job.name}"
        stderr_to_stdout: bool = False
        partition: Any = None
        qos: Any = None
        comment: Any = None
        constraint: Any = None
        exclude: Any = None
        gres: Any = None
        cpus_per_gpu: Any = None
        gpus_per_task: Any = None
        mem_per_gpu: Any = None
        mem_per_cpu: Any = None
        account: Any = None
        signal_delay_s: int = 120
        max_num_timeout: int = 0
        additional_parameters: dict[str, Any] = field(default_factory=dict)
        array_parallelism: int = 256
        setup: Any = None
        srun_args: Any = None


ConfigStore.instance().store(
    group="hydra/launcher", name="noisewarp_slurm", node=NoisewarpSlurmConf(),
    provider="noisewarp",
)  # fmt: skip
