"""The report on `ltbench tune`: per method and cell, its paper defaults against its best
settings of an equal-budget search, both trained on the same seeds, and each method's
optimisation history.

It reads the summary each study leaves beside its journal (<results>/tune/<study>.json,
written by ltbench.tune) and the runs it names, so neither Optuna nor torch is imported here.
The statistics are the report's own (stats): means with Student-t intervals, and the tuned
runs paired seed by seed with the defaults' runs.
"""

import json
from pathlib import Path

import pandas as pd
from matplotlib.ticker import MaxNLocator

from . import stats
from .aggregate import cell_order
from .figures import label_colours, panel_grid, save_figure
from .formats import dataset_name, fmt_factor, fmt_number, fmt_signed, shown_label
from .model import Section, Table
from .names import method_rank
from .significance import fmt_interval, fmt_p

STUDY_DIR = "tune"  # ltbench.tune_study.STUDY_DIR, which imports Optuna
SECTION = "tuning"
KEYS = ("study", "method", "dataset", "imbalance_factor", "budget", "trials", "defaults", "tuned")


def read_studies(results_dir, runs: pd.DataFrame) -> list[dict]:
    """The study summaries under `results_dir` whose method and cell the selected `runs`
    hold (the report's filters apply to them too), in the report's row order."""
    folder = Path(results_dir) / STUDY_DIR
    cells = set(zip(runs["method"], runs["dataset"], runs["imbalance_factor"].astype(float)))
    studies = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            study = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a summary being rewritten or damaged: the next `ltbench tune` writes it again
        if isinstance(study, dict) and all(k in study for k in KEYS) and (
                study["method"], study["dataset"], float(study["imbalance_factor"])) in cells:
            studies.append(study)
    return sorted(studies, key=lambda s: (*method_rank(s["method"]), *cell_order(s)))


def without_trials(runs: pd.DataFrame, studies: list[dict]) -> pd.DataFrame:
    """`runs` less the studies' trials (all of them, where nothing else is left)."""
    trials = {t["run_id"] for study in studies for t in study["trials"]}
    kept = runs[~runs["run_id"].isin(trials)]
    return kept if len(kept) else runs


def _by_seed(runs: pd.DataFrame, run_ids: dict, metric: str = "top1") -> dict:
    """seed -> the metric of each named run that is among the selected finished runs."""
    found = runs.set_index("run_id")[metric] if len(runs) else pd.Series(dtype=float)
    return {seed: float(found[run_id]) for seed, run_id in run_ids.items() if run_id in found.index}


def _trials_of(study: dict) -> list[dict]:
    return [t for t in study["trials"] if t["number"] < study["budget"]]


