"""Published top-1 accuracies shipped with the package (published.csv), each with its source.

One row per published number: the method and cell under ltbench's names, the accuracy (an
error rate in the paper is stored as 100 - error), where it is printed (paper, table, row and
column), the protocol behind it (backbone, epochs, the settings in `params`, the codebase),
which epoch the source reports (`selection`), and whether the number was checked against the
primary text (`confirmed`). A number that was not seen in its paper's own table stays
unconfirmed: a lead, never compared.
"""

import json
import math
from importlib import resources

import pandas as pd

COLUMNS = ["method", "dataset", "imbalance_factor", "top1", "source", "backbone", "epochs",
           "code", "selection", "confirmed", "profile", "params", "mismatch", "note"]
# Which epoch a source reports, and the ltbench column measured the same way:
#   best_on_test  the best test accuracy over the evaluated epochs (the LDAM-DRW code's
#                 "Best Prec@1"): ltbench's top1_best
#   last_epoch    the model after the last epoch: ltbench's top1
#   best_on_val   the epoch with the best accuracy on a separate validation split
#                 (classifier-balancing): ltbench's top1_bestval, the test accuracy at the
#                 epoch best on its own validation split
#   unknown       the source does not say: compared with top1, the headline
SELECTIONS = {"best_on_test": "top1_best", "last_epoch": "top1", "best_on_val": "top1_bestval",
              "unknown": "top1"}
SELECTION_NAMES = {"best_on_test": "best test epoch", "last_epoch": "last epoch",
                   "best_on_val": "best validation epoch", "unknown": "not stated"}


def load_published() -> pd.DataFrame:
    """Every published figure (published.csv), typed.

    An empty imbalance factor means the dataset's natural distribution (iNaturalist,
    ImageNet-LT, Places-LT): the figure then matches a run of that dataset at any factor.
    `params` is parsed into a dict (the settings the figure was obtained with, in ltbench's
    names); `confirmed` into a bool; `epochs` stays text ("200", or "13k iterations").
    """
    with resources.files("ltbench.report").joinpath("published.csv").open("r") as f:
        table = pd.read_csv(f, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"published.csv lacks the column(s) {', '.join(missing)}")
    table = table[COLUMNS].copy()
    table["imbalance_factor"] = pd.to_numeric(table["imbalance_factor"].replace("", None))
    table["top1"] = pd.to_numeric(table["top1"])
    confirmed = table["confirmed"].str.strip().str.lower()
    bad = sorted(set(confirmed) - {"yes", "no"})
    if bad:
        raise ValueError(f"published.csv: confirmed must be yes or no, not {', '.join(bad)}")
    table["confirmed"] = confirmed.eq("yes")
    bad = sorted(set(table["selection"]) - set(SELECTIONS))
    if bad:
        raise ValueError(f"published.csv: unknown selection rule(s) {', '.join(bad)}")
    table["params"] = [json.loads(p) if p.strip() else {} for p in table["params"]]
    return table


def matches(published: pd.DataFrame, method: str, dataset: str, imbalance_factor: float) -> pd.DataFrame:
    """All published rows for one cell, in file order. A row with no imbalance factor (a
    natural distribution) matches the dataset at any factor."""
    same = published[(published["method"] == method) & (published["dataset"] == dataset)]
    exact = same["imbalance_factor"] == imbalance_factor
    return same[exact | same["imbalance_factor"].isna()]


def lookup(published: pd.DataFrame, method: str, dataset: str, imbalance_factor: float):
    """The published row for one cell, or None: the first confirmed one, else the first lead."""
    rows = matches(published, method, dataset, imbalance_factor)
    if not len(rows):
        return None
    confirmed = rows[rows["confirmed"]]
    return (confirmed if len(confirmed) else rows).iloc[0]


def references_for(published: pd.DataFrame, run: dict) -> pd.DataFrame:
    """The published rows a run (an aggregated result row as a dict) is set beside. A
    paper-protocol run: every row of its cell, compared or shown apart. Any other run: the
    confirmed rows of its cell whose protocol it has, so that a run set to match a figure
    (CB-focal's beta and gamma per cell, say, which labels it custom) is compared with it."""
    rows = matches(published, run["method"], run["dataset"], run["imbalance_factor"])
    if run.get("preset") == "paper":
        return rows
    return rows[[ref["confirmed"] and has_protocol(run, ref) for ref in rows.to_dict("records")]]


def has_protocol(run: dict, ref) -> bool:
    """Whether a run was set up as the figure `ref` was: it records every setting the row
    names (backbone, epochs, profile, params), with the row's value, and nothing else the row
    names (its loss, code base, data split: `mismatch`) differs."""
    try:
        params = json.loads(run.get("params_key") or "{}")
    except (TypeError, ValueError):
        return False
    recorded = all(key in params for key in ref["params"]) and all(
        not ref[key] or (isinstance(run.get(key), str) or pd.notna(run.get(key))) for key in ("backbone", "epochs"))
    return recorded and not protocol_differences(ref, run)


def protocol_differences(ref, run) -> list[str]:
    """How a run's protocol differs from the one behind a published figure, in words; empty
    when nothing recorded differs. `ref` is a published row, `run` an aggregated result row
    as a dict (backbone, epochs, profile, params_key). A setting the run does not record
    counts as unknown, not as a difference."""
    found = [ref["mismatch"]] if ref["mismatch"] else []
    if ref["backbone"] and str(run["backbone"]) != ref["backbone"]:
        found.append(f"backbone {run['backbone']} vs {ref['backbone']}")
    if ref["epochs"] and str(_whole(run["epochs"])) != ref["epochs"]:
        found.append(f"epochs {_whole(run['epochs'])} vs {ref['epochs']}")
    profile = run.get("profile")
    if ref["profile"] and isinstance(profile, str) and profile and profile != ref["profile"]:
        found.append(f"profile {profile} vs {ref['profile']}")
    try:
        params = json.loads(run.get("params_key") or "{}")
    except (TypeError, ValueError):
        params = {}
    for key, value in ref["params"].items():
        if key in params and not _same(params[key], value):
            found.append(f"{key} {_show(params[key])} vs {_show(value)}")
    return found


def _whole(value):
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return int(number) if number.is_integer() else number


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-9)
    return a == b


def _show(value) -> str:
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return f"{value:g}" if isinstance(value, float) else str(value)
