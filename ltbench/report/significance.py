"""Which differences hold up: the marks the main and many/medium/few tables carry, and the
report's sections on them (intervals, paired comparisons with a baseline; ranks are in
ranks).

The numbers come from `stats`; this module decides what a table says about them:

- bold: the best mean in a column; underlined: every other method that the best does not
  beat significantly (paired t-tests over the seeds both have, between all pairs of the
  column's methods, Holm over those pairs). With all methods truly equal, some method loses
  its underline with probability at most alpha; a clear winner is bold with nothing
  underlined. Readers take bold as "best", so "not significantly worse" has its own style.
- up / down arrow: the method differs from the baseline in that cell (paired t-test, Holm over
  every comparison the table shows: one family per table).
- italic: fewer than `FEW_SEEDS` seeds. Such a cell is never bold, underlined or marked: a
  t-test on one or two differences leans wholly on a normality nothing can check.
"""

import difflib
import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ltbench.errors import UserError

from . import stats
from .names import method_rank, method_title
from .aggregate import cell_order
from .formats import MINUS, NO_GROUP, dataset_name, fmt_factor, fmt_number, shown_label
from .model import Section, Table

UP, DOWN = "\u2191", "\u2193"
METRIC_TITLES = {"top1": "Top-1", "many": "Many", "medium": "Medium", "few": "Few"}
SHOT_METRICS = ("many", "medium", "few")
# One Holm family per table that shows marks.
FAMILIES = {"top1": ("top1",), "many/medium/few": SHOT_METRICS}
FEW = stats.FEW_SEEDS


def key(label, dataset, factor, metric) -> tuple:
    """A hashable cell key (NaN factors compare equal as None)."""
    return (label, dataset, None if pd.isna(factor) else float(factor), metric)


@dataclass
class Assessment:
    """Per (label, dataset, IF, metric): the cell's statistics, its comparison with the
    baseline and whether it is the column's best or tied with it; built once by `assess`,
    read by every table."""
    baseline: str | None  # the baseline's label, None for no comparison
    cells: pd.DataFrame  # label, dataset, imbalance_factor, metric, n, mean, std, ci_*, few_seeds
    comparisons: pd.DataFrame  # compare_to_baseline's columns + metric, family, tested
    best: set = field(default_factory=set)  # cell keys with their column's best mean
    tied: set = field(default_factory=set)  # cell keys not significantly below the best
    alpha: float = 0.05
    # (label, dataset, IF) -> {seed: run_id}: the runs behind each comparison (provenance)
    run_ids: dict = field(default_factory=dict)

    def __post_init__(self):
        self._cells = {key(r.label, r.dataset, r.imbalance_factor, r.metric): r
                       for r in self.cells.itertuples()}
        self._comparisons = {key(r.label, r.dataset, r.imbalance_factor, r.metric): r
                             for r in self.comparisons.itertuples()}

    def cell(self, label, dataset, factor, metric):
        return self._cells.get(key(label, dataset, factor, metric))

    def comparison(self, label, dataset, factor, metric):
        return self._comparisons.get(key(label, dataset, factor, metric))

    def mark(self, label, dataset, factor, metric) -> str:
        row = self.comparison(label, dataset, factor, metric)
        if row is None or not row.significant:
            return ""
        return UP if row.diff > 0 else DOWN

    def is_best(self, label, dataset, factor, metric) -> bool:
        return key(label, dataset, factor, metric) in self.best

    def is_tied(self, label, dataset, factor, metric) -> bool:
        return key(label, dataset, factor, metric) in self.tied

    def few_seeds(self, label, dataset, factor, metric) -> bool:
        row = self.cell(label, dataset, factor, metric)
        return row is not None and 0 < row.n < FEW

    def runs_behind(self, label, dataset, factor, seeds) -> tuple[str, ...]:
        """The runs a paired comparison used: the row's and the baseline's, seed by seed."""
        def of(row_label):
            by_seed = self.run_ids.get(key(row_label, dataset, factor, None)[:3], {})
            return [by_seed[s] for s in seeds if s in by_seed]
        return tuple(of(label) + of(self.baseline))

    def family(self, name: str) -> pd.DataFrame:
        return self.comparisons[self.comparisons["family"] == name]

    def table_notes(self, family: str, any_italic: bool) -> list[str]:
        """The caption lines saying what a table's bold, underline, arrows and italic mean."""
        notes = [best_note(self.alpha)]
        compared = self.baseline is not None and len(self.family(family))
        if self.baseline is not None and not compared:
            notes.append(f"No other method ran where {shown_label(self.baseline)} did: "
                         "nothing to compare with it.")
        if compared:
            notes.append(marks_note(self, family))
        if any_italic:
            notes.append(italic_note())
        if compared:
            notes.append(seeds_needed_line(self.family(family), self.baseline))
        return notes

    def columns(self, agg: pd.DataFrame, metrics) -> pd.DataFrame:
        return cell_columns(agg, self, metrics)


