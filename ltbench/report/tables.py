"""Seeds -> one row per spec, and the report's tables as plain data (formats live in render).

A table row is a *label*: the method name, plus whatever settings tell its specs apart.
Runs are averaged only when their whole spec, apart from the seed, is equal.
"""

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Iterator

import pandas as pd

from .load import KINDS, RUN_KINDS, LeftOut
from .names import dataset_rank, dataset_title, method_rank, method_title

# Everything that defines a run except its seed: equal on all of these = seeds of one spec.
# n_train stands in for the spec's head-class size (n_max), which result.csv does not carry.
SPEC_COLUMNS = ["method", "dataset", "imbalance_factor", "profile", "backbone", "epochs",
                "batch_size", "preset", "mmf_convention", "n_train", "params_key"]
# The spec columns that are settings (not params) and so may appear in a label.
SETTING_COLUMNS = ["preset", "profile", "backbone", "epochs", "batch_size", "mmf_convention",
                   "n_train"]
METRICS = ["top1", "many", "medium", "few", "top1_best"]
PM, MINUS, DAGGER = " \u00b1 ", "\u2212", "\u2020"
NO_GROUP = "\u2014"  # a shot group with no classes; a cell never run stays blank
_MISSING = object()


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    title: str = ""
    groups: list[tuple[str, int]] = field(default_factory=list)  # spanning row above header
    bold: set[tuple[int, int]] = field(default_factory=set)  # (row, column) to emphasise
    italic: set[tuple[int, int]] = field(default_factory=set)  # (row, column): few seeds
    notes: list[str] = field(default_factory=list)
    # the run ids behind a cell: (row, column), or (row, None) for every cell of the row;
    # the report's provenance files and HTML tooltips are built from them
    sources: dict[tuple[int, int | None], tuple[str, ...]] = field(default_factory=dict)


@dataclass
class Section:
    name: str  # file stem under tables/
    title: str
    tables: list[Table]
    data: pd.DataFrame  # the numbers behind the tables, unrounded, for the CSV
    intro: str = ""


# --- selecting and labelling runs -------------------------------------------------------

def filter_runs(runs: pd.DataFrame, methods=None, datasets=None, imbalance_factors=None):
    keep = pd.Series(True, index=runs.index)
    if methods:
        keep &= runs["method"].isin(methods)
    if datasets:
        keep &= runs["dataset"].isin(datasets)
    if imbalance_factors:
        keep &= runs["imbalance_factor"].isin([float(f) for f in imbalance_factors])
    return runs[keep]


def filter_left_out(entries: list[LeftOut], methods=None, datasets=None,
                    imbalance_factors=None) -> list[LeftOut]:
    """Entries whose method, dataset or factor is unknown are always kept."""
    def wanted(value, allowed):
        known = value is not None and not (isinstance(value, float) and math.isnan(value))
        return not allowed or not known or value in allowed
    factors = [float(f) for f in imbalance_factors or []]
    return [e for e in entries if wanted(e.method, methods) and wanted(e.dataset, datasets)
            and wanted(e.imbalance_factor, factors)]


def label_runs(runs: pd.DataFrame, group_by=()) -> pd.DataFrame:
    """Add `spec` (identity without the seed) and `label` (the table row) columns.

    `group_by` settings always appear in the label. Beyond them, a label gains exactly the
    settings needed so that no table cell holds two specs: averaging two learning rates
    into one number would be silently wrong, so they are told apart instead. A `custom`
    spec also names what it changed from the closest named-preset spec of its method, so
    "sc_hybrid (preset=custom)" reads "sc_hybrid (preset=custom, alpha_schedule=...)".
    """
    runs = runs.copy()
    group_by = list(group_by)
    runs["spec"] = runs[SPEC_COLUMNS].astype(str).agg("|".join, axis=1) if len(runs) else []
    if runs["preset"].nunique() > 1 and "preset" not in group_by:
        # A row of quick-protocol numbers beside paper ones must say so on every row.
        group_by.append("preset")
    keys = {i: list(group_by) for i in runs.index}
    for _, rows in runs.groupby(_labels(runs, group_by)):
        extra = [k for k in _separating_settings(rows) if k not in group_by]
        for i in rows.index:
            keys[i] += extra
    for i, changed in _custom_changes(runs).items():
        keys[i] += [k for k in changed if k not in keys[i]]
    records = runs.to_dict("index")
    runs["label"] = [_label(records[i], keys[i]) for i in runs.index]
    # Two values that print alike (1 and 1.0) could still share a label: add the spec hash.
    specs = runs.groupby(["label", "dataset", "imbalance_factor"], dropna=False)["spec"]
    clash = specs.transform("nunique") > 1 if len(runs) else []
    if any(clash):
        runs.loc[clash, "label"] += runs.loc[clash, "spec"].map(
            lambda s: " [spec " + hashlib.sha1(s.encode()).hexdigest()[:6] + "]")
    return runs


