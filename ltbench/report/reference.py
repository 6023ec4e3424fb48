"""Published top-1 accuracies shipped with the package (from REFERENCE.md)."""

from importlib import resources

import pandas as pd

COLUMNS = ["method", "dataset", "imbalance_factor", "top1", "confirmed", "source"]


def load_published() -> pd.DataFrame:
    """One row per (method, dataset, imbalance factor) with a published figure.

    An empty imbalance factor means the dataset's natural distribution (iNaturalist,
    ImageNet-LT): the figure then matches a run of that dataset at any factor.
    """
    with resources.files("ltbench.report").joinpath("published.csv").open("r") as f:
        table = pd.read_csv(f, dtype={"method": str, "dataset": str, "source": str})
    table["imbalance_factor"] = pd.to_numeric(table["imbalance_factor"])
    table["confirmed"] = table["confirmed"].astype(str).str.lower().eq("true")
    return table[COLUMNS]


def lookup(published: pd.DataFrame, method: str, dataset: str, imbalance_factor: float):
    """The published row for one cell, or None."""
    same = published[(published["method"] == method) & (published["dataset"] == dataset)]
    exact = same[same["imbalance_factor"] == imbalance_factor]
    if len(exact):
        return exact.iloc[0]
    natural = same[same["imbalance_factor"].isna()]
    return natural.iloc[0] if len(natural) else None
