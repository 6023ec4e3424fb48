"""The Optuna side of `ltbench tune`: one study per (method, dataset, IF) cell in one journal
file under the results dir, its sampler, and the summary the report reads.

The journal (Optuna's JournalStorage on a JournalFileBackend) is the study itself: every ask
and tell is appended to it under a file lock, so a study survives Ctrl-C and continues from
any machine that sees the results dir. Only the process that runs `ltbench tune` writes it;
trials train as ordinary runs and report through the store.

The sampler is made anew for every round, seeded from --sampler-seed and the number of
trials the study already holds: Optuna's samplers keep their random state in the process,
so a study resumed by a new process with the plain seed would draw its first trials again.
Seeded this way, a study's draws depend only on the seed and its history, interrupted or not.
"""

import json
import math
from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import distribution_to_json
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from ltbench.errors import UserError
from ltbench.file_modes import atomic_write_bytes, make_dirs

STUDY_DIR = "tune"  # under the results dir: the journal and one summary per study
JOURNAL = "optuna.journal"
SAMPLERS = ("tpe", "random")
SCORE = "val_top1"  # what a trial is scored on: its run's validation top-1 at the last epoch

optuna.logging.set_verbosity(optuna.logging.WARNING)  # ltbench says what each round does


def journal(results_dir) -> JournalStorage:
    folder = Path(results_dir) / STUDY_DIR
    make_dirs(folder)
    return JournalStorage(JournalFileBackend(str(folder / JOURNAL)))


def check_sampler(name) -> str:
    text = str(name).strip().lower()
    if text not in SAMPLERS:
        raise UserError(f"unknown sampler {name!r}", hint=f"use one of: {', '.join(SAMPLERS)} (--sampler tpe)")
    return text


def make_sampler(kind: str, seed: int) -> optuna.samplers.BaseSampler:
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # Optuna's defaults: the first 10 trials are drawn at random, and the trials of a round
    # asked before any is told are kept apart by the constant liar
    return optuna.samplers.TPESampler(seed=seed)


def round_seed(sampler_seed: int, trials_so_far: int) -> int:
    return int(np.random.SeedSequence([sampler_seed, trials_so_far]).generate_state(1)[0])


def definition(kind: str, sampler_seed: int, distributions: dict) -> dict:
    """What a study was started with, recorded in it: a continuation must draw the same way."""
    return {"sampler": kind, "sampler_seed": sampler_seed,
            "space": {name: json.loads(distribution_to_json(d)) for name, d in distributions.items()}}


def open_study(storage: JournalStorage, name: str, recorded: dict, results_dir) -> optuna.Study:
    """The study `name`, created with `recorded` (definition) as its attributes, or loaded and
    checked against them: a UserError where this command would draw otherwise."""
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
    attrs = study.user_attrs
    if not attrs:
        for key, value in recorded.items():
            study.set_user_attr(key, value)
        return study
    if (attrs.get("sampler"), attrs.get("sampler_seed")) != (recorded["sampler"], recorded["sampler_seed"]):
        raise UserError(f"the study {name} in {results_dir} was started with --sampler {attrs.get('sampler')} "
                        f"--sampler-seed {attrs.get('sampler_seed')}; this command asks for --sampler "
                        f"{recorded['sampler']} --sampler-seed {recorded['sampler_seed']}, and one study draws "
                        "from one sampler",
                        hint=f"continue it with --sampler {attrs.get('sampler')} --sampler-seed "
                        f"{attrs.get('sampler_seed')}, or start a new study in another --results-dir")
    if attrs.get("space") != recorded["space"]:
        raise UserError(f"the study {name} in {results_dir} searched {sorted(attrs.get('space', {}))} over other "
                        "ranges than the method now declares: its trials would not be draws of one space",
                        hint="start a new study in another --results-dir (the runs of this one stay valid)")
    return study


def study_for_round(storage: JournalStorage, name: str, kind: str, sampler_seed: int) -> optuna.Study:
    """The study with this round's sampler (see the module's docstring)."""
    trials = len(storage.get_all_trials(storage.get_study_id_from_name(name), deepcopy=False))
    return optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(kind, round_seed(sampler_seed, trials)))


def left_running(study: optuna.Study) -> list:
    """Trials asked by a command that ended before telling them (Ctrl-C, a killed process)."""
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def tell(study: optuna.Study, number: int, row: dict | None, run_dir) -> str:
    """Tells trial `number` its run's outcome from the run's result row: its validation
    top-1, or a failure (a setting that made the loss diverge is an outcome of the search and
    counts in the budget). Returns done | failed | unfinished (no row: the trial stays running
    and the next command finishes it)."""
    if row is None:
        return "unfinished"
    if row.get("status") != "done":
        study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
        return "failed"
    value = row.get(SCORE)
    if value in (None, "") or not math.isfinite(float(value)):
        raise UserError(f"the run in {run_dir} has no validation accuracy ({SCORE}): trials are scored on the "
                        "validation split, and this dataset has none",
                        hint="tune on a dataset with a validation split (every built-in one has one: "
                        "`ltbench split DATASET` shows it)")
    study.tell(number, float(value), skip_if_finished=True)
    return "done"


def best_trial(study: optuna.Study, budget: int):
    """The trial with the best validation score among the study's first `budget` (by number):
    a study with more trials than this budget is compared at this budget. Ties: the earlier."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.number < budget]
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


def write_summary(results_dir, name: str, summary: dict) -> Path:
    """The study as the report reads it (without Optuna): <results>/tune/<name>.json."""
    path = Path(results_dir) / STUDY_DIR / f"{name}.json"
    atomic_write_bytes(path, (json.dumps(summary, indent=1, sort_keys=False) + "\n").encode("utf-8"))
    return path


def trial_rows(study: optuna.Study) -> list[dict]:
    return [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
             "run_id": t.user_attrs.get("run_id", "")} for t in study.get_trials(deepcopy=False)]