def _custom_changes(runs: pd.DataFrame) -> dict:
    """Row index -> the settings in which that custom run differs from the closest run of a
    named preset with the same method, dataset and imbalance factor (if there is one)."""
    changes = {}
    for _, cell in runs.groupby(["method", "dataset", "imbalance_factor"], dropna=False):
        named = cell[cell["preset"] != "custom"].drop_duplicates("spec").to_dict("records")
        if not named:
            continue
        for i, run in cell[cell["preset"] == "custom"].iterrows():
            run = run.to_dict()
            keys = sorted(set(run["params_dict"]).union(*(n["params_dict"] for n in named)))
            differing = [[k for k in SETTING_COLUMNS + keys
                          if k != "preset" and _comparable(_setting(run, k)) != _comparable(_setting(n, k))]
                         for n in named]
            changes[i] = min(differing, key=len)
    return changes


def _setting(run: dict, key: str):
    return run[key] if key in SETTING_COLUMNS else run["params_dict"].get(key, _MISSING)


def _labels(runs: pd.DataFrame, keys: list[str]) -> list[str]:
    return [_label(run, keys) for run in runs.to_dict("records")]


def _label(run: dict, keys: list[str]) -> str:
    shown = [f"{k}={_fmt_setting(v)}" for k in keys if (v := _setting(run, k)) is not _MISSING and v != ""]
    return f"{run['method']} ({', '.join(shown)})" if shown else run["method"]


def _separating_settings(rows: pd.DataFrame) -> list[str]:
    """Settings whose values differ between specs that share a (dataset, factor) cell."""
    keys = []
    for _, cell in rows.groupby(["dataset", "imbalance_factor"], dropna=False):
        specs = cell.drop_duplicates("spec").to_dict("records")
        if len(specs) < 2:
            continue
        params = sorted(set().union(*(s["params_dict"] for s in specs)))
        for key in SETTING_COLUMNS + params:
            values = {_comparable(_setting(s, key)) for s in specs}
            if len(values) > 1 and key not in keys:
                keys.append(key)
    return keys


def _comparable(value) -> str:
    return "<missing>" if value is _MISSING else json.dumps(value, sort_keys=True, default=str)


def _fmt_setting(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict, bool)) or value is None:
        return json.dumps(value, separators=(",", ":"))
    return str(value)


# --- aggregation ------------------------------------------------------------------------

