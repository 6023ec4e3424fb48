"""Ranks across settings: each method's average rank over the (dataset, IF) cells, the
Friedman test, and Nemenyi's critical difference where Friedman rejects (Demšar 2006)."""

import math
from dataclasses import dataclass

import pandas as pd
from scipy.stats import chi2

from . import stats
from .aggregate import table_cells
from .formats import fmt_number, plural, shown_label
from .model import Section, Table
from .significance import METRIC_TITLES, SHOT_METRICS, cell_name, fmt_p, key


@dataclass
class Rankings:
    by_metric: dict  # metric -> stats.Ranking (index: labels)
    section: Section


def ranking_section(agg: pd.DataFrame, metrics=("top1", *SHOT_METRICS),
                    alpha: float = 0.05) -> Rankings:
    """Average rank of each row over the (dataset, IF) cells, per metric; Friedman; CD."""
    labels = list(dict.fromkeys(agg["label"]))
    cells = table_cells(agg)
    rankings, notes, records = {}, [], []
    for metric in metrics:
        column = f"{metric}_mean"
        scores = pd.DataFrame(math.nan, index=labels, columns=pd.MultiIndex.from_tuples(
            cells, names=["dataset", "imbalance_factor"]))
        for r in agg.itertuples():
            scores.loc[r.label, (r.dataset, r.imbalance_factor)] = getattr(r, column)
        empty = [c for c in scores.columns if scores[c].isna().all()]
        ranking = stats.rank_methods(scores.drop(columns=empty), alpha)
        rankings[metric] = ranking
        notes.append(_ranking_note(metric, ranking, empty, scores))
        for label, rank in ranking.average_ranks.items():
            records.append(dict(label=label, metric=metric, average_rank=rank,
                                n_cells=ranking.n_cells, friedman_chi2=ranking.statistic,
                                friedman_p=ranking.p_value, cd=ranking.cd, alpha=alpha,
                                cells_left_out="; ".join(
                                    cell_name(d, f) for d, f in ranking.dropped_cells)))
    order = list(rankings["top1"].average_ranks.index) if "top1" in rankings else labels
    rows = [[shown_label(label)] + [_rank_text(rankings[m], label) for m in metrics]
            for label in order]
    sources = {(i, j): _ranked_runs(agg, label, metric, rankings[metric])
               for i, label in enumerate(order) for j, metric in enumerate(metrics, start=1)}
    table = Table(header=["Method"] + [METRIC_TITLES[m] for m in metrics], rows=rows,
                  sources=sources, title="Average rank over (dataset, IF) cells (1 = best)",
                  notes=["In each (dataset, IF) cell the method with the highest mean is "
                         "ranked 1 (ties share the average rank); a method's figure is its "
                         "mean rank over the cells every method ran (Demšar 2006)."] + notes
                  + ["Friedman treats the cells as independent; several IFs of one dataset "
                     "share its test set, so read p as optimistic when cells are few."])
    data = pd.DataFrame(records, columns=["label", "metric", "average_rank", "n_cells",
                                          "friedman_chi2", "friedman_p", "cd", "alpha",
                                          "cells_left_out"])
    return Rankings(rankings, Section("ranking", "Ranks across settings", [table], data))


def _ranked_runs(agg: pd.DataFrame, label, metric, ranking) -> tuple[str, ...]:
    """The runs behind a label's average rank: its runs in the cells the ranking used
    (where it has a value and no cell was left out for a method that did not run)."""
    dropped = {key(None, d, f, None)[1:3] for d, f in ranking.dropped_cells}
    rows = agg[(agg["label"] == label) & agg[f"{metric}_mean"].notna()]
    return tuple(run for r in rows.itertuples()
                 if key(None, r.dataset, r.imbalance_factor, None)[1:3] not in dropped
                 for run in getattr(r, "run_ids", ()))


def _rank_text(ranking, label) -> str:
    value = ranking.average_ranks.get(label, math.nan)
    return fmt_number(value)


def _ranking_note(metric, ranking, empty, scores) -> str:
    name = METRIC_TITLES[metric]
    k = len(scores)
    if ranking.n_cells == 0:
        return f"{name}: no cell where every method ran" + (
            " (the group has no classes)" if empty else "") + "."
    text = f"{name}: {plural(ranking.n_cells, 'cell')}"
    if math.isnan(ranking.p_value):
        why = ("fewer than 3 methods" if k < 3 else "fewer than 2 cells"
               if ranking.n_cells < 2 else "every cell tied")
        text += f"; no Friedman test ({why})"
    else:
        text += (f"; Friedman \u03c7\u00b2 = {ranking.statistic:.2f}, p = "
                 f"{fmt_p(ranking.p_value)}")
        # the same order in every cell gives chi2 = n (k - 1), Friedman's largest
        floor = chi2.sf(ranking.n_cells * (k - 1), k - 1)
        if floor > ranking.alpha:
            text += (f" (with {plural(ranking.n_cells, 'cell')} and {k} methods no ordering "
                     f"reaches p < {ranking.alpha:g}: the smallest possible p is "
                     f"{fmt_p(floor)}; more settings would be needed)")
    if ranking.rejects:
        text += f"; Nemenyi critical difference {ranking.cd:.2f} at \u03b1 = {ranking.alpha:g}"
        groups = ranking.groups
        if groups:
            text += ("; not significantly apart: " + "; ".join(
                "{" + ", ".join(shown_label(g) for g in group) + "}" for group in groups))
    elif not math.isnan(ranking.cd):
        text += ("; no Nemenyi groups or critical-difference diagram: they follow only a "
                 "Friedman test that rejects equal ranks")
    if ranking.dropped_cells:
        text += "; left out: " + ", ".join(
            f"{cell_name(*cell)} ({', '.join(shown_label(l) for l in scores.index[scores[cell].isna()])} "
            "not run)" for cell in ranking.dropped_cells)
    if empty:
        text += "; no classes in the group: " + ", ".join(cell_name(d, f) for d, f in empty)
    return text + "."


def cd_caption(ranking) -> str:
    """Drawn only where Friedman rejects equal ranks (`Ranking.rejects`)."""
    return (f"Critical-difference diagram (Demšar 2006) of top-1 average ranks over "
            f"{plural(ranking.n_cells, 'cell')}: rank 1 (best) on the left; a bar joins "
            f"methods whose average ranks differ by less than the Nemenyi critical difference "
            f"(CD = {ranking.cd:.2f}, \u03b1 = {ranking.alpha:g}), drawn because Friedman "
            f"rejects equal ranks (p = {fmt_p(ranking.p_value)}).")

