"""What the saved test-set predictions (predictions.npz) tell beyond accuracy: how well the
confidence matches the accuracy (expected calibration error, a reliability diagram), and,
for datasets of up to 10 classes, which classes are taken for which (confusion matrices).
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns

from .load import LeftOut
from .figures import legend, panel_grid, save_figure
from .render import FigureFile
from .aggregate import cell_order, grid, in_cell, table_cells
from .formats import PM, dataset_name, fmt_factor, fmt_mean_std, plural, shown_label
from .model import Section, Table

ECE_BINS = 15  # Guo et al. 2017's choice, which most calibration tables since follow
CONFUSION_MAX_CLASSES = 10  # beyond this a confusion matrix is too dense to read
ARRAYS = ("label", "predicted", "confidence")  # what a predictions file must hold


def ece_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> pd.DataFrame:
    """Per equal-width confidence bin ((m-1)/M, m/M], the first also holding 0: how many
    images, how many of them correct, and the sum of their confidences."""
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    return pd.DataFrame({
        "bin": np.arange(bins),
        "count": np.bincount(index, minlength=bins),
        "correct": np.bincount(index, weights=correct.astype(float), minlength=bins),
        "confidence_sum": np.bincount(index, weights=confidence.astype(float), minlength=bins)})


def expected_calibration_error(confidence, correct, bins: int = ECE_BINS) -> float:
    """ECE = sum over bins of |B_m| / n * |accuracy(B_m) - mean confidence(B_m)|, with
    `bins` equal-width bins of the top-class confidence (Naeini et al. 2015; Guo et al.
    2017), as a fraction (0 to 1)."""
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=bool)
    if not len(confidence):
        return float("nan")
    table = ece_bins(confidence, correct, bins)
    filled = table[table["count"] > 0]
    gap = (filled["correct"] - filled["confidence_sum"]).abs()  # = |B| * |acc - conf|
    return float(gap.sum() / len(confidence))


def read_predictions(path: Path, n_classes) -> dict:
    """The arrays of a predictions file, checked; a ValueError says what is wrong."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"unreadable predictions file ({error})") from None
    missing = [a for a in ARRAYS if a not in arrays]
    if missing:
        raise ValueError(f"missing arrays {', '.join(missing)} (it holds "
                         f"{', '.join(sorted(arrays)) or 'none'})")
    label, predicted, confidence = (arrays[a] for a in ARRAYS)
    if not (label.ndim == predicted.ndim == confidence.ndim == 1
            and len(label) == len(predicted) == len(confidence) and len(label)):
        raise ValueError("label, predicted and confidence must be non-empty 1-D arrays of one "
                         f"length (shapes {label.shape}, {predicted.shape}, {confidence.shape})")
    if not (np.issubdtype(label.dtype, np.integer) and np.issubdtype(predicted.dtype, np.integer)):
        raise ValueError(f"label and predicted must be integers (dtypes {label.dtype}, "
                         f"{predicted.dtype})")
    limit = int(n_classes) if n_classes and not pd.isna(n_classes) else None
    if min(label.min(), predicted.min()) < 0 or (
            limit is not None and max(label.max(), predicted.max()) >= limit):
        raise ValueError(f"class indices outside 0..{limit - 1 if limit else 'n'} "
                         f"(found {min(label.min(), predicted.min())} to "
                         f"{max(label.max(), predicted.max())})")
    confidence = confidence.astype(float)
    if not np.isfinite(confidence).all() or confidence.min() < 0 or confidence.max() > 1:
        raise ValueError("confidence must be probabilities between 0 and 1")
    return {"label": label.astype(int), "predicted": predicted.astype(int),
            "confidence": confidence}


@dataclass
class Calibration:
    """What the report takes from the predictions files, one run at a time (the arrays
    themselves are not kept: a sweep may hold hundreds)."""
    per_run: pd.DataFrame  # run_id, label, method, dataset, IF, profile, seed, ece, ...
    bins: pd.DataFrame  # run_id + ece_bins' columns, to pool a reliability diagram
    confusion: dict = field(default_factory=dict)  # run_id -> class x class counts
    left_out: list = field(default_factory=list)  # LeftOut for unusable files


