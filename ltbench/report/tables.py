"""The report's main tables as plain data (formats live in render): top-1 per method and
(dataset, IF) cell, and many / medium / few per cell, emphasised as a significance
assessment says."""

import pandas as pd

from .aggregate import grid, in_cell, table_cells
from .formats import (NO_GROUP, PM, dataset_name, fmt_factor, fmt_mean_std, plural,
                      shown_label)
from .model import Section, Table
from .significance import SHOT_METRICS, best_note, italic_note


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

# what the main tables emphasise: the headline, its variant chosen on validation, the groups
ASSESSED = ("top1", "top1_bestval", *SHOT_METRICS)
# the main tables' columns that were chosen on the test set, named so in the CSV
ON_TEST = {"top1_best_mean": "top1_best_on_test_mean", "top1_best_std": "top1_best_on_test_std"}


def main_table(agg: pd.DataFrame, assessment=None) -> Section:
    """Methods x (dataset, factor): top-1 mean +- std over seeds at the last epoch, the
    headline; beside it, where the runs recorded it, the same at the epoch best on
    validation (top1_bestval). Bold (best), underlined (tied with the best), marked and
    italic as `assessment` (significance.Assessment) says; without one, nothing is
    emphasised."""
    same_n = agg["seeds"].nunique() == 1
    # One seed count for the whole table goes in the caption instead of every cell.
    seeds = (f"{plural(agg['seeds'].iloc[0], 'seed')} in every cell" if same_n
             else "n = number of seeds")
    last = _top1_table(agg, "top1", assessment, "Top-1 accuracy (%)",
                       "Top-1 at the last epoch, mean" + PM + f"sample standard deviation over seeds ({seeds}; "
                       "a single seed has no \u00b1). Blank: not run. Intervals: see Confidence intervals.")
    tables = [last]
    if agg["top1_bestval_mean"].notna().any():
        tables.append(_top1_table(
            agg, "top1_bestval", assessment, "Top-1 accuracy at the epoch best on validation (%)",
            "Test top-1 at the evaluated epoch whose validation top-1 is best (top1_bestval: chosen on the "
            "validation split, never on the test set), mean" + PM + f"sample std over seeds ({seeds}). "
            "Blank: not run, or no validation split.", compared=False))
    else:
        last.notes.append("No run here recorded top1_bestval (the epoch best on validation): runs of this "
                          "version record it where the dataset has a validation split.")
    last.notes.append(_protocol_note(agg))
    data = agg[["label", "method", "dataset", "imbalance_factor", "preset", "params_key",
                "seeds", "seed_list", "top1_mean", "top1_std", "top1_bestval_mean", "top1_bestval_std"]].copy()
    if assessment is not None:
        extra = assessment.columns(agg, ["top1", "top1_bestval"])
        data["best_in_column"] = extra.pop("top1_best")
        data = pd.concat([data, extra.drop(columns=[c for c in extra if c in data])], axis=1)
    else:
        data["best_in_column"] = False
    return Section("main", "Main table", tables, data.rename(columns={"params_key": "params"}))


def _top1_table(agg: pd.DataFrame, metric: str, assessment, title: str, lead: str, compared: bool = True) -> Table:
    """One methods x (dataset, factor) table of `metric`; `lead` is its first note. Without
    `compared`, its cells are not marked against the baseline (the headline's are)."""
    cells = table_cells(agg)
    labels = list(dict.fromkeys(agg["label"]))
    same_n = agg["seeds"].nunique() == 1
    rows = [[shown_label(label)] for label in labels]
    bold, underline, italic, sources = set(), set(), set(), {}
    for i, j, dataset, factor, label, r in grid(agg, labels, cells):
        if r is None or pd.isna(r[f"{metric}_mean"]):
            rows[i].append("")
            continue
        sources[(i, j)] = r.get("run_ids", ())
        text = fmt_mean_std(r[f"{metric}_mean"], r[f"{metric}_std"])
        if assessment is not None:
            text += assessment.mark(label, dataset, factor, metric) if compared else ""
            if assessment.is_best(label, dataset, factor, metric):
                bold.add((i, j))
            if assessment.is_tied(label, dataset, factor, metric):
                underline.add((i, j))
            if assessment.few_seeds(label, dataset, factor, metric):
                italic.add((i, j))
        rows[i].append(text if same_n else f"{text} (n={r.seeds})")
    notes = [lead]
    if assessment is not None and compared:
        notes += assessment.table_notes(metric, bool(italic))
    elif assessment is not None:
        notes.append(best_note(assessment.alpha))
        if italic:
            notes.append(italic_note())
        if assessment.baseline is not None:
            notes.append("Compared with the baseline at the last epoch only (the table above).")
    return Table(header=["Method"] + [f"IF {fmt_factor(f)}" for _, f in cells],
                 rows=rows, groups=_groups(cells), bold=bold, underline=underline,
                 italic=italic, title=title, notes=notes, sources=sources)


def many_medium_few_tables(agg: pd.DataFrame, assessment=None) -> Section:
    """One paper-style table: a column group per (dataset, factor), Many / Med. / Few under
    each; emphasis and marks as in the main table, from `assessment`."""
    from .shots import GROUPS, describe_rule

    cells = table_cells(agg)
    labels = list(dict.fromkeys(agg["label"]))
    rows = [[shown_label(label)] for label in labels]
    bold, underline, italic, sources = set(), set(), set(), {}
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
                    if assessment.is_best(label, dataset, factor, group):
                        bold.add((i, j))
                    if assessment.is_tied(label, dataset, factor, group):
                        underline.add((i, j))
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
                    bold=bold, underline=underline, italic=italic,
                    title="Many / medium / few-shot accuracy (%)",
                    notes=notes, sources=sources)] if cells else []
    columns = ["label", "method", "dataset", "imbalance_factor", "seeds", "mmf_convention",
               "n_many", "n_medium", "n_few"]
    columns += [f"{m}_{s}" for m in list(GROUPS) + ["top1", "top1_bestval", "top1_best"] for s in ("mean", "std")]
    data = agg[columns].rename(columns=ON_TEST)
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