def assess(runs: pd.DataFrame, baseline: str | None, metrics=("top1", *SHOT_METRICS),
           alpha: float = 0.05) -> Assessment:
    """`runs`: labelled runs (one row per seed, a `label` column)."""
    cells = pd.concat([stats.describe_cells(runs, m).assign(metric=m) for m in metrics],
                      ignore_index=True)
    families = []
    if baseline is not None:
        for family, members in FAMILIES.items():
            parts = [stats.compare_to_baseline(runs, baseline, m, alpha=alpha).assign(metric=m)
                     for m in members if m in metrics]
            if parts:
                families.append(_holm_family(pd.concat(parts, ignore_index=True), family, alpha))
    columns = ["label", "dataset", "imbalance_factor", "n_pairs", "seeds", "diff", "diff_std",
               "ci_low", "ci_high", "p_value", "p_holm", "significant", "seeds_needed",
               "power_alpha", "metric", "family", "tested"]
    comparisons = (pd.concat(families, ignore_index=True) if families
                   else pd.DataFrame(columns=columns))
    best, tied = set(), set()
    for (dataset, factor), cell in runs.groupby(["dataset", "imbalance_factor"], dropna=False):
        for metric in metrics:
            top, level = best_and_tied(cell, metric, alpha)
            best |= {key(label, dataset, factor, metric) for label in top}
            tied |= {key(label, dataset, factor, metric) for label in level}
    run_ids = {}
    for r in runs.itertuples() if "run_id" in runs else []:
        run_ids.setdefault(key(r.label, r.dataset, r.imbalance_factor, None)[:3], {})[
            str(r.seed)] = r.run_id
    return Assessment(baseline, cells, comparisons[columns], best, tied, alpha, run_ids)


def _holm_family(table: pd.DataFrame, family: str, alpha: float) -> pd.DataFrame:
    """One table's comparisons as one Holm family; fewer than FEW pairs: no test (left out
    of the family, decided from the counts alone, before any p-value is seen)."""
    table = table.copy()
    table["family"] = family
    table["tested"] = (table["n_pairs"] >= FEW) & table["p_value"].notna()
    tested = table["p_value"].where(table["tested"])
    table["p_holm"] = stats.holm(tested) if len(table) else []
    table["significant"] = (table["p_holm"] <= alpha).astype(bool)
    # Seeds needed at the level the marks test: Holm's first step, alpha over the family's
    # comparisons (all of them, as they stand once every one has enough seeds).
    table["power_alpha"] = alpha / max(1, int(table["diff"].notna().sum()))
    table["seeds_needed"] = [stats.seeds_needed(d, s, alpha=a) for d, s, a in
                             zip(table["diff"], table["diff_std"], table["power_alpha"])]
    # The report tests nothing below FEW pairs, so no fewer seeds can be "enough".
    table["seeds_needed"] = table["seeds_needed"].clip(lower=FEW)
    return table


def best_and_tied(cell: pd.DataFrame, metric: str, alpha: float = 0.05) -> tuple[set, set]:
    """In one (dataset, IF) cell: the label with the best mean `metric` (a set of one, or
    empty), and the labels the best does not beat significantly.

    Only labels with at least FEW seeds take part, and only pairs with FEW common seeds are
    tested (an untested pair is not a significant one); with fewer than two such labels
    nothing is marked. Holm runs over all pairs of the cell, not only those with the best,
    which was chosen by looking at the means: so with every method truly equal, the chance
    that any of them loses its mark stays at most alpha.
    """
    values = {label: group.set_index("seed")[metric].dropna()
              for label, group in cell.groupby("label", sort=False)}
    eligible = {label: v for label, v in values.items() if len(v) >= FEW}
    if len(eligible) < 2:
        return set(), set()
    best = max(eligible, key=lambda label: eligible[label].mean())
    pairs = list(itertools.combinations(eligible, 2))
    diffs = [stats.paired_difference(eligible[a], eligible[b]) for a, b in pairs]
    adjusted = stats.holm([d.p_value if d.n_pairs >= FEW else math.nan for d in diffs])
    below_best = {(b if d.mean > 0 else a) for (a, b), d, p in zip(pairs, diffs, adjusted)
                  if p <= alpha and best in (a, b)}
    return {best}, set(eligible) - below_best - {best}


