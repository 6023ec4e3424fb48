"""`ltbench report --long`: every finished run's figures as one long table, a row per run
and metric, for pandas (`pivot_table`, `groupby`) and for collecting results across
benchmarks the way DomainBed's collect script does."""

from pathlib import Path

import pandas as pd

from ltbench.file_modes import atomic_write_bytes

FILE = "runs_long.csv"
# What identifies a run and its spec; the row label is the report's (`label_runs`).
RUN_COLUMNS = ["run_id", "label", "method", "dataset", "imbalance_factor", "profile",
               "backbone", "seed", "epochs", "batch_size", "preset", "params", "tag", "device",
               "stage1_run_id"]
# metric -> unit
METRICS = {"top1": "%", "top1_bestval": "%", "top1_best": "%", "many": "%", "medium": "%", "few": "%",
           "val_top1": "%", "wall_s": "s", "images_per_s": "images/s", "peak_mem_mb": "MB"}
CALIBRATION = {"ece": "%"}  # from predictions.npz, where the run saved them
# Which epoch a test figure is read at, in published.csv's selection words: top1_bestval at the
# epoch best on the validation split, top1_best at the best test epoch (a choice made on the
# test set, kept only to compare with papers that made it); the rest at the last epoch.
SELECTION = {"top1_bestval": "best_on_val", "top1_best": "best_on_test"}


def long_table(runs: pd.DataFrame, calibration=None) -> pd.DataFrame:
    """One row per (run, metric) with RUN_COLUMNS, metric, value, unit and the selection rule
    of the epoch it was read at (SELECTION). A metric a run has
    no value for (a shot group without classes, ECE without predictions) has no row."""
    runs = runs.drop_duplicates("run_id")
    wide = runs[[c for c in RUN_COLUMNS if c in runs] + list(METRICS)]
    if calibration is not None and len(calibration.per_run):
        wide = wide.merge(calibration.per_run[["run_id", "ece"]], on="run_id", how="left")
    units = {**METRICS, **CALIBRATION}
    measured = [m for m in units if m in wide]
    long = wide.melt(id_vars=[c for c in wide if c not in measured], value_vars=measured,
                     var_name="metric", value_name="value").dropna(subset=["value"])
    long["unit"] = long["metric"].map(units)
    long["selection"] = long["metric"].map(SELECTION).fillna("last_epoch")
    order = {m: i for i, m in enumerate(units)}
    return long.sort_values(["run_id", "metric"], key=lambda c: c.map(order) if c.name == "metric"
                            else c).reset_index(drop=True)


def write_long(out: Path, runs: pd.DataFrame, calibration=None) -> Path:
    path = Path(out) / FILE
    atomic_write_bytes(path, long_table(runs, calibration).to_csv(index=False).encode())
    return path
