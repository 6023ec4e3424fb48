"""`ltbench run --jobs N`: up to N runs at once on this machine, each a process of its own
(ltbench.launch.job_worker), on the devices of a JobPlan in turn. `ltbench evaluate --jobs N`
evaluates finished runs the same way (a Task says which).

A run's result does not depend on what ran beside it: each job is a fresh process with the
same code path as `--jobs 1` (ltbench.runner.execute) and a fixed thread count, and the run's
lock keeps any run from being trained twice. Two-stage runs start once their stage-1 run has
ended, distilling runs once their teacher has, as Slurm's dependencies have them; a stage 1
or teacher that another process trains is waited for. A failed or crashed run is reported
and the others go on; Ctrl-C stops every job, each resumable from its last epoch checkpoint.
"""

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from ltbench import stages
from ltbench.launch.job_plan import JobPlan, visible_gpu
from ltbench.launch.job_view import PassThrough, open_output
from ltbench.launch.job_worker import EXIT_CODES, INTERRUPTED
from ltbench.launch.tasks import TRAIN, Task
from ltbench.run_context import RunContext
from ltbench.spec import RunSpec
from ltbench.store import RunStore

POLL_SECONDS = 0.2
# after Ctrl-C: the time the jobs get to stop on the terminal's own signal, then on the one
# passed on, before they are killed (their checkpoints are written atomically, so a kill
# loses at most the epoch in progress)
OWN_STOP_SECONDS, PASSED_STOP_SECONDS = 2.0, 30.0
STATUS_OF_EXIT = {code: status for status, code in EXIT_CODES.items()}


@dataclass
class Job:
    spec: RunSpec
    number: int  # its place in the sweep, 1-based
    slot: int
    device: str
    process: subprocess.Popen
    output: Path | None  # the file its output goes to; None: this process's output
    task: Task = TRAIN


def run_jobs(specs: list[RunSpec], results_dir, plan: JobPlan, log=print, view=None,
             context: RunContext | None = None, task: Task = TRAIN) -> dict:
    """Runs `task` on `specs` as up to plan.jobs processes at once; returns run_id -> done |
    failed. `view` (ltbench.launch.job_view) says where the jobs' output goes and shows them;
    `context` goes to every job as an argument."""
    view = view or PassThrough()
    with view:
        return _run_jobs(specs, results_dir, plan, log, view, context or RunContext(), task)


def _run_jobs(specs: list[RunSpec], results_dir, plan: JobPlan, log, view, context: RunContext, task: Task) -> dict:
    store = RunStore(results_dir)
    numbers = {spec.run_id: i for i, spec in enumerate(specs, 1)}
    # the runs each must find finished (its stage 1, its teacher), where the task trains
    after = {s.run_id: {first.run_id for first in stages.dependencies(s)} for s in specs if task.after_stage1}
    queue = [(spec, False) for spec in specs]  # (spec, wait for its lock)
    running: dict[int, Job] = {}
    statuses = {}
    log(f"{plan.jobs} jobs at once on {', '.join(dict.fromkeys(plan.devices))}, {threads_said(plan, torch.get_num_threads())}")
    try:
        while queue or running:
            while len(running) < plan.jobs:
                picked = next_ready(queue, after, {job.spec.run_id for job in running.values()})
                if picked is None:
                    break
                spec, wait = queue.pop(picked)
                head = f"[{numbers[spec.run_id]}/{len(specs)}] {spec.label} ({spec.run_id})"
                if task.finished(store, spec.run_id):
                    log(f"{head}: done meanwhile, by another process")
                    statuses[spec.run_id] = "done"
                    continue
                slot = min(s for s in range(plan.jobs) if s not in running)
                running[slot] = start(spec, numbers[spec.run_id], slot, plan, results_dir, wait,
                                      view.output_for(spec.run_id), context, task)
                view.started(running[slot])
                log(f"{head} on {running[slot].device}")
            time.sleep(POLL_SECONDS)
            for slot, job in list(running.items()):
                code = job.process.poll()
                if code is None:
                    continue
                del running[slot]
                view.ended(job)
                status = outcome(job, code, store, len(specs), log)
                if status == "busy":
                    queue.append((job.spec, True))
                else:
                    statuses[job.spec.run_id] = status
    except BaseException:
        stop(list(running.values()), log)
        raise
    return statuses


