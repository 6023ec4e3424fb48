"""Which runs a report reads (the filters) and the table row each one lands in (its label).

A table row is a *label*: the method name, plus whatever settings tell its specs apart.
Runs are averaged only when their whole spec, apart from the seed, is equal.
"""

import hashlib
import json
import math

import pandas as pd

from .load import LeftOut

# Everything that defines a run except its seed: equal on all of these = seeds of one spec.
# n_train stands in for the spec's head-class size (n_max), which result.csv does not carry.
SPEC_COLUMNS = ["method", "dataset", "imbalance_factor", "profile", "backbone", "epochs",
                "batch_size", "preset", "mmf_convention", "n_train", "params_key"]
# The spec columns that are settings (not params) and so may appear in a label.
SETTING_COLUMNS = ["preset", "profile", "backbone", "epochs", "batch_size", "mmf_convention",
                   "n_train"]
_MISSING = object()


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
    shown = [f"{k}={fmt_setting(v)}" for k in keys if (v := _setting(run, k)) is not _MISSING and v != ""]
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


def fmt_setting(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict, bool)) or value is None:
        return json.dumps(value, separators=(",", ":"))
    return str(value)
