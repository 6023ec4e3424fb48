"""Which finished runs a report covers, from its command-line filters.

A filter that can only be a mistake (a group-by key no run has, a baseline that is no row,
no run left at all) is a `UserError` naming what is there; a filter value that matches
nothing beside others that do is a warning, since the rest of the report still stands.
"""

import difflib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ltbench.errors import UserError

from .aggregate import table_cells
from .labels import SETTING_COLUMNS, filter_left_out, filter_runs
from .left_out import left_out_summary
from .load import LeftOut, Results, load_results
from .names import method_rank
from .shots import regroup

LEFT_OUT_NAMED = 3  # left-out runs a "no finished runs" hint names, with their reasons


@dataclass
class Selection:
    results: Results
    runs: pd.DataFrame  # the finished runs the filters keep, regrouped by the shot rule
    left_out: list[LeftOut]
    filters: str  # " (methods ce, focal; IF 100)", or "" for none
    warnings: list[str] = field(default_factory=list)


def split(values) -> list[str]:
    """`--methods ce focal`, `--methods ce,focal` and repeated flags all mean the same."""
    return [part.strip() for value in values or [] for part in str(value).split(",")
            if part.strip()]


def select(args) -> Selection:
    methods, datasets, group_by = split(args.methods), split(args.datasets), split(args.group_by)
    try:
        factors = [float(f) for f in split(args.imbalance_factors)]
    except ValueError as error:
        raise UserError(f"--if takes numbers: {error}", hint="e.g. --if 100,10") from None
    results_dir = Path(args.results_dir)
    if not results_dir.is_dir():
        raise UserError(f"no results directory '{results_dir}'",
                        hint="run `ltbench run` first, or point --results-dir at the folder "
                             "that holds the run folders")
    results = load_results(results_dir)
    if args.tag is not None:
        results.runs = _with_tag(results, args.tag, results_dir)
    runs = filter_runs(regroup(results.runs, results.per_class, args.shot_rule), methods,
                       datasets, factors)
    left_out = filter_left_out(results.left_out, methods, datasets, factors)
    filters = describe_filters(methods, datasets, factors, group_by, args.tag)
    if not len(runs):
        raise _nothing(results.runs, results_dir, filters, left_out)
    check_group_by(runs, group_by)
    return Selection(results, runs, left_out, filters, unmatched(runs, methods, datasets, factors))


def _with_tag(results: Results, tag: str, results_dir: Path) -> pd.DataFrame:
    from ltbench.tag import check_tag

    tag = check_tag(tag)
    present = sorted(t for t in results.runs["tag"].unique() if t)
    if tag not in present:
        raise UserError(f"no finished run in '{results_dir}' has the tag {tag!r}",
                        hint=f"tags present: {', '.join(present) or 'none'}")
    return results.runs[results.runs["tag"] == tag]


def describe_filters(methods, datasets, factors, group_by, tag=None) -> str:
    parts = [f"tag {tag.strip()}" if tag else "",
             f"methods {', '.join(methods)}" if methods else "",
             f"datasets {', '.join(datasets)}" if datasets else "",
             f"IF {', '.join(f'{f:g}' for f in factors)}" if factors else "",
             f"grouped by {', '.join(group_by)}" if group_by else ""]
    parts = [p for p in parts if p]
    return f" ({'; '.join(parts)})" if parts else ""


def unmatched(runs, methods, datasets, factors) -> list[str]:
    """A typo in one filter value should be said out loud, not silently drop a row."""
    return [f"{flag}: no finished run has {column} {value!r}."
            for flag, wanted, column in [("--methods", methods, "method"),
                                         ("--datasets", datasets, "dataset"),
                                         ("--if", factors, "imbalance_factor")]
            for value in wanted if value not in set(runs[column])]


def check_group_by(runs: pd.DataFrame, group_by: list[str]) -> None:
    """Every --group-by key is a setting some selected run has."""
    params = sorted(set().union(*runs["params_dict"].map(set)))
    for key in group_by:
        if key not in params and key not in SETTING_COLUMNS:
            close = difflib.get_close_matches(key, params + SETTING_COLUMNS, n=1, cutoff=0.6)
            raise UserError(
                f"--group-by {key}: no selected run has this setting"
                + (f"; did you mean '{close[0]}'?" if close else ""),
                hint=f"keys that can split rows: {', '.join(SETTING_COLUMNS)}; and the runs' "
                     f"params: {', '.join(params) or 'none'}")


def _nothing(all_runs: pd.DataFrame, results_dir: Path, filters: str,
             left_out: list[LeftOut]) -> UserError:
    if len(all_runs):
        methods = sorted(all_runs["method"].unique(), key=method_rank)
        datasets = [d for d, _ in table_cells(all_runs.drop_duplicates("dataset"))]
        factors = sorted(all_runs["imbalance_factor"].dropna().unique())
        return UserError(f"no finished run in '{results_dir}' matches the filters{filters}",
                         hint=f"available: methods {', '.join(methods)}; datasets "
                              f"{', '.join(datasets)}; IF {', '.join(f'{f:g}' for f in factors)}")
    problems = [e for e in left_out if e.kind != "unused file"]
    named = "; ".join(f"{e.path}: {e.kind}: {e.reason}" for e in problems[:LEFT_OUT_NAMED])
    more = (f"; and {len(problems) - LEFT_OUT_NAMED} more (`ltbench status --results-dir "
            f"{results_dir}` lists them)" if len(problems) > LEFT_OUT_NAMED else "")
    return UserError(
        f"no finished runs in '{results_dir}'",
        hint="a run counts once its folder holds a result.csv with status done: run "
             f"`ltbench run --results-dir {results_dir} ...` first"
             + (f". {left_out_summary(problems)} {named}{more}" if problems else ""))