def threads_said(plan: JobPlan, cores: int) -> str:
    """The jobs' CPU threads, and where there are fewer cores (the threads this process was
    given, OMP_NUM_THREADS) than jobs, that they take more in all: a job needs one at least."""
    said = f"{plan.threads} CPU thread(s) each"
    if plan.threads * plan.jobs > cores:
        said += (f", {plan.threads * plan.jobs} in all: more than the {cores} this process was given "
                 f"(OMP_NUM_THREADS), since a job needs one at least; --jobs {cores} keeps to them")
    return said


def next_ready(queue: list[tuple[RunSpec, bool]], after: dict[str, set[str]], running: set[str]) -> int | None:
    """The first queued run that can start: one none of whose stage-1 or teacher runs is
    queued or running here (else it would wait for it in a job slot, or train it a second time)."""
    waiting_on = running | {spec.run_id for spec, _ in queue}
    for i, (spec, _) in enumerate(queue):
        if not after.get(spec.run_id, set()) & waiting_on:
            return i
    return None


def start(spec: RunSpec, number: int, slot: int, plan: JobPlan, results_dir, wait: bool, output: Path | None,
          context: RunContext, task: Task = TRAIN) -> Job:
    device = plan.device_for(slot)
    threads = str(plan.threads)
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    job_device = device
    if device.startswith("cuda:"):
        env["CUDA_VISIBLE_DEVICES"] = visible_gpu(device)
        job_device = "cuda:0"  # the only GPU the job sees
    command = [sys.executable, "-m", "ltbench.launch.job_worker", json.dumps(spec.to_dict()),
               "--results-dir", str(results_dir), "--device", job_device, "--threads", threads,
               "--context", json.dumps(context.to_dict()), "--launcher-pid", str(os.getpid()), "--task", task.name]
    # the job's output (one line per epoch) goes to `output`, else where this process's goes
    with open_output(output) if output is not None else nullcontext() as sink:
        process = subprocess.Popen(command + (["--wait"] if wait else []), env=env, stdout=sink,
                                   stderr=subprocess.STDOUT if output is not None else None)
    return Job(spec, number, slot, device, process, output, task)



def outcome(job: Job, code: int, store: RunStore, total: int, log) -> str:
    """done | failed | busy, from the job's exit status, said in one line."""
    head = f"[{job.number}/{total}] {job.spec.label} ({job.spec.run_id})"
    output = f"; its output: {job.output}" if job.output is not None else ""
    status = STATUS_OF_EXIT.get(code)
    if status == "done":
        row = store.read_result(job.spec.run_id)
        log(f"{head}: done, top-1 {float(row['top1']):.2f} %")
    elif status == "busy":
        log(f"{head}: another process is {job.task.doing} it; back to it after the rest of the queue")
    elif status == "failed" and job.task is not TRAIN:
        log(f"{head}: failed to {job.task.name}; its output says why{output}")
    elif status == "failed" and store.state(job.spec.run_id) == "failed":
        row = store.read_result(job.spec.run_id)
        log(f"{head}: failed: {row['error']} (see {store.run_dir(job.spec.run_id) / 'error.log'}{output})")
    else:
        how = "was interrupted" if code == INTERRUPTED else (
            f"was killed by signal {-code}" if code < 0 else f"ended with exit status {code}")
        log(f"{head}: failed: its job {how} before writing a result{output}; the run resumes from its "
            "last checkpoint when the sweep runs again")
        status = "failed"
    return status


def stop(jobs: list[Job], log) -> None:
    """Ctrl-C (or an error here): every job stops at once, leaving its last checkpoint."""
    alive = [job for job in jobs if job.process.poll() is None]
    if not alive:
        return
    log(f"stopping {len(alive)} job(s)")
    # a terminal's Ctrl-C reached every job already; a signal sent to this process alone did not
    if not _wait_all(alive, OWN_STOP_SECONDS):
        for job in alive:
            if job.process.poll() is None:
                job.process.send_signal(signal.SIGINT)
        if not _wait_all(alive, PASSED_STOP_SECONDS):
            for job in alive:
                if job.process.poll() is None:
                    job.process.kill()
            _wait_all(alive, PASSED_STOP_SECONDS)


def _wait_all(jobs: list[Job], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if all(job.process.poll() is not None for job in jobs):
            return True
        time.sleep(POLL_SECONDS)
    return all(job.process.poll() is not None for job in jobs)
