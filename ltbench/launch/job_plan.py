"""`ltbench run --jobs N --devices ...`: how many runs at once, where each goes, and how many
CPU threads each gets.

The defaults follow what benchmarks/sweep_jobs.py measured (benchmarks/RESULTS.md): on a
machine without GPUs one job that uses every core, since on 2 cores two runs side by side,
a thread each, gave no more throughput than the same two one after the other with both
threads (0.97x); on GPUs one job per GPU.
"""

import os
from dataclasses import dataclass

import torch

from ltbench.errors import UserError, count_flag

DEVICES_HINT = "e.g. --devices cuda:0,cuda:1 (or 0,1; cuda for every visible GPU), or --devices cpu"


@dataclass(frozen=True)
class JobPlan:
    jobs: int
    devices: tuple[str, ...]  # jobs take them in turn: job slot i runs on devices[i % len(devices)]
    threads: int  # CPU threads of each job: the cores this process may use, divided between the jobs

    def device_for(self, slot: int) -> str:
        return self.devices[slot % len(self.devices)]


def plan_jobs(jobs, devices: list[str] | None, device: str = "auto") -> JobPlan:
    """The plan for `--jobs` (None: the default), `--devices` (None: from `--device`, whose
    default auto means every visible GPU, else the CPU)."""
    if devices and device not in (None, "auto"):
        raise UserError(f"--device {device} and --devices {','.join(devices)} both say where runs go",
                        hint="give one: --devices lists where the jobs of --jobs run")
    chosen = parse_devices(devices) if devices else default_devices(device)
    on_gpu = chosen[0] != "cpu"
    count = parse_jobs(jobs) if jobs is not None else (len(chosen) if on_gpu else 1)
    # torch's thread count is the cores this process may use (OMP_NUM_THREADS, else the
    # machine's): the jobs share them rather than each taking them all
    return JobPlan(jobs=count, devices=chosen, threads=max(1, torch.get_num_threads() // count))


def parse_jobs(value) -> int:
    return count_flag("--jobs", value,
                      hint="e.g. --jobs 4 (runs at once); --jobs 1 runs them one after another in this process")


def default_devices(device: str = "auto") -> tuple[str, ...]:
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return ("cpu",)
    if device.startswith("cuda:"):
        return (device,)
    return every_gpu()


def every_gpu() -> tuple[str, ...]:
    count = torch.cuda.device_count()
    if count == 0:
        raise UserError("a GPU was asked for but no CUDA device is available",
                        hint="use --devices cpu (or --device cpu), or run where a GPU is visible")
    return tuple(f"cuda:{i}" for i in range(count))


def parse_devices(items: list[str]) -> tuple[str, ...]:
    """cpu, cuda (every visible GPU), cuda:N or N; a device named twice gets twice the jobs."""
    chosen = []
    for item in items:
        name = str(item).strip().lower()
        if name == "cpu":
            chosen.append("cpu")
        elif name == "cuda":
            chosen += every_gpu()
        elif name.isdigit() or (name.startswith("cuda:") and name[5:].isdigit()):
            index = int(name.removeprefix("cuda:"))
            count = torch.cuda.device_count()
            if index >= count:
                raise UserError(f"--devices {item}: this machine has {count} CUDA device(s)"
                                + (f", cuda:0 to cuda:{count - 1}" if count else ""),
                                hint=DEVICES_HINT)
            chosen.append(f"cuda:{index}")
        else:
            raise UserError(f"--devices: unknown device {item!r}", hint=DEVICES_HINT)
    if "cpu" in chosen and any(d != "cpu" for d in chosen):
        raise UserError(f"--devices {','.join(map(str, items))} mixes the CPU and GPUs: a sweep's runs would then differ by "
                        "where they ran", hint="list GPUs only, or cpu only")
    return tuple(chosen)


def visible_gpu(device: str) -> str:
    """CUDA_VISIBLE_DEVICES for a job on `device` (cuda:N, counted among the GPUs this process
    sees): the job then sees only that GPU, and creates no context on the others."""
    index = int(device.removeprefix("cuda:"))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return str(index)
    return [part.strip() for part in visible.split(",") if part.strip()][index]
