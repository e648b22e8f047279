"""Warp a noise video from a config: ``python run.py method=particle res=1024``.

The same as the installed ``noisewarp-run`` (``noisewarp/cli.py``); configs live in
``noisewarp/conf/`` (Hydra). Sweeps: ``python run.py -m method=particle,grid res=256,512``;
add ``hydra/launcher=joblib`` (local processes) or ``hydra/launcher=noisewarp_slurm`` (a
SLURM cluster). All the work is in ``noisewarp.experiment.run``.
"""

from noisewarp.cli import main

if __name__ == "__main__":
    main()