def resolve_baseline(runs: pd.DataFrame, wanted: str | None) -> tuple[str | None, str | None]:
    """The baseline's label, and a warning when the default cannot be used.

    `wanted` None means the default: CE where it ran, silently nothing otherwise, and a
    warning when CE has several rows. A method name stands for its row when the method has
    exactly one row (label); a name given that is no row, or stands for several, is a
    UserError naming the rows.
    """
    explicit = wanted is not None
    wanted = "ce" if wanted is None else wanted
    if wanted.lower() == "none":
        return None, None
    labels = list(dict.fromkeys(runs["label"]))
    if wanted in labels:
        return wanted, None
    rows = list(dict.fromkeys(runs.loc[runs["method"] == wanted, "label"]))
    if len(rows) == 1:
        return rows[0], None
    if len(rows) > 1:
        several = f"--baseline {wanted}: {len(rows)} rows are {wanted} (" + "; ".join(rows) + ")"
        if explicit:
            raise UserError(several, hint=f"name one, e.g. --baseline '{rows[0]}'")
        return None, f"{several}; name one, e.g. --baseline '{rows[0]}'. No paired comparison."
    if explicit:
        close = difflib.get_close_matches(wanted, labels, n=1, cutoff=0.6)
        raise UserError(f"--baseline {wanted}: no selected finished run is this method or row"
                        + (f"; did you mean '{close[0]}'?" if close else ""),
                        hint="rows: " + ", ".join(labels) + "; or --baseline none for no "
                             "paired comparison")
    return None, None


# --- text -------------------------------------------------------------------------------

def fmt_p(p) -> str:
    if pd.isna(p):
        return ""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def fmt_seeds_needed(n) -> str:
    if pd.isna(n):
        return ""
    return f"> {stats.MAX_SEEDS}" if math.isinf(n) else f"{n:.0f}"


def fmt_interval(low, high) -> str:
    if pd.isna(low) or pd.isna(high):
        return ""
    return f"[{fmt_number(low)}, {fmt_number(high)}]"


def cell_name(dataset, factor, several_datasets: bool = True) -> str:
    return (f"{dataset_name(dataset)} " if several_datasets else "") + f"IF {fmt_factor(factor)}"


def best_note(alpha: float) -> str:
    return (f"Bold: best mean in the column; underlined: not significantly below it (paired "
            f"t-tests, Holm over the column's pairs, \u03b1 = {alpha:g}; methods with "
            f"\u2265 {FEW} seeds, and none in a column with fewer than two).")


def marks_note(assessment: Assessment, family: str) -> str:
    tested = int(assessment.family(family)["tested"].sum())
    name = method_title(_method_of(assessment.baseline))
    if not tested:
        return (f"{UP} / {DOWN} would mark a significant difference to {name}; no comparison "
                f"here has \u2265 {FEW} seeds in common with it, so none is tested.")
    return (f"{UP} / {DOWN}: significantly above / below {name} (paired t-test over the seeds "
            f"both have, \u2265 {FEW} of them; Holm-corrected over the table's {tested} tested "
            f"comparison{'s' * (tested != 1)}, \u03b1 = {assessment.alpha:g}).")


def italic_note() -> str:
    return (f"Italic: fewer than {FEW} seeds, too few to test a difference on: never bold, "
            "underlined or marked.")


def power_note(comparisons: pd.DataFrame) -> str:
    """At which level the seeds needed are computed, and why to read them as a floor."""
    alpha = comparisons["power_alpha"].iloc[0] if len(comparisons) else math.nan
    m = len(comparisons[comparisons["diff"].notna()])
    return (f"paired t-test at \u03b1 = {alpha:.3g} (Holm's first step over the table's {m} "
            f"comparison{'s' * (m != 1)}, as the marks); from each difference's observed size "
            "and seed spread, which is optimistic: a difference that looks large on few seeds "
            "is often smaller, so read the count as a floor")


