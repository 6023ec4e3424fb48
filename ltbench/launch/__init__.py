"""Launchers hand RunSpecs to `execute`: in this process (local) or as Slurm jobs."""
