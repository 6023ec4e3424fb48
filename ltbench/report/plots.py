"""The report's figures: accuracy against imbalance, many / medium / few bars, per-class
accuracy, the feature-loss memory curve and the critical-difference diagram; `draw_all`
also draws the training curves (curves) and the calibration figures (calibration)."""

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

from ltbench.file_modes import make_dirs

from . import calibration as calibration_figures, curves
from .aggregate import cell_order, in_cell, table_cells
from .figures import label_colours, legend, panel_grid, save_figure
from .formats import dataset_name, fmt_device, fmt_factor, shown_label
from .model import FigureFile

COUNT_GREY = "0.88"
CATEGORICAL_MAX = 30  # up to this many classes, each is a named category on the x axis
_STYLE = {"axes.spines.top": False, "axes.spines.right": False}


def draw_all(agg, runs, per_class, bench, out_dir: Path, ranking=None, history=None,
             calibration=None) -> list[FigureFile]:
    """`ranking`: the top-1 `stats.Ranking` for the critical-difference diagram (None: none);
    `history`: history.csv by run id, for the training curves; `calibration`: a
    `calibration.Calibration`, for the reliability diagram and confusion matrices."""
    make_dirs(out_dir)
    colours = label_colours(agg["label"])
    history = history or {}
    with sns.axes_style("whitegrid", _STYLE), sns.plotting_context("notebook", font_scale=0.9):
        figures = [accuracy_vs_imbalance(agg, colours, out_dir),
                   many_medium_few_bars(agg, colours, out_dir),
                   *per_class_accuracy(agg, runs, per_class, colours, out_dir),
                   *curves.training_curves(runs, history, colours, out_dir),
                   *curves.component_curves(runs, history, colours, out_dir),
                   memory_curve(bench, out_dir)]
        if calibration is not None:
            figures += [calibration_figures.reliability_diagram(calibration, colours, out_dir),
                        *calibration_figures.confusion_matrices(calibration, per_class, colours,
                                                                out_dir)]
    figures.append(critical_difference(ranking, out_dir))
    return [f for f in figures if f is not None]


def critical_difference(ranking, out_dir) -> FigureFile | None:
    """Demšar's diagram of the top-1 average ranks, methods by their display names; only
    where Friedman ran and rejects equal ranks, as the Nemenyi test that draws it assumes."""
    from .cd_diagram import cd_figure
    from .ranks import cd_caption

    if ranking is None or not ranking.rejects:
        return None
    ranks = ranking.average_ranks.rename(index=shown_label)
    fig = cd_figure(ranks, ranking.cd)
    return save_figure(fig, out_dir, "critical_difference", "Critical-difference diagram (top-1)",
                 cd_caption(ranking), "ranking")


def accuracy_vs_imbalance(agg, colours, out_dir) -> FigureFile | None:
    """Top-1 against imbalance factor, one panel per dataset; only datasets with 2+ factors."""
    datasets = [d for d in dict.fromkeys(dataset for dataset, _ in table_cells(agg))
                if agg.loc[agg["dataset"] == d, "imbalance_factor"].nunique() > 1]
    if not datasets:
        return None
    fig, axes = panel_grid(len(datasets), 4.4, 3.4)
    shown = set()
    for ax, dataset in zip(axes, datasets):
        rows = agg[agg["dataset"] == dataset].sort_values("imbalance_factor")
        for label, line in rows.groupby("label", sort=False):
            ax.errorbar(line["imbalance_factor"], line["top1_mean"],
                        yerr=line["top1_std"].fillna(0), color=colours[label], marker="o",
                        markersize=4, capsize=3, linewidth=1.5)
            shown.add(label)
        factors = sorted(rows["imbalance_factor"].dropna().unique())
        ax.set_xscale("log")
        ax.set_xticks(factors, [fmt_factor(f) for f in factors])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_title(dataset_name(dataset))
        ax.set_xlabel("Imbalance factor (log scale)")
        ax.set_ylabel("Top-1 accuracy (%)")
    legend(fig, colours, shown, marker="o")
    return save_figure(fig, out_dir, "accuracy_vs_imbalance", "Top-1 accuracy against imbalance factor",
                 "Top-1 accuracy (%) at the last epoch against the imbalance factor "
                 "(n_max / n_min, log scale); error bars: sample std over seeds.", "main")


