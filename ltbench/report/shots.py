"""Many / medium / few, recomputed from each run's per-class counts under the rule a report
asks for: a reporting choice, not a run setting, so changing it never retrains anything."""

import numpy as np
import pandas as pd

from ltbench.data.profiles import SHOT_RULES, many_medium_few

from .names import shot_rule

GROUPS = ("many", "medium", "few")
# Each rule's thresholds in words, for captions (the rules themselves: profiles.many_medium_few).
THRESHOLDS = {"cb": ("more than 100", "20 to 100", "fewer than 20"),
              "oltr": ("100 or more", "21 to 99", "20 or fewer")}


def describe_rule(rule: str) -> str:
    """"cb rule: many, more than 100 training images; medium, 20 to 100; few, fewer than 20"."""
    if rule == "terciles":
        return ("terciles rule: classes sorted by training images (equal counts by class "
                "index) and split into three near-equal thirds, a larger third first: Many, "
                "the head third; Medium, the middle; Few, the tail")
    if rule not in THRESHOLDS:
        return f"{rule} rule"
    many, medium, few = THRESHOLDS[rule]
    return (f"{rule} rule: Many, {many} training images; Medium, {medium}; Few, {few}")


def regroup(runs: pd.DataFrame, per_class: dict[str, pd.DataFrame], rule: str | None = None) -> pd.DataFrame:
    """`runs` with many/medium/few, n_many/n_medium/n_few and mmf_convention under `rule`
    (None: each dataset's own). A run recorded under that rule keeps its values (computed from
    the same counts); one without per-class counts is left empty under another."""
    if rule is not None and rule not in SHOT_RULES:
        raise ValueError(f"unknown many/medium/few rule '{rule}' (known: {', '.join(SHOT_RULES)})")
    runs = runs.copy()
    for i, run in runs.iterrows():
        wanted = rule or shot_rule(run["dataset"])
        if run.get("mmf_convention") == wanted:
            continue  # recorded under this rule, from the same counts
        table = per_class.get(run["run_id"])
        if table is None:
            if run.get("mmf_convention"):
                runs.loc[i, list(GROUPS) + [f"n_{g}" for g in GROUPS]] = np.nan
                runs.loc[i, "mmf_convention"] = wanted
            continue
        # class order: the terciles rule breaks equal counts by class index
        table = table.sort_values("class")
        groups = np.array(many_medium_few(table["n_train"].tolist(), wanted))
        with np.errstate(invalid="ignore", divide="ignore"):
            accuracy = 100.0 * table["correct"].to_numpy(float) / table["total"].to_numpy(float)
        for group in GROUPS:
            members = groups == group
            runs.loc[i, group] = float(np.nanmean(accuracy[members])) if members.any() else np.nan
            runs.loc[i, f"n_{group}"] = int(members.sum())
        runs.loc[i, "mmf_convention"] = wanted
    return runs