RUN_COLUMNS = ["run_id", "label", "method", "dataset", "imbalance_factor", "profile", "seed",
               "n_images", "accuracy", "mean_confidence", "ece"]


def collect(runs: pd.DataFrame, predictions: dict) -> Calibration:
    """ECE, reliability bins and (up to CONFUSION_MAX_CLASSES classes) confusion counts of
    every labelled run with a predictions file."""
    records, bins, confusion, left_out = [], [], {}, []
    for run in runs[runs["run_id"].isin(predictions)].itertuples():
        path = predictions[run.run_id]
        try:
            arrays = read_predictions(path, run.n_classes)
        except ValueError as error:
            left_out.append(LeftOut(path.as_posix(), "skipped file",
                                    f"{error} (the run still counts; only its calibration and "
                                    "confusion matrix are missing)", run.method, run.dataset,
                                    run.imbalance_factor))
            continue
        correct = arrays["label"] == arrays["predicted"]
        records.append(dict(
            run_id=run.run_id, label=run.label, method=run.method, dataset=run.dataset,
            imbalance_factor=run.imbalance_factor, profile=run.profile, seed=run.seed,
            n_images=len(correct), accuracy=100 * correct.mean(),
            mean_confidence=100 * arrays["confidence"].mean(),
            ece=100 * expected_calibration_error(arrays["confidence"], correct)))
        bins.append(ece_bins(arrays["confidence"], correct).assign(run_id=run.run_id))
        n_classes = _n_classes(run.n_classes, arrays)
        if n_classes <= CONFUSION_MAX_CLASSES:
            confusion[run.run_id] = np.bincount(arrays["label"] * n_classes + arrays["predicted"],
                                                minlength=n_classes ** 2).reshape(n_classes, n_classes)
    per_run = pd.DataFrame(records, columns=RUN_COLUMNS)
    bins_table = (pd.concat(bins, ignore_index=True) if bins else
                  pd.DataFrame(columns=["bin", "count", "correct", "confidence_sum", "run_id"]))
    return Calibration(per_run, bins_table, confusion, left_out)


def _n_classes(recorded, arrays) -> int:
    seen = int(max(arrays["label"].max(), arrays["predicted"].max())) + 1
    return seen if recorded is None or pd.isna(recorded) else max(int(recorded), seen)


# --- the table --------------------------------------------------------------------------

