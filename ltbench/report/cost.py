"""What each spec cost to run: wall time, throughput and memory per device."""

import pandas as pd

from .aggregate import row_order
from .formats import dataset_name, fmt_device, fmt_duration, fmt_factor, fmt_number, shown_label
from .model import Section, Table


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
        order = sorted(range(len(data)), key=lambda i: (*row_order(data.iloc[i]),
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
