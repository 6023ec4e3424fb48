"""Facts about where a run happened, recorded with its result."""

import contextlib
import ctypes
import gc
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


class PeakMemory:
    """The peak memory of one run, from when it is made to when `mb` is read, in the unit
    `measure` names: a sweep runs many runs in one process, and a process-lifetime peak would
    give each run the largest of those before it.

    - cuda_allocated: torch.cuda.max_memory_allocated, reset when the run starts (tensors
      only: neither the caching allocator's reserve nor the CUDA context).
    - rss: the process's peak resident memory since the run started (Linux's VmHWM, reset
      through /proc/self/clear_refs), so it includes the interpreter, torch and whatever the
      process held when the run started; freed heap is handed back to the system first.
    - rss_lifetime: where VmHWM cannot be reset, the process's lifetime peak (ru_maxrss), kept
      only when the run raised it, which makes it the run's own; None when it did not.
    """

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            self.measure = "cuda_allocated"
        elif _reset_rss_peak():
            self.measure = "rss"
        else:
            self.measure, self.maxrss_before = "rss_lifetime", _maxrss_mb()

    def mb(self) -> float | None:
        if self.measure == "cuda_allocated":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.measure == "rss":
            return _status_kib("VmHWM") / 1024
        peak = _maxrss_mb()
        return peak if peak > self.maxrss_before else None


def _reset_rss_peak() -> bool:
    """Resets the process's peak resident memory to what it holds now; False where Linux's
    /proc/self/clear_refs is not there or refuses it."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        # glibc keeps freed heap mapped: what an earlier run freed would count as this one's
        ctypes.CDLL(None).malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # 5: reset the peak RSS (proc(5))
        return _status_kib("VmHWM") is not None
    except OSError:
        return False


def _status_kib(field: str) -> int | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def _maxrss_mb() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


@lru_cache(maxsize=1)
def git_sha() -> str:
    """The commit ltbench's code came from, with `-dirty` when its tracked files had changes
    not committed: such a run's code is not the commit's, and the report says so."""
    def git(*args):
        # no optional locks: `git status` would otherwise refresh the index under index.lock,
        # and a run killed meanwhile (or one that cannot write) leaves that lock in the user's way
        return subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5,
                              env=dict(os.environ, GIT_OPTIONAL_LOCKS="0"))

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