def ece_section(calibration: Calibration, labels: list[str]) -> Section | None:
    """Methods x (dataset, IF): ECE (%) mean +- std over the seeds that saved predictions;
    where no run did, a section that says which command fills it. `labels`: the table rows in
    the main table's order."""
    per_run = calibration.per_run
    if not len(per_run):
        return Section("calibration", "Calibration", [], pd.DataFrame(columns=["label", "ece_mean"]),
                       intro="No run saved its test-set predictions, so there is no calibration to "
                             "show: `ltbench evaluate --results-dir RESULTS` adds them to finished runs "
                             "from their checkpoints without training (or train with `--set "
                             "save_predictions=true`).")
    groups = per_run.groupby(["label", "dataset", "imbalance_factor"], dropna=False, sort=False)
    agg = groups.agg(seeds=("run_id", "size"), ece_mean=("ece", "mean"),
                     ece_std=("ece", lambda v: v.std(ddof=1)),
                     accuracy_mean=("accuracy", "mean"),
                     mean_confidence_mean=("mean_confidence", "mean")).reset_index()
    agg["seed_list"] = [" ".join(f"{s:g}" for s in sorted(g["seed"])) for _, g in groups]
    agg["run_ids"] = [tuple(g.sort_values("seed")["run_id"]) for _, g in groups]
    agg["method"] = [g["method"].iloc[0] for _, g in groups]
    cells = table_cells(agg)
    rows_of = [label for label in labels if label in set(agg["label"])]
    rows, sources = [[shown_label(label)] for label in rows_of], {}
    same_n = agg["seeds"].nunique() == 1
    for i, j, _, _, _, r in grid(agg, rows_of, cells):
        if r is None:
            rows[i].append("")
            continue
        sources[(i, j)] = r.run_ids
        text = fmt_mean_std(r.ece_mean, r.ece_std)
        rows[i].append(text if same_n else f"{text} (n={r.seeds})")
    seeds = (f"{plural(agg['seeds'].iloc[0], 'seed')} in every cell" if same_n
             else "n = number of seeds with predictions")
    groups_row = [("", 1)]
    for dataset, _ in cells:
        if groups_row[-1][0] == dataset_name(dataset):
            groups_row[-1] = (groups_row[-1][0], groups_row[-1][1] + 1)
        else:
            groups_row.append((dataset_name(dataset), 1))
    table = Table(
        header=["Method"] + [f"IF {fmt_factor(f)}" for _, f in cells], rows=rows,
        groups=groups_row, sources=sources, title="Expected calibration error (%, lower is better)",
        notes=[f"ECE on the test set: the top-class confidences (max softmax probability) in "
               f"{ECE_BINS} equal-width bins over [0, 1]; ECE = \u03a3 |bin| / N \u00d7 "
               "|accuracy of the bin \u2212 its mean confidence| (Guo et al. 2017), in %. "
               "Mean" + PM + f"sample std over the seeds that saved predictions ({seeds}; "
               "a single seed has no \u00b1). Blank: no saved predictions (`ltbench evaluate` "
               "adds them to finished runs)."])
    data = agg[["label", "method", "dataset", "imbalance_factor", "seeds", "seed_list",
                "ece_mean", "ece_std", "accuracy_mean", "mean_confidence_mean"]]
    order = sorted(range(len(data)), key=lambda i: (rows_of.index(data.iloc[i]["label"]),
                                                     *cell_order(data.iloc[i])))
    return Section("calibration", "Calibration", [table], data.iloc[order].reset_index(drop=True))


# --- figures ----------------------------------------------------------------------------

def reliability_diagram(calibration: Calibration, colours: dict, out_dir: Path) -> FigureFile | None:
    """Accuracy against mean confidence per bin, seeds pooled; one panel per (dataset, IF)."""
    per_run = calibration.per_run
    if not len(per_run):
        return None
    bins = calibration.bins.merge(per_run[["run_id", "label", "dataset", "imbalance_factor"]],
                                  on="run_id")
    cells = table_cells(per_run)
    fig, axes = panel_grid(len(cells), 4.2, 4.0)
    shown = set()
    for ax, (dataset, factor) in zip(axes, cells):
        here = in_cell(bins, dataset, factor)
        pooled = here.groupby(["label", "bin"], sort=False)[["count", "correct",
                                                            "confidence_sum"]].sum()
        for label in colours:
            if label not in pooled.index.get_level_values(0):
                continue
            line = pooled.loc[label]
            line = line[line["count"] > 0]
            ax.plot(100 * line["confidence_sum"] / line["count"],
                    100 * line["correct"] / line["count"], color=colours[label], marker="o",
                    markersize=3, linewidth=1.3)
            shown.add(label)
        ax.plot([0, 100], [0, 100], color="0.5", linestyle="--", linewidth=1)
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        ax.set_aspect("equal")
        ax.set_xlabel("Mean confidence in the bin (%)")
        ax.set_ylabel("Accuracy in the bin (%)")
        ax.set_title(f"{dataset_name(dataset)}, IF {fmt_factor(factor)}")
    legend(fig, colours, shown, marker="o")
    return save_figure(fig, out_dir, "reliability", "Reliability diagram",
                 f"Reliability diagram: test images in {ECE_BINS} equal-width bins of top-class "
                 "confidence, seeds pooled; a point per non-empty bin at its mean confidence and "
                 "accuracy. On the dashed diagonal a method is calibrated; below it, "
                 "overconfident.", "calibration")


