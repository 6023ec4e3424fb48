"""`ltbench tune`: an equal-budget hyperparameter search for every method, each trial an
ordinary run.

Per (method, dataset, IF) cell one Optuna study (ltbench.tune_study) draws the settings the
method declares searchable (ltbench.search_space), the same number of trials for every
method. A trial is the run its drawn settings resolve to, on the trial seed: it has its own
run id, trains under the store's lock through the launchers `ltbench run` uses, and resumes
as any run does. Its score is the run's validation top-1 at the last epoch, the model the
headline top-1 reports, so the search never reads the test set (the best-on-validation epoch
would add a second choice, made on the same images, to the one being scored).

Trials of a round are asked up front and trained as one batch (--jobs N at once, or one Slurm
array), then told from the store. A rerun continues every study to --budget and trains
nothing twice: a trial a stopped command left running is finished as that trial (its run
resumes, or is read from the store if it finished). Then each method's best settings, and its
paper defaults, train on --seeds as runs of their own. Trials train on a seed outside --seeds,
so the settings are chosen on runs the comparison never reads. Tags tell the three apart.
"""

import argparse
import math
from dataclasses import dataclass, replace
from pathlib import Path

from optuna.storages.journal import JournalStorage
from rich.markup import escape
from rich.table import Table

from ltbench import registry
from ltbench.commands import check_grid, sweep_and_launcher, train_here, unreadable_datasets
from ltbench.errors import UserError, count_flag
from ltbench.migrate import migrate_store
from ltbench.progress import console
from ltbench.search_space import Dimension, distributions, search_space
from ltbench.spec import RunSpec
from ltbench.store import RunStore
from ltbench.sweep import Sweep, imbalance_factors_of, resolve, route_overrides
from ltbench.sweep_args import parse_seed
from ltbench import tune_study

TRIAL_TAG, DEFAULT_TAG, TUNED_TAG = "tune-trial", "tune-default", "tune-tuned"
TRIAL_SEED = 1000
DEFAULT_SEEDS = ["0", "1", "2"]


@dataclass
class Cell:
    """One study: a method on one dataset and imbalance factor."""

    method: str
    dataset: str
    imbalance_factor: float
    preset: str
    overrides: dict  # the command's own --set values for this method: {(owner, key): raw}
    base: RunSpec  # the method's run on the trial seed, nothing drawn
    space: list[Dimension]

    @property
    def name(self) -> str:
        # the base run's id names what the trials vary from (preset, --set, trial seed)
        return f"{self.method}_{self.dataset}_if{self.imbalance_factor:g}_{self.base.run_id}"

    def spec(self, seed: int, params: dict | None = None) -> RunSpec:
        """The run of `params` (a trial's, by setting name; none: the defaults) on `seed`."""
        drawn = {(d.owner, d.key): params[d.name] for d in self.space} if params else {}
        return resolve(self.method, self.dataset, self.imbalance_factor, seed, self.preset,
                       {**self.overrides, **drawn})


def parse_budget(value) -> int:
    return count_flag("--budget", value, hint="e.g. --budget 20: the trials every method gets in each cell")


def parse_sampler_seed(value) -> int:
    try:
        return parse_seed(value)
    except UserError as exc:
        raise UserError(f"--sampler-seed: {exc.args[0]}", hint="e.g. --sampler-seed 0") from None


def cells_of(sweep: Sweep, trial_seed: int) -> list[Cell]:
    routed = route_overrides(sweep.methods, sweep.overrides)
    cells = []
    for dataset in sweep.datasets:
        for factor in imbalance_factors_of(registry.dataset(dataset), sweep.imbalance_factors):
            for method in sweep.methods:
                base = resolve(method, dataset, factor, trial_seed, sweep.preset, routed[method])
                space = search_space(base)
                check_space(method, space)
                cells.append(Cell(method, dataset, float(factor), sweep.preset, routed[method], base, space))
    return cells


def check_space(method: str, space: list[Dimension]) -> None:
    if not space:
        raise UserError(f"{method} declares no search space: there is nothing for a study to draw",
                        hint=f"`ltbench list {method}` shows its settings; leave {method} out of --methods, or "
                        "declare a Search on its settings")


def tune(args) -> int:
    """`ltbench tune`: search every study to the budget, then retrain on --seeds."""
    search, seeds = prepare(args)
    return search.run() or search.retrain(seeds)


