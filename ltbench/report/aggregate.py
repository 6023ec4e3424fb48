"""Seeds -> one row per spec (mean and spread), and the order and cells tables walk."""

from typing import Iterator

import pandas as pd

from .labels import SPEC_COLUMNS, fmt_setting
from .names import dataset_rank, method_rank

METRICS = ["top1", "many", "medium", "few", "top1_best", "top1_bestval"]


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
        row["seed_list"] = " ".join(fmt_setting(s) for s in sorted(seeds["seed"]))
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
    order = sorted(range(len(table)), key=lambda i: row_order(table.iloc[i]))
    return table.iloc[order].reset_index(drop=True)


def row_order(row):
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
