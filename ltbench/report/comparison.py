"""Our paper-protocol rows beside the published figures for their cells, like with like."""

import math

import pandas as pd

from .formats import DAGGER, PM, dataset_name, fmt_factor, fmt_mean_std, fmt_number, fmt_signed
from .model import Section, Table


def paper_comparison(agg: pd.DataFrame, published: pd.DataFrame) -> Section:
    """Paper-protocol rows beside every published figure for their cell, like with like.

    Each published figure is compared with our value under the figure's own epoch rule (our
    best test epoch, top1_best, where the source's code reports the best test accuracy; our
    last epoch, top1, otherwise). Three tables: confirmed figures obtained under the run's
    protocol (compared, with the difference); confirmed figures under another protocol
    (backbone, epochs, a recorded setting or the loss itself differs: shown, not compared);
    unconfirmed leads (shown apart, never compared).
    """
    from .reference import SELECTION_NAMES, SELECTIONS, matches, protocol_differences

    paper = agg[agg["preset"] == "paper"]
    others = len(agg) - len(paper)
    rows = {"compared": [], "different protocol": [], "unconfirmed lead": []}
    ours_from = {status: {} for status in rows}  # the runs behind each of our values
    used = {status: [] for status in rows}  # the source numbers each table cites
    records, cites, missing = [], {}, {}
    for r in paper.to_dict("records"):
        refs = matches(published, r["method"], r["dataset"], r["imbalance_factor"])
        if not len(refs):
            factors = missing.setdefault(r["label"], {}).setdefault(dataset_name(r["dataset"]), [])
            factors.append(fmt_factor(r["imbalance_factor"]))
            continue
        for ref in refs.to_dict("records"):
            column = SELECTIONS[ref["selection"]]
            mean, std = r[f"{column}_mean"], r[f"{column}_std"]
            differs = protocol_differences(ref, r)
            status = ("unconfirmed lead" if not ref["confirmed"] else
                      "different protocol" if differs else "compared")
            difference = mean - ref["top1"] if status == "compared" else math.nan
            number = cites.setdefault(_published_cite(ref["source"]), len(cites) + 1)
            cell = [r["label"], dataset_name(r["dataset"]), fmt_factor(r["imbalance_factor"])]
            ours = fmt_mean_std(mean, std)
            if status == "compared":
                row = cell + [str(r["seeds"]), _rule_name(ref["selection"], SELECTION_NAMES), ours,
                              fmt_number(ref["top1"]), fmt_signed(difference), f"[{number}]"]
            elif status == "different protocol":
                row = cell + [str(r["seeds"]), ours, fmt_number(ref["top1"]), "; ".join(differs),
                              f"[{number}]"]
            else:
                row = cell + [fmt_number(ref["top1"]) + DAGGER, f"[{number}]"]
            if status != "unconfirmed lead":  # that table shows no value of ours
                ours_from[status][(len(rows[status]), None)] = r.get("run_ids", ())
            rows[status].append(row)
            used[status].append(number)
            records.append(dict(
                label=r["label"], method=r["method"], dataset=r["dataset"],
                imbalance_factor=r["imbalance_factor"], seeds=r["seeds"], status=status,
                selection=ref["selection"], our_column=column, ours_mean=mean, ours_std=std,
                top1_mean=r["top1_mean"], top1_std=r["top1_std"],
                top1_best_mean=r["top1_best_mean"], top1_best_std=r["top1_best_std"],
                published_top1=ref["top1"], published_confirmed=ref["confirmed"],
                difference=difference, differs="; ".join(differs), source=ref["source"],
                backbone=ref["backbone"], epochs=ref["epochs"], code=ref["code"]))
    def sources(status):
        return [f"[{n}] {cite}" for cite, n in cites.items() if n in used[status]]

    closing = []
    if others:
        closing.append(f"{others} result(s) under other protocols (preset other than paper) "
                       "are not compared with published figures.")
    if missing:
        def cells_of(where):
            return ", ".join(f"{dataset} IF {'/'.join(factors)}"
                             for dataset, factors in where.items())
        closing.append("No published figure for: " + "; ".join(
            f"{label} ({cells_of(where)})" for label, where in missing.items()) + ".")
    section = Section("paper_comparison", "Compared with published results", [],
                      pd.DataFrame(records, columns=[
                          "label", "method", "dataset", "imbalance_factor", "seeds", "status",
                          "selection", "our_column", "ours_mean", "ours_std", "top1_mean",
                          "top1_std", "top1_best_mean", "top1_best_std", "published_top1",
                          "published_confirmed", "difference", "differs", "source", "backbone",
                          "epochs", "code"]))
    if rows["compared"]:
        section.tables.append(Table(
            header=["Method", "Dataset", "IF", "Seeds", "Epoch rule", "Ours", "Published",
                    "\u0394", "Source"], rows=rows["compared"], sources=ours_from["compared"],
            title="Published top-1 (%) beside ours: confirmed figures, same protocol",
            notes=["Only figures checked against their paper's own table and obtained with the "
                   "run's backbone, epochs and recorded settings are compared.",
                   "Epoch rule: which epoch the source reports, and ours is taken the same way. "
                   "'best test epoch': the best test accuracy over the evaluated epochs (our "
                   "top1_best; chosen on the test set, as the source's code does). 'last epoch' "
                   "and 'not stated': our last epoch (top1), the headline.",
                   "\u0394 = our mean \u2212 published top-1 (percentage points); mean" + PM
                   + "sample std over seeds."] + sources("compared")))
    if rows["different protocol"]:
        section.tables.append(Table(
            header=["Method", "Dataset", "IF", "Seeds", "Ours", "Published", "Differs (ours vs "
                    "published)", "Source"], rows=rows["different protocol"],
            sources=ours_from["different protocol"],
            title="Confirmed figures under another protocol: shown, not compared",
            notes=["Confirmed figures whose backbone, epochs, recorded settings or loss differ "
                   "from the run's; ours is taken under the figure's epoch rule, and no "
                   "difference is computed."] + sources("different protocol")))
    if rows["unconfirmed lead"]:
        section.tables.append(Table(
            header=["Method", "Dataset", "IF", "Lead", "Source"], rows=rows["unconfirmed lead"],
            title="Unconfirmed leads, not compared",
            notes=[DAGGER + " not seen in its paper's own table (published.csv says why): a lead "
                   "to check, never compared with ours."] + sources("unconfirmed lead")))
    if section.tables:
        section.tables[-1].notes += closing
    else:
        section.intro = " ".join(["No run under the paper protocol has a published figure "
                                  "to compare with."] + closing)
    return section


def _published_cite(source: str) -> str:
    """The paper and table of a published.csv source, without its row and column."""
    return source.split(": row ")[0]


def _rule_name(selection: str, names: dict) -> str:
    name = names[selection]
    return name if selection in ("best_on_test", "last_epoch") else f"{name} (ours: last epoch)"