def seeds_needed_line(comparisons: pd.DataFrame, baseline: str, power: float = 0.8,
                      listed: int = 6) -> str:
    """One line: how many seeds the shown differences to the baseline would need."""
    name = method_title(_method_of(baseline))
    usable = comparisons[comparisons["seeds_needed"].notna()]
    head = f"Seeds for {power * 100:.0f} % power ({power_note(comparisons)}): "
    if not len(usable):
        return head + (f"no difference to {name} has a spread to go on (it needs "
                       "\u2265 2 common seeds).")
    several = comparisons["dataset"].nunique() > 1
    metrics = comparisons["metric"].nunique() > 1
    enough = usable[usable["seeds_needed"] <= usable["n_pairs"]]
    more = usable[(usable["seeds_needed"] > usable["n_pairs"])
                  & np.isfinite(usable["seeds_needed"])].sort_values("seeds_needed")
    hopeless = usable[np.isinf(usable["seeds_needed"])]
    parts = [f"{len(enough)} of {len(usable)} differences to {name} already "
             + ("has" if len(enough) == 1 else "have") + " enough"]

    def what(r):
        group = f" {METRIC_TITLES[r.metric].lower()}" if metrics else ""
        return f"{shown_label(r.label)}{group} {cell_name(r.dataset, r.imbalance_factor, several)}"

    if len(more) and len(more) <= listed:
        parts.append("; ".join(f"{what(r)} would need about {r.seeds_needed:.0f} (has "
                               f"{r.n_pairs})" for r in more.itertuples()))
    elif len(more):
        parts.append(f"{len(more)} would need more (median {more['seeds_needed'].median():.0f}, "
                     f"up to {more['seeds_needed'].max():.0f})")
    if len(hopeless) and len(hopeless) <= listed:
        parts.append(f"more than {stats.MAX_SEEDS} for " + ", ".join(
            what(r) for r in hopeless.itertuples()) + " (too small against the seed noise)")
    elif len(hopeless):
        parts.append(f"{len(hopeless)} would need more than {stats.MAX_SEEDS} (too small "
                     "against the seed noise)")
    return head + "; ".join(parts) + "."


def _method_of(label: str) -> str:
    return label.partition(" ")[0]


# --- sections ---------------------------------------------------------------------------

def interval_section(agg: pd.DataFrame, assessment: Assessment,
                     metrics=("top1", *SHOT_METRICS)) -> Section:
    """Per cell: mean with its 95 % Student-t interval over seeds, for every metric."""
    rows, italic, sources = [], set(), {}
    for i, r in enumerate(agg.itertuples()):
        sources[(i, None)] = getattr(r, "run_ids", ())
        row = [shown_label(r.label), dataset_name(r.dataset), fmt_factor(r.imbalance_factor),
               str(r.seeds)]
        for j, metric in enumerate(metrics, start=len(row)):
            s = assessment.cell(r.label, r.dataset, r.imbalance_factor, metric)
            row.append(_interval_cell(s, getattr(r, f"n_{metric}", math.nan)
                                      if metric != "top1" else 1))
            if s is not None and 0 < s.n < FEW:
                italic.add((i, j))
        rows.append(row)
    table = Table(header=["Method", "Dataset", "IF", "Seeds"]
                  + [METRIC_TITLES[m] for m in metrics], rows=rows, italic=italic,
                  sources=sources, title="Means with 95 % confidence intervals (%)",
                  notes=["Mean over seeds [95 % confidence interval of the mean: Student t "
                         "with n \u2212 1 degrees of freedom, sample std / \u221an]; a single "
                         "seed has no interval. Top-1 at the last epoch; Many / Medium / Few: "
                         "accuracy on those class groups (as in the many/medium/few table).",
                         f"{NO_GROUP}: the group has no classes at this imbalance factor."]
                  + ([italic_note()] if italic else []))
    return Section("intervals", "Confidence intervals", [table],
                   cell_columns(agg, assessment, metrics))


def _interval_cell(s, n_group) -> str:
    if s is None:
        return ""
    if s.n == 0:
        return NO_GROUP if n_group == 0 else ""
    interval = fmt_interval(s.ci_low, s.ci_high)
    return fmt_number(s.mean) + (f" {interval}" if interval else "")


