"""The runs and files a report did not use, and why."""

import pandas as pd

from .load import KINDS, RUN_KINDS, LeftOut
from .model import Section, Table


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
