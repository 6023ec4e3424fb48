"""`ltbench run --launcher slurm`: the sweep's runs as one submitit job array (two, when
two-stage runs wait for the stage-1 runs they reuse). `ltbench evaluate --launcher slurm`:
the finished runs to evaluate as one array.

Each job calls the same `execute` the local launcher calls. It is Checkpointable: on
pre-emption or time-out submitit requeues it, and `execute` resumes from the run's last
epoch checkpoint, so the result equals an uninterrupted run's. This module knows nothing
about training; `execute` knows nothing about Slurm.
"""

import contextlib
import io
from pathlib import Path

import submitit
from submitit.core.utils import FailedJobError, FailedSubmissionError

from ltbench import distributed, environment, stages
from ltbench.errors import UserError
from ltbench.progress import PlainReporter
from ltbench.launch.slurm_options import SlurmOptions, add_arguments, options_from_args
from ltbench.launch.slurm_queue import (
    EVALUATIONS, Submission, SubmissionRecord, check_cluster, job_logs, queued_states, scheduler_states,
)
from ltbench.launch.tasks import EVALUATE, TASKS, TRAIN, Task
from ltbench.launch.slurm_wait import wait_for
from ltbench.progress import console
from ltbench.run_context import RunContext
from ltbench.spec import RunSpec
from ltbench.store import RunStore, owner_writes_only

__all__ = ["add_arguments", "launch", "scheduler_states", "job_logs", "CheckpointableRun"]


class CheckpointableRun(submitit.helpers.Checkpointable):
    """One run as a Slurm job (its training, or with task "evaluate" its evaluation). The
    inherited `checkpoint` resubmits this same call, which is all a requeue needs: the progress
    lives in the run's checkpoint file, not in this object."""

    def __init__(self, results_dir: str, device: str, context: RunContext, task: str = TRAIN.name):
        self.results_dir = results_dir
        self.device = device
        self.context = context  # pickled with the call: the job reads no environment for it
        self.task = task

    def __call__(self, spec: RunSpec) -> str:
        if submitit.JobEnvironment().num_tasks > 1:
            # the job's tasks are the ranks of one data-parallel run: submitit knows who is
            # who and where rank 0 is; torch.distributed reads it from the environment
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        with distributed.process_group(self.device):
            if distributed.is_distributed():
                print(f"ltbench: rank {distributed.rank()} of {distributed.world_size()}", flush=True)
            # the job log (<results>/slurm/) gets one line per epoch while the run trains
            reporter = PlainReporter() if distributed.is_main() else None
            # a run another process holds (a local sweep on the same results dir) is waited
            # for, not skipped: the job then ends with the run's outcome, as --wait reports it
            return TASKS[self.task].payload(spec, self.results_dir, self.device, reporter, self.context, wait=True)


def launch(specs: list[RunSpec], results_dir, args, device: str | None = None,
           context: RunContext | None = None) -> int:
    """Submit the runs not already queued as one job array (and the two-stage runs whose stage
    1 is queued or submitted with them as a second, waiting one); with --wait, follow them to
    the end. Returns 0, or 1 when --wait saw a run fail."""
    options = options_from_args(args)
    context = context or RunContext()
    if not specs:
        console.print("nothing to submit")
        return 0
    results_dir = Path(results_dir).resolve()  # jobs start elsewhere; a relative path would move
    record = SubmissionRecord(results_dir)
    check_cluster(options.partition)
    previous = record.read()
    # run id -> the ids of the runs it needs finished: a two-stage run's stage 1, a distilling run's teacher
    needs = {s.run_id: ids for s in specs if (ids := {first.run_id for first in stages.dependencies(s)})}
    queued = queued_states(previous[r].job_id for r in {s.run_id for s in specs}.union(*needs.values())
                           if r in previous)
    waiting = {s.run_id for s in specs if s.run_id in previous and previous[s.run_id].job_id in queued}
    todo = [s for s in specs if s.run_id not in waiting]
    if waiting:
        console.print(f"{len(waiting)} run(s) already queued or running in Slurm; not submitted again")
    if todo:
        device = device or getattr(args, "device", None) or "auto"
        jobs = {run_id: previous[run_id].job_id for run_id in previous if previous[run_id].job_id in queued}
        now, waits = stage1_waits(todo, needs, jobs)
        if now:
            jobs.update(_submit(now, results_dir, options, device, record, context))
        if waits:
            # afterany: if a stage-1 job fails, the two-stage job trains stage 1 itself, as
            # a local run would; one dependency list serves the whole array
            after = sorted({jobs[first] for firsts in waits.values() for first in firsts})
            _submit([s for s in todo if s.run_id in waits], results_dir, options, device, record, context, after)
    else:
        console.print("nothing to submit")
    return wait_for([s.run_id for s in specs], results_dir) if options.wait else 0