def prepare(args) -> tuple["Search", list[int]]:
    """Every check of the command's input, then the studies opened (or created) in the
    journal: the search to run, and the seeds its results are retrained on."""
    budget = parse_budget(args.budget)
    kind = tune_study.check_sampler(args.sampler)
    sampler_seed = parse_sampler_seed(args.sampler_seed)
    args.seeds = args.seeds or DEFAULT_SEEDS
    if args.launcher == "slurm":
        args.wait = True  # each round's scores are told before the next round is asked
    sweep, where = sweep_and_launcher(args)
    trial_seed = TRIAL_SEED if args.trial_seed is None else parse_seed(args.trial_seed)
    if trial_seed in sweep.seeds:
        raise UserError(f"--seeds {','.join(map(str, sweep.seeds))} includes the trial seed {trial_seed}: the "
                        "settings would be chosen on a run the comparison then reads",
                        hint=f"leave {trial_seed} out of --seeds, or give another --trial-seed")
    cells = cells_of(sweep, trial_seed)
    check_grid([cell.base for cell in cells])
    unreadable = unreadable_datasets([cell.base for cell in cells], where["context"])
    if unreadable:
        raise next(iter(unreadable.values()))
    results_dir = where["results_dir"]
    store = RunStore(results_dir)
    store.ensure_writable()
    migrate_store(store.root, log=console.print)
    storage = tune_study.journal(results_dir)
    for cell in cells:
        recorded = tune_study.definition(kind, sampler_seed, distributions(cell.space))
        tune_study.open_study(storage, cell.name, recorded, results_dir)
    console.print(f"{len(cells)} studies of {budget} trials each ({kind} sampler, seed {sampler_seed}), trials on "
                  f"seed {trial_seed}, scored on validation top-1; journal {storage_path(results_dir)}")
    return Search(cells, budget, kind, sampler_seed, storage, store, args, where), sweep.seeds


def storage_path(results_dir) -> str:
    return str(Path(results_dir) / tune_study.STUDY_DIR / tune_study.JOURNAL)


