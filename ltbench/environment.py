"""Facts about where a run happened, recorded with its result."""

import contextlib
import os
import resource
import subprocess
import sys
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import torch

from ltbench.errors import UserError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available",
                        hint="use --device auto or --device cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UserError(f"unknown device '{name}'", hint="use auto, cpu or cuda")
    return torch.device(name)


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{os.cpu_count()} cores"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so a timer read after it
    covers that work; a no-op elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak device memory on CUDA; peak resident memory of the process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is KiB on Linux, bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


@lru_cache(maxsize=1)
def git_sha() -> str:
    """The commit ltbench's code came from, with `-dirty` when its tracked files had changes
    not committed: such a run's code is not the commit's, and the report says so."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)

    try:
        head = git("rev-parse", "--short", "HEAD")
        if head.returncode != 0:
            return ""
        changed = git("status", "--porcelain", "--untracked-files=no")
        return head.stdout.strip() + ("-dirty" if changed.returncode == 0 and changed.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def slurm_job_id() -> str:
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID", "")


@contextlib.contextmanager
def native_stderr_silenced():
    """The profiler's C++ side logs its start and stop on file descriptor 2 for every profiled
    step. An error raised inside still shows: descriptor 2 is restored before it propagates."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