def tuning_section(runs: pd.DataFrame, studies: list[dict]) -> Section | None:
    if not studies:
        return None
    tables, records = [], []
    for budget in sorted({s["budget"] for s in studies}):
        rows, sources = [], {}
        for study in (s for s in studies if s["budget"] == budget):
            defaults, tuned = _by_seed(runs, study["defaults"]), _by_seed(runs, study["tuned"])
            before, after = stats.cell_stats(list(defaults.values())), stats.cell_stats(list(tuned.values()))
            diff = stats.paired_difference(tuned, defaults)
            trials = _trials_of(study)
            best = study.get("best") or {}
            sources[(len(rows), None)] = tuple(study["defaults"].values()) + tuple(study["tuned"].values())
            rows.append([shown_label(study["method"]), dataset_name(study["dataset"]),
                         fmt_factor(study["imbalance_factor"]),
                         f"{sum(t['state'] == 'COMPLETE' for t in trials)}/{budget}",
                         fmt_number(best.get("value")), _mean_ci(before), _mean_ci(after),
                         fmt_signed(diff.mean), fmt_interval(diff.ci_low, diff.ci_high), fmt_p(diff.p_value),
                         _settings(best.get("params") or {})])
            records.append({"study": study["study"], "method": study["method"], "dataset": study["dataset"],
                            "imbalance_factor": study["imbalance_factor"], "budget": budget,
                            "trials_complete": sum(t["state"] == "COMPLETE" for t in trials),
                            "best_val_top1": best.get("value"),
                            **{f"defaults_{k}": v for k, v in vars(before).items()},
                            **{f"tuned_{k}": v for k, v in vars(after).items()},
                            "diff": diff.mean, "diff_ci_low": diff.ci_low, "diff_ci_high": diff.ci_high,
                            "p_value": diff.p_value, "n_pairs": diff.n_pairs,
                            "tuned_settings": json.dumps(best.get("params") or {}, sort_keys=True)})
        tables.append(Table(
            header=["Method", "Dataset", "IF", "Trials", "Best val top-1", "Defaults top-1", "Tuned top-1",
                    "\u0394", "95 % CI", "p", "Tuned settings"],
            rows=rows, sources=sources, title=f"Paper defaults vs tuned (equal budget {budget})",
            notes=[f"Every method searched with the same budget of {budget} trials per cell (Trials: how many "
                   "finished; a failed trial counts in the budget), each trial a run on a seed of its own, "
                   "scored on the validation split (top-1 at the last epoch); the test set is never read to "
                   "choose. Best val top-1: the best trial's validation accuracy.",
                   "Defaults / Tuned top-1: test top-1 at the last epoch of the method's preset settings and of "
                   "its best trial's settings, each trained on the same seeds; mean [95 % Student-t interval].",
                   "\u0394 = tuned \u2212 defaults, paired seed by seed; 95 % CI and p: paired t-test over the "
                   f"seeds both have (none below 2 pairs). Fewer than {stats.FEW_SEEDS} seeds: read as a hint."]))
    return Section(SECTION, "Tuning at equal budget", tables, pd.DataFrame(records),
                   intro="Equal-budget hyperparameter search (`ltbench tune`): does a method's gain survive "
                         "when every method is tuned as much? The trials' runs are left out of the other tables "
                         "(`ltbench report --tag tune-trial` shows them).")


def _mean_ci(cell: stats.CellStats) -> str:
    if cell.n == 0:
        return ""
    interval = fmt_interval(cell.ci_low, cell.ci_high)
    return fmt_number(cell.mean) + (f" {interval}" if interval else "") + f" (n={cell.n})"


def _settings(params: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def history_figures(studies: list[dict], out_dir: Path) -> list:
    """One figure per method: per cell, each trial's validation top-1 and the best so far."""
    figures = []
    colours = label_colours([s["method"] for s in studies])
    for method in dict.fromkeys(s["method"] for s in studies):
        own = [s for s in studies if s["method"] == method]
        fig, axes = panel_grid(len(own), 4.2, 3.2)
        for ax, study in zip(axes, own):
            trials = sorted((t for t in _trials_of(study) if t["state"] == "COMPLETE"), key=lambda t: t["number"])
            numbers = [t["number"] + 1 for t in trials]
            values = [t["value"] for t in trials]
            best = pd.Series(values, dtype=float).cummax()
            ax.scatter(numbers, values, s=14, color=colours[method], alpha=0.5, label="trial")
            ax.step(numbers, best, where="post", color=colours[method], label="best so far")
            ax.set_xlim(0.5, study["budget"] + 0.5)
            ax.set_title(f"{dataset_name(study['dataset'])} IF {fmt_factor(study['imbalance_factor'])}", fontsize=9)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("trial")
            ax.set_ylabel("validation top-1 (%)")
            ax.grid(alpha=0.3)
        # beside the panels, never over a trial's dot (the last trials sit in any corner)
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize=8, frameon=False)
        title = f"{shown_label(method)}: optimisation history"
        fig.suptitle(title, fontsize=10)
        budgets = ", ".join(str(b) for b in sorted({s["budget"] for s in own}))
        figures.append(save_figure(fig, out_dir, f"tuning_history_{method}", title,
                                   f"{title}: each trial's validation top-1 (dots) and the best so far (line), "
                                   f"over a budget of {budgets} trials.", SECTION))
    return figures