def stage1_waits(todo: list[RunSpec], needs: dict[str, set[str]],
                 queued_jobs: dict[str, str]) -> tuple[list[RunSpec], dict[str, set[str]]]:
    """Splits the runs to submit into those that can start now and, for the two-stage runs
    (cRT, tau-norm, LWS, ...) whose stage-1 CE run is in `todo` or queued (or the distilling
    runs whose teacher is), the run ids of those runs. Such a run must wait for them, or it
    would train the same CE run itself, in parallel with the CE job."""
    todo_ids = {s.run_id for s in todo}
    waits = {run_id: pending for run_id, firsts in needs.items()
             if run_id in todo_ids and (pending := {f for f in firsts if f in todo_ids or f in queued_jobs})}
    return [s for s in todo if s.run_id not in waits], waits


def launch_evaluations(specs: list[RunSpec], results_dir, args, device: str = "auto",
                       context: RunContext | None = None) -> int:
    """Submit the evaluations of finished runs (`ltbench evaluate`) not already queued as one
    job array, recorded apart from the training jobs; with --wait, follow them to the end.
    Returns 0, or 1 when --wait saw an evaluation end without its predictions."""
    options = options_from_args(args)
    results_dir = Path(results_dir).resolve()
    record = SubmissionRecord(results_dir, EVALUATIONS)
    check_cluster(options.partition)
    previous = record.read()
    queued = queued_states(previous[s.run_id].job_id for s in specs if s.run_id in previous)
    todo = [s for s in specs if s.run_id not in previous or previous[s.run_id].job_id not in queued]
    if len(todo) < len(specs):
        console.print(f"{len(specs) - len(todo)} evaluation(s) already queued or running in Slurm; not submitted again")
    if todo:
        _submit(todo, results_dir, options, device, record, context or RunContext(), task=EVALUATE)
    else:
        console.print("nothing to submit")
    if not options.wait:
        return 0
    return wait_for([s.run_id for s in specs], results_dir, record_name=EVALUATIONS,
                    ended=lambda store, run_id, _: "done" if EVALUATE.finished(store, run_id) else None)


def _submit(specs, results_dir, options, device, record, context, after=(), task: Task = TRAIN) -> dict[str, str]:
    """Submits one array, records it, says so; returns run id -> job id."""
    submitted = submit(specs, results_dir, options, device, context, after, task)
    record.add(submitted)
    array = next(iter(submitted.values())).job_id.split("_")[0]
    waits = f", to start once job(s) {' '.join(after)} have ended" if after else ""
    what = "run(s)" if task is TRAIN else "evaluation(s)"
    console.print(f"submitted {len(specs)} {what} as Slurm job {array}{waits}; logs under {results_dir / 'slurm'}\n"
                  f"follow it with: ltbench status --results-dir {results_dir}  (or squeue -j {array})")
    return {run_id: sub.job_id for run_id, sub in submitted.items()}


def submit(specs: list[RunSpec], results_dir: Path, options: SlurmOptions, device: str, context: RunContext,
           after: list[str] = (), task: Task = TRAIN) -> dict[str, Submission]:
    executor = submitit.AutoExecutor(folder=results_dir / "slurm" / "%j", cluster="slurm")
    parameters = options.executor_parameters()
    if after:
        extra = dict(parameters["slurm_additional_parameters"] or {})
        extra["dependency"] = "afterany:" + ":".join(after)
        parameters["slurm_additional_parameters"] = extra
    executor.update_parameters(**parameters)
    submitted_at = environment.now()
    try:
        # submitit echoes sbatch's complaints to stderr; the error below says them once. Its
        # job pickles are code the jobs run: no one but the user may write them or their folders
        with contextlib.redirect_stderr(io.StringIO()), owner_writes_only():
            jobs = executor.map_array(CheckpointableRun(str(results_dir), device, context, task.name), specs)
    except (FailedJobError, FailedSubmissionError) as exc:
        raise UserError(f"sbatch refused the job array: {_sbatch_errors(exc)}",
                        hint="check the --slurm-* options (or the [slurm] config table) against this cluster") from None
    store = RunStore(results_dir)
    for spec in specs if task is TRAIN else ():
        # a queued run is listed by `ltbench status` before its job starts; a corrupt folder's
        # files are left for its job to set aside
        if store.state(spec.run_id) != "corrupt":
            store.write_spec(spec)
    return {
        spec.run_id: Submission(job.job_id, str(job.paths.stdout), str(job.paths.stderr), submitted_at)
        for spec, job in zip(specs, jobs)
    }


def _sbatch_errors(exc: Exception) -> str:
    lines = [line.strip().removeprefix("sbatch: error: ") for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) or "no message"
