"""noisewarp's Hydra launcher plugin, ``hydra/launcher=noisewarp_slurm`` (Hydra looks for
launchers in the ``hydra_plugins`` namespace only)."""
