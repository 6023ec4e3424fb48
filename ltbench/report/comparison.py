"""Our paper-protocol rows beside the published figures for their cells, like with like."""

import math

import pandas as pd

from .formats import DAGGER, PM, dataset_name, fmt_factor, fmt_mean_std, fmt_number, fmt_signed
from .model import Section, Table


COLUMNS = ["label", "method", "dataset", "imbalance_factor", "seeds", "status", "selection",
           "our_column", "ours_mean", "ours_std", "top1_mean", "top1_std", "top1_best_mean",
           "top1_best_std", "published_top1", "published_confirmed", "difference", "differs",
           "source", "backbone", "epochs", "code"]
# One table per status, in this order: header, title, the notes that say what it holds.
TABLES = {
    "compared": (
        ["Method", "Dataset", "IF", "Seeds", "Epoch rule", "Ours", "Published", "\u0394", "Source"],
        "Published top-1 (%) beside ours: confirmed figures, same protocol",
        ["Only figures checked against their paper's own table and obtained with the run's "
         "backbone, epochs and recorded settings are compared.",
         "Epoch rule: which epoch the source reports, and ours is taken the same way. 'best "
         "test epoch': the best test accuracy over the evaluated epochs (our top1_best; chosen "
         "on the test set, as the source's code does). 'best validation epoch': our "
         "top1_bestval, the test accuracy at the epoch best on our validation split. 'last "
         "epoch' and 'not stated': our last epoch (top1), the headline.",
         "\u0394 = our mean \u2212 published top-1 (percentage points); mean" + PM
         + "sample std over seeds."]),
    "different protocol": (
        ["Method", "Dataset", "IF", "Seeds", "Ours", "Published", "Differs (ours vs published)",
         "Source"],
        "Confirmed figures under another protocol: shown, not compared",
        ["Confirmed figures whose backbone, epochs, recorded settings or loss differ from the "
         "run's; ours is taken under the figure's epoch rule, and no difference is computed."]),
    "unconfirmed lead": (
        ["Method", "Dataset", "IF", "Lead", "Source"], "Unconfirmed leads, not compared",
        [DAGGER + " not seen in its paper's own table (published.csv says why): a lead to "
         "check, never compared with ours."]),
    "no run yet": (
        ["Method", "Dataset", "IF", "Published", "Source", "To fill it"],
        "Published figures of these methods with no paper-protocol run here yet",
        ["Every published figure of a method in these results whose cell has no run under "
         "the paper preset: the row stays empty until someone runs the command beside it. "
         + DAGGER + " an unconfirmed lead."]),
}


def paper_comparison(agg: pd.DataFrame, published: pd.DataFrame) -> Section:
    """Paper-protocol rows beside every published figure for their cell, like with like.

    Each published figure is compared with our value under the figure's own epoch rule (our
    best test epoch, top1_best, where the source's code reports the best test accuracy; our
    last epoch, top1, otherwise). Three tables: confirmed figures obtained under the run's
    protocol (compared, with the difference); confirmed figures under another protocol
    (backbone, epochs, a recorded setting or the loss itself differs: shown, not compared);
    unconfirmed leads (shown apart, never compared).
    """
    pairs, missing, others = _pair_with_published(agg, published)
    pairs += _awaiting_a_run(agg, published)
    cites = {}  # a paper's table -> its number, in order of first use
    for pair in pairs:
        cites.setdefault(_published_cite(pair["source"]), len(cites) + 1)
    section = Section("paper_comparison", "Compared with published results", [],
                      pd.DataFrame(pairs, columns=COLUMNS))
    for status in TABLES:
        of_status = [pair for pair in pairs if pair["status"] == status]
        if of_status:
            section.tables.append(_table(status, of_status, cites))
    closing = _closing(others, missing)
    if section.tables:
        section.tables[-1].notes += closing
    else:
        section.intro = " ".join(["No run under the paper protocol has a published figure "
                                  "to compare with."] + closing)
    return section


def _pair_with_published(agg: pd.DataFrame, published: pd.DataFrame) -> tuple[list, dict, int]:
    """One record per (row of ours, published figure it is set beside), with COLUMNS and the
    row's run_ids; label -> dataset -> factors of the paper-protocol rows with no figure; and
    how many other rows have none. A paper-protocol row stands beside every figure of its
    cell, another only beside a confirmed figure whose protocol it has
    (reference.references_for)."""
    from .reference import SELECTIONS, protocol_differences, references_for

    pairs, missing, others = [], {}, 0
    for r in agg.to_dict("records"):
        refs = references_for(published, r)
        if not len(refs) and r["preset"] != "paper":
            others += 1
        elif not len(refs):
            factors = missing.setdefault(r["label"], {}).setdefault(dataset_name(r["dataset"]), [])
            factors.append(fmt_factor(r["imbalance_factor"]))
        for ref in refs.to_dict("records"):
            column = SELECTIONS[ref["selection"]]
            mean, std = r[f"{column}_mean"], r[f"{column}_std"]
            differs = protocol_differences(ref, r)
            status = ("unconfirmed lead" if not ref["confirmed"] else
                      "different protocol" if differs else "compared")
            pairs.append(dict(
                label=r["label"], method=r["method"], dataset=r["dataset"],
                imbalance_factor=r["imbalance_factor"], seeds=r["seeds"], status=status,
                selection=ref["selection"], our_column=column, ours_mean=mean, ours_std=std,
                top1_mean=r["top1_mean"], top1_std=r["top1_std"],
                top1_best_mean=r["top1_best_mean"], top1_best_std=r["top1_best_std"],
                published_top1=ref["top1"], published_confirmed=ref["confirmed"],
                difference=mean - ref["top1"] if status == "compared" else math.nan,
                differs="; ".join(differs), source=ref["source"], backbone=ref["backbone"],
                epochs=ref["epochs"], code=ref["code"], run_ids=r.get("run_ids", ())))
    return pairs, missing, others


