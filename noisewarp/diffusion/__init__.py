"""The torch diffusion stage (DESIGN section 11): warped noise stacks in, video out.

Needs ``pip install -e ".[diffusion]"``; ``import noisewarp`` does not import this package
or torch. Modules: ``data`` (lazy HDF5 dataset), ``samplers`` (DDIM / ancestral with a
``noise_sampler`` seam), ``models`` and ``latent`` (diffusers checkpoints), ``stage``
(``python run.py stage=diffuse``), ``metrics`` (warping error, texture sticking, quality),
``train`` and ``images`` (the built-in model), ``linear`` (its linear yardsticks).
"""