def cell_columns(agg: pd.DataFrame, assessment: Assessment, metrics) -> pd.DataFrame:
    """agg's identifying columns plus, per metric, every figure behind a cell and its marks."""
    data = agg[["label", "method", "dataset", "imbalance_factor", "preset", "seeds",
                "seed_list"]].copy()
    for metric in metrics:
        stats_rows = [assessment.cell(r.label, r.dataset, r.imbalance_factor, metric)
                      for r in agg.itertuples()]
        comparisons = [assessment.comparison(r.label, r.dataset, r.imbalance_factor, metric)
                       for r in agg.itertuples()]
        for column in ("n", "mean", "std", "ci_low", "ci_high", "few_seeds"):
            data[f"{metric}_{column}"] = [getattr(s, column) if s is not None else math.nan
                                          for s in stats_rows]
        data[f"{metric}_best"] = [assessment.is_best(r.label, r.dataset, r.imbalance_factor,
                                                     metric) for r in agg.itertuples()]
        data[f"{metric}_tied_with_best"] = [
            assessment.is_tied(r.label, r.dataset, r.imbalance_factor, metric)
            for r in agg.itertuples()]
        if assessment.baseline is not None:
            for column in ("diff", "p_value", "p_holm", "significant"):
                data[f"{metric}_vs_baseline_{column}"] = [
                    getattr(c, column) if c is not None else math.nan for c in comparisons]
    if assessment.baseline is not None:
        data["baseline"] = assessment.baseline
    return data


def baseline_section(assessment: Assessment) -> Section:
    """Each method against the baseline, per cell: paired difference, CI, p, Holm, seeds."""
    title = "Compared with the baseline"
    if assessment.baseline is None:
        return Section("baseline", title, [], assessment.comparisons,
                       intro="No baseline: no paired comparison (`--baseline NAME`; CE is "
                             "the default where it ran).")
    name = shown_label(assessment.baseline)
    title = f"Compared with {name}"
    tables = []
    for family, members in FAMILIES.items():
        rows_of = assessment.family(family)
        rows_of = rows_of[rows_of["n_pairs"] > 0]  # an empty shot group: nothing to show
        if not len(rows_of):
            continue
        with_metric = len(members) > 1
        order = sorted(rows_of.itertuples(), key=lambda r: (
            *method_rank(_method_of(r.label)), r.label, *cell_order(r._asdict()),
            members.index(r.metric)))
        rows, sources = [], {}
        for r in order:
            sources[(len(rows), None)] = assessment.runs_behind(
                r.label, r.dataset, r.imbalance_factor, str(r.seeds).split())
            mark = (UP if r.diff > 0 else DOWN) if r.significant else ""
            rows.append([shown_label(r.label), dataset_name(r.dataset),
                         fmt_factor(r.imbalance_factor)]
                        + ([METRIC_TITLES[r.metric]] if with_metric else [])
                        + [str(r.n_pairs), _signed(r.diff) + mark,
                           fmt_interval(r.ci_low, r.ci_high),
                           fmt_p(r.p_value) if r.tested else "",
                           fmt_p(r.p_holm), fmt_seeds_needed(r.seeds_needed)])
        what = "Top-1" if family == "top1" else "Many / medium / few"
        tables.append(Table(
            header=["Method", "Dataset", "IF"] + (["Group"] if with_metric else [])
            + ["Pairs", f"\u0394 vs {name}", "95 % CI", "p", "p (Holm)", "Seeds for 80 % power"],
            rows=rows, sources=sources,
            title=f"{what}: paired difference to {name} (percentage points)",
            notes=[f"\u0394 = method \u2212 {name}, mean over the seeds both ran (Pairs), each "
                   "seed's run paired with the baseline's run of the same seed; 95 % CI: "
                   "Student t over the per-seed differences; p: paired t-test, two-sided "
                   f"(none below {FEW} pairs or when every difference is equal).",
                   marks_note(assessment, family),
                   "Seeds for 80 % power: how many paired seeds a true difference of the "
                   f"observed size would need to be detected 80 % of the time ({power_note(rows_of)}); "
                   f"> {stats.MAX_SEEDS}: too small against the seed noise to chase."]))
    return Section("baseline", title, tables, assessment.comparisons)


def _signed(value) -> str:
    return "" if pd.isna(value) else f"{value:+.2f}".replace("-", MINUS)