def many_medium_few_bars(agg, colours, out_dir) -> FigureFile | None:
    cells = table_cells(agg)
    if not cells:
        return None
    groups = ["many", "medium", "few", "top1"]
    fig, axes = panel_grid(len(cells), 4.8, 3.4)
    shown = set()
    for ax, (dataset, factor) in zip(axes, cells):
        cell = in_cell(agg, dataset, factor)
        width = 0.8 / len(cell)
        for k, r in enumerate(cell.itertuples()):
            x = np.arange(len(groups)) - 0.4 + width * (k + 0.5)
            means = np.array([getattr(r, f"{g}_mean") for g in groups], dtype=float)
            stds = np.array([getattr(r, f"{g}_std") for g in groups], dtype=float)
            drawn = ~np.isnan(means)  # an empty group gets no bar, not a bar at 0
            ax.bar(x[drawn], means[drawn], width, yerr=np.nan_to_num(stds[drawn]),
                   color=colours[r.label], capsize=2, error_kw={"linewidth": 0.8})
            shown.add(r.label)
        ticks = []
        first = cell.iloc[0]
        for i, g in enumerate(groups):
            n = first["n_classes"] if g == "top1" else first[f"n_{g}"]
            name = "All" if g == "top1" else g.capitalize()
            ticks.append(name if pd.isna(n) else f"{name}\n({n:g})")
            if cell[f"{g}_mean"].isna().all():
                # An empty group gets a word, not a zero-height bar that reads as 0 %.
                ax.text(i, 2, "no classes", ha="center", va="bottom", fontsize=8,
                        color="0.4", rotation=90)
        ax.set_xticks(range(len(groups)), ticks)
        ax.grid(axis="x", visible=False)
        ax.set_ylim(0, 102)
        ax.set_ylabel("Accuracy (%)")
        ax.set_xlabel("Class group (number of classes)")
        ax.set_title(f"{dataset_name(dataset)}, IF {fmt_factor(factor)}")
    legend(fig, colours, shown)
    return save_figure(fig, out_dir, "many_medium_few", "Many / medium / few accuracy",
                 "Accuracy (%) on many-, medium- and few-shot classes and on all classes, "
                 "mean over seeds; error bars: sample std.", "many_medium_few")


def per_class_accuracy(agg, runs, per_class, colours, out_dir) -> list[FigureFile]:
    """Per-class accuracy with classes sorted head to tail; class counts on a log twin axis.

    Up to CATEGORICAL_MAX classes, each class is a category named on the axis: a marker per
    method at the seeds' mean, a bar over the seeds' range, methods side by side and no line
    joining classes. Beyond that, the axis is the classes' rank by training count and a
    moving average over it is a trend, drawn with the seeds' range as a band.
    """
    figures = []
    with_data = runs[runs["run_id"].isin(per_class)]
    groups = with_data.groupby(["dataset", "imbalance_factor", "profile"], dropna=False)
    for (dataset, factor, profile), cell in sorted(groups, key=lambda g: (
            cell_order({"dataset": g[0][0], "imbalance_factor": g[0][1]}), g[0][2])):
        fig = Figure(figsize=(9, 4), layout="constrained")
        ax = fig.subplots()
        present = dict(list(cell.groupby("label", sort=False)))
        by_label = {label: _per_class_seeds([per_class[r] for r in present[label]["run_id"]])
                    for label in colours if label in present}
        counts_of = next(iter(by_label.values()))
        n_classes = len(counts_of)
        categorical = n_classes <= CATEGORICAL_MAX
        # Hundreds of classes at 1-in-50 test images each is noise: show the trend.
        smooth = n_classes // 50 if n_classes > 200 else 1
        width = min(0.8, 0.16 * len(by_label))
        for k, (label, classes) in enumerate(by_label.items()):
            x = np.arange(len(classes))
            if categorical:
                offset = (k + 0.5) / len(by_label) * width - width / 2
                ax.errorbar(x + offset, classes["mean"],
                            yerr=[classes["mean"] - classes["low"], classes["high"] - classes["mean"]],
                            color=colours[label], marker="o", markersize=4, linestyle="none",
                            elinewidth=1.2, capsize=2, label=label)
            else:
                def trend(values):
                    return values.rolling(smooth, center=True, min_periods=1).mean()
                ax.plot(x, trend(classes["mean"]), color=colours[label], linewidth=1.3,
                        label=label)
                ax.fill_between(x, trend(classes["low"]), trend(classes["high"]),
                                color=colours[label], alpha=0.2, linewidth=0)
        counts = counts_of["n_train"].to_numpy()
        twin = ax.twinx()
        # One stepped area, not a bar per class: iNaturalist has 8,142 classes.
        twin.stairs(counts, np.arange(len(counts) + 1) - 0.5, fill=True, color=COUNT_GREY)
        twin.set_yscale("log")
        # Room below the rarest class, or its bar would vanish into the axis.
        twin.set_ylim(max(counts.min(), 1) / 2, counts.max() * 1.3)
        twin.yaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
        twin.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        twin.yaxis.set_minor_formatter(NullFormatter())
        twin.set_ylabel("Training images per class (log scale)")
        twin.grid(False)
        # Accuracy in front of the count bars.
        ax.set_zorder(twin.get_zorder() + 1)
        ax.patch.set_visible(False)
        _mark_groups(ax, agg, dataset, factor)
        ax.set_xlim(-0.5, len(counts) - 0.5)
        ax.set_ylim(-2, 102)
        named = counts_of["name"].ne(counts_of["class"].astype(str)).any()
        if categorical:
            long = counts_of["name"].str.len().max() > 4
            ax.set_xticks(range(n_classes), counts_of["name"], rotation=40 if long else 0,
                          ha="right" if long else "center")
            ax.grid(axis="x", visible=False)
            ax.set_xlabel(("Class" if named else "Class index")
                          + ", sorted by training images (most \u2192 fewest)")
        else:
            ax.set_xlabel("Classes ranked by training images (most \u2192 fewest)")
        ax.set_ylabel("Per-class test accuracy (%)")
        suffix = "" if profile in ("exp", "") else f", {profile} profile"
        title = f"{dataset_name(dataset)}, IF {fmt_factor(factor)}{suffix}"
        ax.set_title(title, pad=16)
        legend(fig, colours, set(by_label), marker="o" if categorical else "",
                line=not categorical, extra=[Patch(color=COUNT_GREY, label="Training images\n(right axis)")])
        name = f"per_class_{dataset}_if{fmt_factor(factor)}" + (
            "" if profile in ("exp", "") else f"_{profile}")
        if categorical:
            how = ("marker: mean over seeds, bar: range over seeds (lowest to highest); "
                   "methods side by side within each class, no line joining classes, "
                   f"which are categories ({'named' if named else 'by index: per_class.csv names none'})")
        else:
            how = ("line: mean over seeds" + (f", a moving average over {smooth} classes"
                                              if smooth > 1 else "")
                   + "; band: range over seeds, along classes ranked by training images")
        figures.append(save_figure(fig, out_dir, name, f"Per-class accuracy: {title}",
                             f"Per-class test accuracy (%) ({title}), classes sorted by "
                             f"training images; {how}; grey: training images per class "
                             "(log scale, right axis).", "per_class"))
    return figures