def _awaiting_a_run(agg: pd.DataFrame, published: pd.DataFrame) -> list[dict]:
    """One record per published figure of a method in `agg` whose cell has no paper-protocol
    row of that method: what a full comparison would still need run."""
    from .names import method_title
    from .reference import SELECTIONS

    paper = agg[agg["preset"] == "paper"] if "preset" in agg else agg.iloc[:0]
    awaiting = []
    for method in dict.fromkeys(agg["method"]):
        of_method = published[published["method"] == method]
        ran = paper[paper["method"] == method]
        for ref in of_method.to_dict("records"):
            if any(_same_cell(ref, r) for r in ran.to_dict("records")):
                continue
            awaiting.append(dict(
                label=method_title(method), method=method, dataset=ref["dataset"],
                imbalance_factor=ref["imbalance_factor"], seeds=0, status="no run yet",
                selection=ref["selection"], our_column=SELECTIONS[ref["selection"]],
                ours_mean=math.nan, ours_std=math.nan, top1_mean=math.nan, top1_std=math.nan,
                top1_best_mean=math.nan, top1_best_std=math.nan, published_top1=ref["top1"],
                published_confirmed=ref["confirmed"], difference=math.nan, differs="",
                source=ref["source"], backbone=ref["backbone"], epochs=ref["epochs"],
                code=ref["code"], run_ids=()))
    return awaiting


def _same_cell(ref: dict, run: dict) -> bool:
    """Whether a run fills a published figure's cell (a figure without a factor: any)."""
    return ref["dataset"] == run["dataset"] and (
        pd.isna(ref["imbalance_factor"]) or ref["imbalance_factor"] == run["imbalance_factor"])


def _table(status: str, pairs: list[dict], cites: dict) -> Table:
    header, title, notes = TABLES[status]
    rows = [_row(status, pair, cites[_published_cite(pair["source"])]) for pair in pairs]
    used = {_published_cite(pair["source"]) for pair in pairs}
    # the leads' and the awaiting table show no value of ours, so no runs stand behind them
    sources = ({} if status in ("unconfirmed lead", "no run yet") else
               {(i, None): pair["run_ids"] for i, pair in enumerate(pairs)})
    return Table(header=header, rows=rows, title=title, sources=sources,
                 notes=notes + [f"[{n}] {cite}" for cite, n in cites.items() if cite in used])


def _row(status: str, pair: dict, number: int) -> list[str]:
    from .reference import SELECTION_NAMES

    cell = [pair["label"], dataset_name(pair["dataset"]), fmt_factor(pair["imbalance_factor"])]
    ours, published = fmt_mean_std(pair["ours_mean"], pair["ours_std"]), fmt_number(pair["published_top1"])
    if status == "compared":
        return cell + [str(pair["seeds"]), _rule_name(pair["selection"], SELECTION_NAMES), ours,
                       published, fmt_signed(pair["difference"]), f"[{number}]"]
    if status == "different protocol":
        return cell + [str(pair["seeds"]), ours, published, pair["differs"], f"[{number}]"]
    if status == "no run yet":
        mark = "" if pair["published_confirmed"] else DAGGER
        return cell + [published + mark, f"[{number}]", _command_to_fill(pair)]
    return cell + [published + DAGGER, f"[{number}]"]


def _command_to_fill(pair: dict) -> str:
    from .names import is_registered_dataset

    if not is_registered_dataset(pair["dataset"]):
        return "(a dataset ltbench does not build)"
    factor = "" if pd.isna(pair["imbalance_factor"]) else f" --if {fmt_factor(pair['imbalance_factor'])}"
    return f"`ltbench run --methods {pair['method']} --dataset {pair['dataset']}{factor}`"


def _closing(others: int, missing: dict) -> list[str]:
    """What the comparison leaves out: runs under other protocols, rows with no figure."""
    closing = []
    if others:
        closing.append(f"{others} result(s) under other protocols (preset other than paper, and no "
                       "confirmed figure with their settings) are not compared with published figures.")
    if missing:
        def cells_of(where):
            return ", ".join(f"{dataset} IF {'/'.join(factors)}"
                             for dataset, factors in where.items())
        closing.append("No published figure for: " + "; ".join(
            f"{label} ({cells_of(where)})" for label, where in missing.items()) + ".")
    return closing


def _published_cite(source: str) -> str:
    """The paper and table of a published.csv source, without its row and column."""
    return source.split(": row ")[0]


def _rule_name(selection: str, names: dict) -> str:
    name = names[selection]
    return name if selection in ("best_on_test", "last_epoch", "best_on_val") else f"{name} (ours: last epoch)"
