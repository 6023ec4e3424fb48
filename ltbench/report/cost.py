"""What each spec cost to run, per device: each stage's time and throughput apart, and a
total that counts every run once.

A two-stage method (cRT, LWS, tau-norm) starts from a stage-1 run of its own, often reused
from another row (cRT's stage 1 is a CE run): its result row's wall_s holds both stages and
its images/s mixes them. Here its stage 1 is that run's cost, shown beside it but counted in
the total only once, and its stage 2 is what it added.
"""

import pandas as pd

from .aggregate import row_order
from .formats import (dataset_name, fmt_device, fmt_duration, fmt_factor, fmt_number, plural,
                      shown_label)
from .model import Section, Table

COLUMNS = ["label", "method", "dataset", "imbalance_factor", "device", "runs", "stage1_s_mean",
           "stage1_images_per_s_mean", "stage2_s_mean", "stage2_images_per_s_mean",
           "own_s_total", "wall_s_mean", "peak_mem_mb_max", "stage1_run_ids"]


def stage_costs(runs: pd.DataFrame, all_runs: pd.DataFrame) -> pd.DataFrame:
    """Per run: stage1_s, stage1_images_per_s, stage2_s, stage2_images_per_s (NaN for a
    single-stage run, whose whole training is its stage 1) and own_s, the time this run
    itself trained (stage 2 only, for a two-stage run); starts_from, the stage-1 run's id
    ("" for none). `all_runs`: where the stage-1 runs'
    rows are looked up (their throughput), filtered or not."""
    recorded = pd.to_numeric(runs.get("stage1_wall_s"), errors="coerce")
    first_id = runs.get("stage1_run_id", pd.Series("", index=runs.index)).fillna("").astype(str)
    staged = first_id.ne("") & recorded.notna()
    first_speed = first_id.map(all_runs.drop_duplicates("run_id").set_index("run_id")["images_per_s"])
    stage2_s = (runs["wall_s"] - recorded).where(staged)
    # images of both stages, less the stage-1 run's, over stage 2's own time
    stage2_images = runs["images_per_s"] * runs["wall_s"] - first_speed * recorded
    return pd.DataFrame({
        "stage1_s": recorded.where(staged, runs["wall_s"]),
        "stage1_images_per_s": first_speed.where(staged, runs["images_per_s"]),
        "stage2_s": stage2_s,
        "stage2_images_per_s": (stage2_images / stage2_s).where(staged & (stage2_s > 0)),
        "own_s": stage2_s.where(staged, runs["wall_s"]),
        "starts_from": first_id.where(staged, ""),  # the stage-1 run, "" for none
    }, index=runs.index)


def cost_table(runs: pd.DataFrame, all_runs: pd.DataFrame | None = None) -> Section:
    """One row per (label, dataset, IF, device), seeds pooled; `all_runs` (default `runs`):
    every finished run, to find the stage-1 runs of two-stage rows."""
    all_runs = runs if all_runs is None else all_runs
    runs = pd.concat([runs, stage_costs(runs, all_runs)], axis=1)
    records, run_ids = [], []
    for _, g in runs.groupby(["label", "dataset", "imbalance_factor", "device"],
                             dropna=False, sort=False):
        first = g.iloc[0]
        run_ids.append(tuple(g.sort_values("seed")["run_id"]))
        records.append(dict(
            label=first["label"], method=first["method"], dataset=first["dataset"],
            imbalance_factor=first["imbalance_factor"], device=first["device"], runs=len(g),
            stage1_s_mean=g["stage1_s"].mean(),
            stage1_images_per_s_mean=g["stage1_images_per_s"].mean(),
            stage2_s_mean=g["stage2_s"].mean(),
            stage2_images_per_s_mean=g["stage2_images_per_s"].mean(),
            own_s_total=g["own_s"].sum(min_count=1), wall_s_mean=g["wall_s"].mean(),
            peak_mem_mb_max=g["peak_mem_mb"].max(),
            stage1_run_ids=" ".join(i for i in g["starts_from"] if i)))
    data = pd.DataFrame(records, columns=COLUMNS)
    if len(data):
        order = sorted(range(len(data)), key=lambda i: (*row_order(data.iloc[i]),
                                                        data.iloc[i]["device"]))
        data = data.iloc[order].reset_index(drop=True)
        run_ids = [run_ids[i] for i in order]
    rows = [[shown_label(r.label), dataset_name(r.dataset), fmt_factor(r.imbalance_factor),
             fmt_device(r.device), str(r.runs), fmt_duration(r.stage1_s_mean),
             fmt_number(r.stage1_images_per_s_mean, 0), fmt_duration(r.stage2_s_mean),
             fmt_number(r.stage2_images_per_s_mean, 0), fmt_duration(r.own_s_total),
             fmt_number(r.peak_mem_mb_max, 0)] for r in data.itertuples()]
    table = Table(
        header=["Method", "Dataset", "IF", "Device", "Runs", "Time / run", "Images/s",
                "Time / run", "Images/s", "Own time, all runs", "Peak memory (MB)"],
        groups=[("", 5), ("Stage 1", 2), ("Stage 2", 2), ("", 2)],
        rows=rows, title="Cost per run", sources={(i, None): ids for i, ids in enumerate(run_ids)},
        notes=["Means over the runs (seeds) on that device; peak memory is the largest over "
               "them (device memory on a GPU). A single-stage method has only stage 1.",
               "A two-stage method's stage 1 is the run it starts from (e.g. cRT's CE run, "
               "often reused): its time is that run's and is counted once, under its own row "
               "or in the total below; the method's own time is its stage 2.",
               total_line(runs, all_runs)])
    return Section("cost", "Cost", [table], data)


def total_line(runs: pd.DataFrame, all_runs: pd.DataFrame) -> str:
    """The compute behind the table, each run counted once: every row's own time, plus the
    stage-1 runs the rows start from that are not rows themselves."""
    shown = set(runs["run_id"])
    outside = runs[runs["starts_from"].ne("") & ~runs["starts_from"].isin(shown)]
    outside = outside.drop_duplicates("starts_from")
    total = runs["own_s"].sum() + outside["stage1_s"].sum()
    text = (f"Total: {fmt_duration(total)} of training over "
            f"{plural(len(runs) + len(outside), 'run')}, each counted once")
    if len(outside):
        text += (f" ({plural(len(outside), 'stage-1 run')} that two-stage rows start from "
                 f"but the table does not show: {fmt_duration(outside['stage1_s'].sum())})")
    return text + "."
