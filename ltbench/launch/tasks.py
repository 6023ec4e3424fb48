"""What a launcher's job does with its run: train it (`ltbench run`) or evaluate its last
checkpoint (`ltbench evaluate`).

The launchers (ltbench.launch.jobs, slurm) know a task by name: a job process or a Slurm job
is told the name and calls the task's payload, which holds the run's lock while it works and
returns done, failed or busy, whoever called it. Nothing here knows how runs are launched.
"""

from dataclasses import dataclass
from typing import Callable

from ltbench.results_schema import PREDICTIONS_FILE
from ltbench.store import RunStore


def _train(spec, results_dir, device="auto", reporter=None, context=None, log=print, wait=False) -> str:
    from ltbench.runner import execute
    return execute(spec, results_dir, device, reporter, context, log, wait)


def _evaluate(spec, results_dir, device="auto", reporter=None, context=None, log=print, wait=False) -> str:
    from ltbench.evaluate import evaluate_run
    return evaluate_run(spec, results_dir, device, context, log, wait)


def _trained(store: RunStore, run_id: str) -> bool:
    return store.state(run_id) == "done"


def evaluated(store: RunStore, run_id: str) -> bool:
    """A finished run with its predictions: nothing left to evaluate."""
    return store.state(run_id) == "done" and (store.run_dir(run_id) / PREDICTIONS_FILE).exists()


@dataclass(frozen=True)
class Task:
    name: str  # what a job is told
    doing: str  # as the launcher's lines say it: "another process is <doing> it"
    # a two-stage run's job starts once its stage-1 run has ended: training it would train
    # that stage 1 itself, while evaluating it only reads the stage-1 checkpoint
    after_stage1: bool
    # (spec, results_dir, device, reporter, context, log, wait) -> done | failed | busy
    payload: Callable[..., str]
    finished: Callable[[RunStore, str], bool]  # nothing is left for the task to do on the run


TRAIN = Task("train", "training", True, _train, _trained)
EVALUATE = Task("evaluate", "evaluating", False, _evaluate, evaluated)
TASKS = {task.name: task for task in (TRAIN, EVALUATE)}
