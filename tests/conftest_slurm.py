"""The `slurm_cluster` fixture: a private single-node Slurm cluster for the launcher's tests.

tests/conftest.py imports the fixture from here, so every test module can ask for it.
The cluster is `scripts/slurm_cluster.sh`: started once per test session and stopped at
its end, unless it was already up (then it is reused and left running).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

CLUSTER_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "slurm_cluster.sh"
SLURM_COMMANDS = ("sbatch", "squeue", "srun", "scontrol", "slurmctld", "slurmd", "munged")


def _cluster(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), command], capture_output=True, text=True, timeout=120
    )


def _slurm_conf_line(output: str) -> str:
    for line in output.splitlines():
        if line.startswith("export SLURM_CONF="):
            return line.removeprefix("export SLURM_CONF=")
    raise RuntimeError(f"{CLUSTER_SCRIPT.name} printed no SLURM_CONF line:\n{output}")


@pytest.fixture(scope="session")
def slurm_cluster():
    """Yields the path of the running cluster's slurm.conf, with SLURM_CONF set to it."""
    missing = [cmd for cmd in SLURM_COMMANDS if shutil.which(cmd) is None]
    if missing:
        pytest.skip(
            f"Slurm is not installed (no {', '.join(missing)} on PATH); "
            "`sudo scripts/slurm_cluster.sh install` installs it on Debian/Ubuntu"
        )
    already_up = _cluster("status")
    if already_up.returncode == 0:
        conf, started_here = _slurm_conf_line(already_up.stdout), False
    else:
        if os.geteuid() != 0:
            pytest.skip("no test Slurm cluster is running, and starting one needs root")
        began = time.monotonic()
        started = _cluster("start")
        if started.returncode != 0:
            pytest.fail(f"could not start the test Slurm cluster:\n{started.stderr}")
        conf, started_here = _slurm_conf_line(started.stdout), True
        print(f"\nSlurm test cluster up in {time.monotonic() - began:.1f}s ({conf})")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", conf)
        try:
            yield conf
        finally:
            if started_here:
                stopped = _cluster("stop")
                if stopped.returncode != 0:
                    print(f"stopping the test Slurm cluster failed:\n{stopped.stderr}")