@dataclass
class Search:
    """The command's studies, searched round by round (`run`), then retrained (`retrain`)."""

    cells: list[Cell]
    budget: int
    kind: str  # the sampler: tpe or random
    sampler_seed: int
    storage: JournalStorage
    store: RunStore
    args: argparse.Namespace  # the command's, which the launchers read (Slurm's options)
    where: dict  # ltbench.commands.sweep_and_launcher's

    def width(self) -> int:
        """Trials each study asks per round: the runs that train at once, shared by the studies."""
        if self.args.launcher == "slurm":
            from ltbench.launch.slurm_options import options_from_args
            at_once = options_from_args(self.args).array_parallelism
        else:
            at_once = self.where["plan"].jobs
        return max(1, math.ceil(at_once / len(self.cells)))

    def run(self) -> int:
        width, round_number = self.width(), 0
        while True:
            batch = [item for cell in self.cells for item in self.ask(cell, width)]
            if not batch:
                return 0
            round_number += 1
            specs = list({spec.run_id: spec for _, _, spec in batch}.values())
            todo = [s for s in specs if self.store.state(s.run_id) != "done"]
            console.print(f"round {round_number}: {len(batch)} trial(s), {len(specs) - len(todo)} already done in "
                          f"the store, {len(todo)} to train")
            code = self.train(todo, TRIAL_TAG) if todo else 0
            unfinished = []
            studies = {cell.name: tune_study.study_for_round(self.storage, cell.name, self.kind, self.sampler_seed)
                       for cell in self.cells}
            for cell, number, spec in batch:
                outcome = tune_study.tell(studies[cell.name], number, self.store.read_result(spec.run_id),
                                          self.store.run_dir(spec.run_id))
                if outcome == "unfinished":
                    unfinished.append(spec)
            for cell in self.cells:
                self.summarise(cell)
            if unfinished or code:
                console.print(escape(f"{len(unfinished)} trial(s) ended without a result "
                                     f"({', '.join(s.run_id for s in unfinished)}); run the same command again "
                                     "to finish them (each resumes from its last checkpoint)"))
                return code or 1

    def ask(self, cell: Cell, width: int) -> list[tuple[Cell, int, RunSpec]]:
        """This round's trials of `cell`: those a stopped command left running, then new ones
        up to the budget."""
        study = tune_study.study_for_round(self.storage, cell.name, self.kind, self.sampler_seed)
        items = [(cell, t.number, cell.spec(cell.base.seed, t.params)) for t in tune_study.left_running(study)]
        new = min(max(0, width - len(items)), self.budget - len(study.get_trials(deepcopy=False)))
        for _ in range(max(0, new)):
            trial = study.ask(distributions(cell.space))
            spec = cell.spec(cell.base.seed, trial.params)
            trial.set_user_attr("run_id", spec.run_id)
            items.append((cell, trial.number, spec))
        return items

    def train(self, todo: list[RunSpec], tag: str) -> int:
        """`todo` trained through `ltbench run`'s launchers under `tag`; 0, or the Slurm wait's
        exit status (130: stopped waiting, the jobs go on)."""
        context = replace(self.where["context"], tag=tag)
        if self.args.launcher == "slurm":
            from ltbench.launch import slurm
            code = slurm.launch(todo, self.where["results_dir"], self.args, device=self.where["device"],
                                context=context)
            return 130 if code == 130 else 0
        train_here(todo, self.where, context)
        return 0

    def retrain(self, seeds: list[int]) -> int:
        """Each cell's best settings and its defaults, trained on `seeds` as runs of their own."""
        finals = {}
        for cell in self.cells:
            study = tune_study.study_for_round(self.storage, cell.name, self.kind, self.sampler_seed)
            best = tune_study.best_trial(study, self.budget)
            defaults = [cell.spec(seed) for seed in seeds]
            tuned = [cell.spec(seed, best.params) for seed in seeds] if best is not None else []
            finals[cell.name] = (defaults, tuned)
            if best is None:
                console.print(f"{cell.method} {cell.dataset} IF{cell.imbalance_factor:g}: no trial of the first "
                              f"{self.budget} finished, nothing to retrain", style="yellow", markup=False)
        code = 0
        for index, tag in ((0, DEFAULT_TAG), (1, TUNED_TAG)):
            specs = [spec for pair in finals.values() for spec in pair[index]]
            todo = [s for s in specs if self.store.state(s.run_id) != "done"]
            what = "paper defaults" if index == 0 else "best settings"
            console.print(f"{what} on seeds {', '.join(map(str, seeds))}: {len(specs)} runs, "
                          f"{len(specs) - len(todo)} already done, {len(todo)} to train")
            if todo:
                code = code or self.train(todo, tag)
        for cell in self.cells:
            self.summarise(cell, *finals[cell.name])
        console.print(self.table())
        failed = [s.run_id for d, t in finals.values() for s in d + t if self.store.state(s.run_id) != "done"]
        if failed:
            console.print(escape(f"{len(failed)} run(s) not done: {', '.join(failed)}; see `ltbench status "
                                 f"--results-dir {self.where['results_dir']}`"), style="red")
        console.print(escape(f"next: ltbench report --results-dir {self.where['results_dir']}"))
        return code or (1 if failed else 0)

    def summarise(self, cell: Cell, defaults=(), tuned=()) -> None:
        """The study's summary file, which the report reads (ltbench.report.tuning)."""
        study = tune_study.study_for_round(self.storage, cell.name, self.kind, self.sampler_seed)
        best = tune_study.best_trial(study, self.budget)
        tune_study.write_summary(self.where["results_dir"], cell.name, {
            "study": cell.name, "method": cell.method, "dataset": cell.dataset,
            "imbalance_factor": cell.imbalance_factor, "preset": cell.preset, "budget": self.budget,
            "sampler": self.kind, "sampler_seed": self.sampler_seed, "trial_seed": cell.base.seed,
            "score": tune_study.SCORE, "trials": tune_study.trial_rows(study),
            "best": None if best is None else {"number": best.number, "value": best.value, "params": best.params},
            "defaults": {str(s.seed): s.run_id for s in defaults}, "tuned": {str(s.seed): s.run_id for s in tuned}})

    def table(self) -> Table:
        table = Table(title=f"Equal-budget search ({self.budget} trials per method and cell, {self.kind})")
        for column in ("method", "dataset", "IF", "trials", "failed", "best val top-1", "best settings"):
            table.add_column(column, overflow="fold")
        for cell in self.cells:
            study = tune_study.study_for_round(self.storage, cell.name, self.kind, self.sampler_seed)
            first = [t for t in study.get_trials(deepcopy=False) if t.number < self.budget]
            best = tune_study.best_trial(study, self.budget)
            settings = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in (best.params if best else {}).items())
            table.add_row(cell.method, cell.dataset, f"{cell.imbalance_factor:g}", str(len(first)),
                          str(sum(t.state.name == "FAIL" for t in first)),
                          "" if best is None else f"{best.value:.2f}", escape(settings))
        return table