def _per_class_seeds(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """One row per class, head to tail: n_train, name, and the mean / lowest / highest
    accuracy over the seeds' per_class tables."""
    stacked = pd.concat(tables).assign(acc=lambda t: 100 * t["correct"] / t["total"])
    if "class_name" not in stacked:
        stacked["class_name"] = stacked["class"].astype(str)
    stacked["class_name"] = stacked["class_name"].fillna(stacked["class"].astype(str))
    classes = stacked.groupby("class").agg(
        n_train=("n_train", "first"), name=("class_name", "first"), mean=("acc", "mean"),
        low=("acc", "min"), high=("acc", "max"))
    classes = classes.reset_index().sort_values(["n_train", "class"], ascending=[False, True])
    classes["name"] = classes["name"].astype(str)
    return classes.reset_index(drop=True)


def _mark_groups(ax, agg, dataset, factor):
    """Dotted lines where many ends and few begins (classes are sorted by count)."""
    first = in_cell(agg, dataset, factor).iloc[0]
    if pd.isna(first["n_many"]) or pd.isna(first["n_medium"]):
        return
    many, medium = int(first["n_many"]), int(first["n_medium"])
    n_classes = 0 if pd.isna(first["n_classes"]) else int(first["n_classes"])
    for edge in {many, many + medium} - {0, n_classes}:
        ax.axvline(edge - 0.5, color="0.3", linestyle=":", linewidth=1)
    for name, start, size in [("many", 0, many), ("medium", many, medium),
                              ("few", many + medium, first["n_few"])]:
        if size and not pd.isna(size):
            ax.text(start + size / 2 - 0.5, 1.01, name, ha="center", va="bottom", fontsize=8,
                    color="0.3", transform=ax.get_xaxis_transform())


def memory_curve(bench: pd.DataFrame, out_dir) -> FigureFile | None:
    """Peak memory and step time of the SC and PSC feature losses against batch size."""
    if bench is None or not len(bench):
        return None
    data = bench.assign(loss=bench["loss"].map(lambda s: {"sc": "SC", "psc": "PSC"}.get(
        str(s).lower(), str(s)))).groupby(["loss", "device", "batch_size"], as_index=False)[
        ["peak_mem_mb", "step_ms"]].mean()
    panels = [("peak_mem_mb", "Peak memory (MB)")]
    if data["step_ms"].notna().any():
        panels.append(("step_ms", "Time per step (ms)"))
    fig, axes = panel_grid(len(panels), 4.6, 3.4)
    several_devices = data["device"].nunique() > 1
    hue_order = sorted(data["loss"].unique(), key=lambda name: (name != "SC", name))
    for ax, (column, ylabel) in zip(axes, panels):
        sns.lineplot(data=data, x="batch_size", y=column, hue="loss", hue_order=hue_order,
                     style="device" if several_devices else None, marker="o", ax=ax,
                     legend=ax is axes[0])
        sizes = sorted(data["batch_size"].unique())
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [f"{s:g}" for s in sizes])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("Batch size (log scale)")
        ax.set_ylabel(ylabel)
    handles, labels = axes[0].get_legend_handles_labels()
    axes[0].get_legend().remove()
    fig.legend(handles, labels, loc="outside right upper", frameon=False,
               title=None if several_devices else "Feature loss")
    devices = ", ".join(sorted(fmt_device(str(d)) for d in data["device"].unique()))
    return save_figure(fig, out_dir, "feature_loss_memory", "Feature-loss memory: SC vs PSC",
                 "Peak device memory and time per step of the supervised-contrastive (SC) "
                 "and prototype (PSC) feature losses against batch size; SC compares every "
                 f"pair in the batch, PSC each sample with one prototype per class ({devices}).",
                 "memory")