def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (label, dataset, factor): mean and sample std (ddof=1) over seeds.

    A group with no classes (no few-shot classes on CIFAR-10-LT at IF 100) has NaN
    accuracies in every seed, so its mean stays NaN and prints empty, never as 0.
    """
    rows = []
    for _, seeds in runs.groupby(["label", "dataset", "imbalance_factor", "spec"],
                                 dropna=False, sort=False):
        first = seeds.iloc[0]
        row = {c: first[c] for c in ["label"] + SPEC_COLUMNS}
        row["seeds"] = len(seeds)
        row["seed_list"] = " ".join(_fmt_setting(s) for s in sorted(seeds["seed"]))
        row["run_ids"] = tuple(seeds.sort_values("seed")["run_id"]) if "run_id" in seeds else ()
        for metric in METRICS:
            row[f"{metric}_mean"] = seeds[metric].mean()
            row[f"{metric}_std"] = seeds[metric].std(ddof=1)
        for column in ["n_train", "n_classes", "n_many", "n_medium", "n_few"]:
            row[column] = first[column]
        rows.append(row)
    table = pd.DataFrame(rows)
    if not len(table):
        return table
    order = sorted(range(len(table)), key=lambda i: _row_order(table.iloc[i]))
    return table.iloc[order].reset_index(drop=True)


def _row_order(row):
    return (*method_rank(row["method"]), row["label"], *cell_order(row))


def cell_order(row):
    dataset, factor = row["dataset"], row["imbalance_factor"]
    return (*dataset_rank(dataset), -(0 if pd.isna(factor) else factor))


def table_cells(agg: pd.DataFrame) -> list[tuple[str, float]]:
    """(dataset, imbalance factor) columns in paper order: datasets, then factor 100 -> 10."""
    cells = agg.drop_duplicates(["dataset", "imbalance_factor"])
    cells = sorted(cells.to_dict("records"), key=cell_order)
    return [(c["dataset"], c["imbalance_factor"]) for c in cells]


def in_cell(agg, dataset, factor):
    same = agg["dataset"] == dataset
    return agg[same & (agg["imbalance_factor"].isna() if pd.isna(factor)
                       else agg["imbalance_factor"] == factor)]


def grid(agg: pd.DataFrame, labels: list, cells: list) -> Iterator[tuple]:
    """Every cell of a methods x (dataset, IF) table, column by column: (row index, column
    index from 1, dataset, IF, row label, the aggregated row or None where the method has no
    run)."""
    for j, (dataset, factor) in enumerate(cells, start=1):
        cell = in_cell(agg, dataset, factor).set_index("label")
        for i, label in enumerate(labels):
            yield i, j, dataset, factor, label, (cell.loc[label] if label in cell.index else None)


# --- formatting -------------------------------------------------------------------------

def dataset_name(dataset: str) -> str:
    return dataset_title(dataset)


def shown_label(label: str) -> str:
    """A row label as tables print it: the method by its display name (LDAM-DRW for ldam_drw)."""
    method, space, settings = label.partition(" ")
    return method_title(method) + space + settings


def fmt_factor(factor) -> str:
    return "" if pd.isna(factor) else f"{factor:g}"


def fmt_number(value, digits=2) -> str:
    return "" if pd.isna(value) else f"{value:.{digits}f}".replace("-", MINUS)


def fmt_mean_std(mean, std, digits=2) -> str:
    """A single seed has no spread to show, so no +-."""
    if pd.isna(mean):
        return ""
    return fmt_number(mean, digits) + ("" if pd.isna(std) else PM + fmt_number(std, digits))


def fmt_signed(value) -> str:
    return "" if pd.isna(value) else f"{value:+.2f}".replace("-", MINUS)


def _groups(cells) -> list[tuple[str, int]]:
    groups = []
    for dataset, _ in cells:
        if groups and groups[-1][0] == dataset_name(dataset):
            groups[-1] = (groups[-1][0], groups[-1][1] + 1)
        else:
            groups.append((dataset_name(dataset), 1))
    return [("", 1)] + groups


def _protocol_note(agg: pd.DataFrame) -> str:
    presets = sorted(agg["preset"].unique())
    if presets == ["paper"]:
        return "All runs use the paper protocol (preset = paper)."
    return "Protocols (preset): " + ", ".join(presets) + "."


# --- the tables -------------------------------------------------------------------------

def main_table(agg: pd.DataFrame, assessment=None) -> Section:
    """Methods x (dataset, factor): top-1 mean +- std over seeds, bold, marked and italic as
    `assessment` (significance.Assessment) says; without one, nothing is emphasised."""
    cells = table_cells(agg)
    labels = list(dict.fromkeys(agg["label"]))
    # One seed count for the whole table goes in the caption instead of every cell.
    same_n = agg["seeds"].nunique() == 1
    rows = [[shown_label(label)] for label in labels]
    bold, italic, sources = set(), set(), {}
    for i, j, dataset, factor, label, r in grid(agg, labels, cells):
        if r is None:
            rows[i].append("")
            continue
        sources[(i, j)] = r.get("run_ids", ())
        text = fmt_mean_std(r.top1_mean, r.top1_std)
        if assessment is not None:
            text += assessment.mark(label, dataset, factor, "top1")
            if assessment.is_bold(label, dataset, factor, "top1"):
                bold.add((i, j))
            if assessment.few_seeds(label, dataset, factor, "top1"):
                italic.add((i, j))
        rows[i].append(text if same_n else f"{text} (n={r.seeds})")
    seeds = (f"{plural(agg['seeds'].iloc[0], 'seed')} in every cell" if same_n
             else "n = number of seeds")
    notes = ["Top-1 at the last epoch, mean" + PM + f"sample standard deviation over seeds ({seeds}; "
             "a single seed has no \u00b1). Blank: not run. Intervals: see Confidence intervals."]
    if assessment is not None:
        notes += assessment.table_notes("top1", bool(italic))
    notes.append(_protocol_note(agg))
    table = Table(header=["Method"] + [f"IF {fmt_factor(f)}" for _, f in cells],
                  rows=rows, groups=_groups(cells), bold=bold, italic=italic,
                  title="Top-1 accuracy (%)", notes=notes, sources=sources)
    data = agg[["label", "method", "dataset", "imbalance_factor", "preset", "params_key",
                "seeds", "seed_list", "top1_mean", "top1_std"]].copy()
    if assessment is not None:
        extra = assessment.columns(agg, ["top1"])
        data["best_in_column"] = extra.pop("top1_bold")
        data = pd.concat([data, extra.drop(columns=[c for c in extra if c in data])], axis=1)
    else:
        data["best_in_column"] = False
    return Section("main", "Main table", [table], data.rename(columns={"params_key": "params"}))


def plural(n, word: str) -> str:
    """"1 class", "3 classes", "1 seed", "5 seeds"."""
    return f"{n:g} {word}" + ("" if n == 1 else "es" if word.endswith("s") else "s")


def paper_comparison(agg: pd.DataFrame, published: pd.DataFrame) -> Section:
    """Paper-protocol rows beside every published figure for their cell, like with like.

    Each published figure is compared with our value under the figure's own epoch rule (our
    best test epoch, top1_best, where the source's code reports the best test accuracy; our
    last epoch, top1, otherwise). Three tables: confirmed figures obtained under the run's
    protocol (compared, with the difference); confirmed figures under another protocol
    (backbone, epochs, a recorded setting or the loss itself differs: shown, not compared);
    unconfirmed leads (shown apart, never compared).
    """
    from .reference import SELECTION_NAMES, SELECTIONS, protocol_differences, references_for

    others = 0
    rows = {"compared": [], "different protocol": [], "unconfirmed lead": []}
    ours_from = {status: {} for status in rows}  # the runs behind each of our values
    used = {status: [] for status in rows}  # the source numbers each table cites
    records, cites, missing = [], {}, {}
    for r in agg.to_dict("records"):
        # a paper-protocol run beside every figure of its cell; another only beside a
        # confirmed figure whose protocol it has (reference.references_for)
        refs = references_for(published, r)
        if not len(refs):
            if r["preset"] != "paper":
                others += 1
                continue
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
        closing.append(f"{others} result(s) under other protocols (preset other than paper, and no "
                       "confirmed figure with their settings) are not compared with published figures.")
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


def many_medium_few_tables(agg: pd.DataFrame, assessment=None) -> Section:
    """One paper-style table: a column group per (dataset, factor), Many / Med. / Few under
    each; bold, marks and italic as in the main table, from `assessment`."""
    from .shots import GROUPS, describe_rule

    cells = table_cells(agg)
    labels = list(dict.fromkeys(agg["label"]))
    rows = [[shown_label(label)] for label in labels]
    bold, italic, sources = set(), set(), {}
    for c, (dataset, factor) in enumerate(cells):
        cell = in_cell(agg, dataset, factor).set_index("label")
        for g, group in enumerate(GROUPS):
            j = 1 + 3 * c + g
            for i, label in enumerate(labels):
                if label not in cell.index:
                    rows[i].append("")
                    continue
                r = cell.loc[label]
                sources[(i, j)] = r.get("run_ids", ())
                if pd.isna(r[f"{group}_mean"]):
                    rows[i].append(NO_GROUP if r[f"n_{group}"] == 0 else "")
                    continue
                text = fmt_mean_std(r[f"{group}_mean"], r[f"{group}_std"])
                if assessment is not None:
                    text += assessment.mark(label, dataset, factor, group)
                    if assessment.is_bold(label, dataset, factor, group):
                        bold.add((i, j))
                    if assessment.few_seeds(label, dataset, factor, group):
                        italic.add((i, j))
                rows[i].append(text)
    conventions = sorted({c for c in agg["mmf_convention"] if isinstance(c, str) and c})
    notes = ["Accuracy (%) on the classes with many / medium / few training images, mean" + PM
             + "sample std over seeds (seed counts as in the main table; a single seed has "
             "no \u00b1).",
             "Groups: " + ("; ".join(describe_rule(c) for c in conventions) or "rule not recorded")
             + ". Classes per group: " + _group_counts(agg, cells, len(conventions) > 1) + ".",
             f"{NO_GROUP}: the group has no classes at this imbalance factor; blank: not run."]
    if assessment is not None:
        notes += assessment.table_notes("many/medium/few", bool(italic))
    tables = [Table(header=["Method"] + ["Many", "Med.", "Few"] * len(cells), rows=rows,
                    groups=[("", 1)] + [(f"{dataset_name(d)}, IF {fmt_factor(f)}", 3)
                                        for d, f in cells],
                    bold=bold, italic=italic, title="Many / medium / few-shot accuracy (%)",
                    notes=notes, sources=sources)] if cells else []
    columns = ["label", "method", "dataset", "imbalance_factor", "seeds", "mmf_convention",
               "n_many", "n_medium", "n_few"]
    columns += [f"{m}_{s}" for m in list(GROUPS) + ["top1", "top1_best"] for s in ("mean", "std")]
    data = agg[columns].copy()
    if assessment is not None:
        extra = assessment.columns(agg, GROUPS)
        data = pd.concat([data, extra.drop(columns=[c for c in extra if c in data])], axis=1)
    return Section("many_medium_few", "Many / medium / few", tables, data)


def _group_counts(agg: pd.DataFrame, cells, name_rules: bool = False) -> str:
    """"Fashion-MNIST-LT IF 100: many 4 classes, medium 3 classes, few 3 classes; ...";
    with `name_rules` (the columns use different rules) each column names its own:
    "CIFAR-10-LT IF 100 (terciles rule): ..."."""
    parts, last = [], None
    for dataset, factor in cells:
        here = in_cell(agg, dataset, factor)
        counts = here[["n_many", "n_medium", "n_few"]].drop_duplicates()
        rules = sorted({c for c in here["mmf_convention"] if isinstance(c, str) and c})
        name = ((f"{dataset_name(dataset)} " if dataset != last else "") + f"IF {fmt_factor(factor)}"
                + (f" ({' / '.join(rules)} rule)" if rules and name_rules else ""))
        last = dataset
        if len(counts) != 1 or counts.isna().any(axis=None):
            parts.append(f"{name}: varies by method or not recorded (n_many, n_medium, n_few "
                         "in the CSV)")
        else:
            first = counts.iloc[0]
            parts.append(f"{name}: " + ", ".join(
                f"{group} {plural(first[f'n_{group}'], 'class')}"
                for group in ("many", "medium", "few")))
    return "; ".join(parts)


def cost_table(runs: pd.DataFrame) -> Section:
    """What a spec costs on each device it ran on (seeds pooled)."""
    records, run_ids = [], []
    for _, g in runs.groupby(["label", "dataset", "imbalance_factor", "device"],
                             dropna=False, sort=False):
        first = g.iloc[0]
        run_ids.append(tuple(g.sort_values("seed")["run_id"]))
        records.append(dict(
            label=first["label"], method=first["method"], dataset=first["dataset"],
            imbalance_factor=first["imbalance_factor"], device=first["device"], runs=len(g),
            wall_s_mean=g["wall_s"].mean(), wall_s_total=g["wall_s"].sum(min_count=1),
            images_per_s_mean=g["images_per_s"].mean(),
            peak_mem_mb_max=g["peak_mem_mb"].max()))
    data = pd.DataFrame(records, columns=[
        "label", "method", "dataset", "imbalance_factor", "device", "runs", "wall_s_mean",
        "wall_s_total", "images_per_s_mean", "peak_mem_mb_max"])
    if len(data):
        order = sorted(range(len(data)), key=lambda i: (*_row_order(data.iloc[i]),
                                                        data.iloc[i]["device"]))
        data = data.iloc[order].reset_index(drop=True)
        run_ids = [run_ids[i] for i in order]
    rows = [[shown_label(r.label), dataset_name(r.dataset), fmt_factor(r.imbalance_factor),
             fmt_device(r.device), str(r.runs), fmt_duration(r.wall_s_mean),
             fmt_duration(r.wall_s_total), fmt_number(r.images_per_s_mean, 0),
             fmt_number(r.peak_mem_mb_max, 0)] for r in data.itertuples()]
    table = Table(
        header=["Method", "Dataset", "IF", "Device", "Runs", "Wall time / run", "Total",
                "Images/s", "Peak memory (MB)"],
        rows=rows, title="Cost per run", sources={(i, None): ids for i, ids in enumerate(run_ids)},
        notes=["Wall time and images/s are means over the runs (seeds) on that device; "
               "peak memory is the largest over them (device memory on a GPU)."])
    return Section("cost", "Cost", [table], data)


def fmt_device(device) -> str:
    """As `environment.device_label` records it, readable: `cuda:NVIDIA H100` -> the GPU
    model, `cpu:2 cores` -> `cpu (2 cores)`; older rows say only `cpu` or `cuda`."""
    device = "" if pd.isna(device) else str(device)
    kind, _, detail = device.partition(":")
    if kind == "cuda":
        return detail.strip() or "GPU"
    if kind == "cpu":
        return f"cpu ({detail.strip()})" if detail.strip() else "cpu"
    return device


def fmt_duration(seconds) -> str:
    if pd.isna(seconds):
        return ""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# --- what was left out ------------------------------------------------------------------

def left_out_summary(entries: list[LeftOut]) -> str:
    runs = [e for e in entries if e.kind in RUN_KINDS]
    files = [e for e in entries if e.kind == "skipped file"]
    if not runs and not files:
        return "Nothing was left out."
    parts = []
    if runs:
        kinds = [e.kind for e in runs]
        detail = ", ".join(f"{kinds.count(k)} {k}" for k in RUN_KINDS if k in kinds)
        parts.append(f"Left out {len(runs)} run{'s' * (len(runs) != 1)} ({detail})")
    if files:
        parts.append(f"skipped {len(files)} file{'s' * (len(files) != 1)}")
    text = " and ".join(parts)
    return text[0].upper() + text[1:] + "."


def left_out_section(entries: list[LeftOut]) -> Section:
    order = {kind: i for i, kind in enumerate(KINDS)}
    entries = sorted(entries, key=lambda e: (order.get(e.kind, len(order)), e.path))
    rows = [[e.path, e.kind, e.reason] for e in entries]
    data = pd.DataFrame([vars(e) for e in entries],
                        columns=["path", "kind", "reason", "method", "dataset",
                                 "imbalance_factor"])
    tables = [Table(header=["Path", "Kind", "Reason"], rows=rows)] if rows else []
    intro = left_out_summary(entries)
    if any(e.kind != "unused file" for e in entries):
        intro += (" Failed and unfinished runs are never averaged in; a corrupt or foreign "
                  "CSV is skipped.")
    return Section("left_out", "Left out", tables, data, intro=intro)