def confusion_matrices(calibration: Calibration, per_class: dict, colours: dict,
                       out_dir: Path) -> list[FigureFile]:
    """Per (dataset, IF, profile) of at most CONFUSION_MAX_CLASSES classes: a row-normalised
    confusion matrix per table row, the mean over its seeds."""
    per_run = calibration.per_run[calibration.per_run["run_id"].isin(calibration.confusion)]
    figures = []
    groups = per_run.groupby(["dataset", "imbalance_factor", "profile"], dropna=False)
    for (dataset, factor, profile), cell in sorted(groups, key=lambda g: (
            cell_order({"dataset": g[0][0], "imbalance_factor": g[0][1]}), str(g[0][2]))):
        labels = [label for label in colours if label in set(cell["label"])]
        n = max(calibration.confusion[r].shape[0] for r in cell["run_id"])
        names = _class_names(cell["run_id"], per_class, n)
        fig, axes = panel_grid(len(labels), 3.2 + 0.22 * n, 3.0 + 0.2 * n)
        seeds = []
        for ax, label in zip(axes, labels):
            ids = cell.loc[cell["label"] == label, "run_id"]
            seeds.append(len(ids))
            matrix = np.mean([_row_normalised(calibration.confusion[r], n) for r in ids], axis=0)
            sns.heatmap(100 * matrix, ax=ax, vmin=0, vmax=100, cmap="Blues", cbar=False,
                        annot=True, fmt=".0f", annot_kws={"fontsize": 7}, square=True,
                        xticklabels=names, yticklabels=names, linewidths=0.3, linecolor="white")
            ax.set_title(shown_label(label) + (f" ({plural(len(ids), 'seed')})"
                                               if len(set(seeds)) > 1 or len(ids) > 1 else ""),
                         fontsize=10)
            ax.set_xlabel("Predicted class")
            ax.set_ylabel("True class")
            if max(map(len, names)) > 3:  # long names slant, each ending under its column
                ax.set_xticklabels(names, rotation=40, ha="right", rotation_mode="anchor")
            ax.tick_params(axis="y", labelrotation=0)
            ax.grid(False)
        plain = profile in ("exp", "") or pd.isna(profile)
        title = (f"{dataset_name(dataset)}, IF {fmt_factor(factor)}"
                 + ("" if plain else f", {profile} profile"))
        name = f"confusion_{dataset}_if{fmt_factor(factor)}" + ("" if plain else f"_{profile}")
        named = any(not str(c).isdigit() for c in names)
        figures.append(save_figure(fig, out_dir, name, f"Confusion matrices: {title}",
                             f"Confusion matrices on the test set ({title}): row = true class, "
                             "column = predicted class, each row normalised to 100 % (the "
                             "diagonal is the per-class accuracy), mean over the seeds that "
                             "saved predictions; classes "
                             + ("by name" if named else "by index (per_class.csv names none)")
                             + ", in class-index order.", "calibration"))
    return figures


def _row_normalised(counts: np.ndarray, n: int) -> np.ndarray:
    padded = np.zeros((n, n))
    padded[:counts.shape[0], :counts.shape[1]] = counts
    totals = padded.sum(axis=1, keepdims=True)
    return np.divide(padded, totals, out=np.zeros_like(padded), where=totals > 0)


def _class_names(run_ids, per_class: dict, n: int) -> list[str]:
    """Class names from any of the runs' per_class.csv (its `name` column), else indices."""
    for run_id in run_ids:
        table = per_class.get(run_id)
        if table is not None and "class_name" in table and table["class_name"].notna().all():
            names = table.sort_values("class")["class_name"].astype(str).tolist()
            if len(names) == n:
                return names
    return [str(c) for c in range(n)]
