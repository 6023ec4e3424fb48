"""Training curves from each run's history.csv: top-1, training loss and learning rate per
epoch, and the loss components a method records (the hybrids' feature and classifier losses
and alpha; DRW's re-weighting switch), the mean over seeds with the seeds' range as a band.
"""

from pathlib import Path

import pandas as pd

from ltbench.results_schema import HISTORY_LEADING, HISTORY_TRAILING

from .figures import legend, panel_grid, save_figure
from .render import FigureFile
from .aggregate import cell_order
from .formats import dataset_name, fmt_factor, plural

# Columns every history has; the rest are what the method records.
COMMON = set(HISTORY_LEADING) | set(HISTORY_TRAILING)
PANELS = [("top1", "Top-1 accuracy (%)"), ("loss", "Training loss (mean over the epoch)"),
          ("lr", "Learning rate")]
# Known components first, in this order, with their axis names; others by their column name.
COMPONENT_TITLES = {"loss_feature": "Feature loss", "loss_classifier": "Classifier loss",
                    "alpha": "\u03b1 (weight of the feature loss)",
                    "drw": "DRW re-weighting (1 = on)"}
# On/off switches: drawn as steps, since a slope between two epochs would be a value never used.
STEP_COLUMNS = {"drw"}
MARKERS_UP_TO = 30  # points on a line: up to this many get a marker each


def no_history_line(runs: pd.DataFrame, history: dict) -> str | None:
    """The one line the report prints when it draws no curves, else None."""
    if runs["run_id"].isin(history).any():
        return None
    return ("No training curves: no run has a history.csv (runs of an ltbench older than "
            "per-epoch history).")


def training_curves(runs: pd.DataFrame, history: dict, colours: dict,
                    out_dir: Path) -> list[FigureFile]:
    """One figure per (dataset, IF, profile, stage): top-1, training loss and learning rate
    per epoch, a line per table row (the mean over its seeds) with the seeds' range as a
    band. Two-stage methods' stage-2 epochs get figures of their own: their epoch 1 is not a
    stage-1 run's epoch 1."""
    figures = []
    for (dataset, factor, profile, stage), cell, stacked in _cells(runs, history):
        panels = [(column, title) for column, title in PANELS
                  if column in stacked and stacked[column].notna().any()]
        fig, axes = panel_grid(len(panels), 4.4, 3.3)
        shown = _draw(axes, panels, stacked, colours)
        sparse = evaluated_epochs(stacked)
        if sparse and "top1" in dict(panels):
            # said on the figure itself, not only in the caption: a copied PNG keeps it
            axes[[c for c, _ in panels].index("top1")].set_title(
                f"evaluated at epochs {_epoch_list(sparse)} only", fontsize=8, color="0.3")
        legend(fig, colours, shown, marker="")
        name, title = _names("curves", dataset, factor, profile, stage)
        figures.append(save_figure(fig, out_dir, name, f"Training curves: {title}",
                                   f"Training curves ({title}): " + _how(cell) + " "
                                   + _evaluation_note(sparse) + " The training loss is each "
                                   "method's own objective, so its scale differs between "
                                   "methods." + _stage_note(stage), "curves"))
    return figures


def evaluated_epochs(stacked: pd.DataFrame) -> list[int] | None:
    """The epochs with a top-1, where the runs evaluated on only some of their epochs (the
    quick preset evaluates every 6th); None where every epoch was evaluated."""
    if "top1" not in stacked:
        return None
    epochs = sorted(stacked["epoch"].unique())
    evaluated = sorted(stacked.loc[stacked["top1"].notna(), "epoch"].unique())
    return [int(e) for e in evaluated] if len(evaluated) < len(epochs) else None


def _evaluation_note(sparse: list[int] | None) -> str:
    if not sparse:
        return "Top-1 at every epoch."
    return (f"Top-1 only where the runs evaluated on the test set, at epochs "
            f"{_epoch_list(sparse)} (the evaluate_every setting; the quick preset evaluates "
            "every 6th epoch), so its line joins those points and says nothing of the "
            "epochs between; loss and learning rate are every epoch.")


def _epoch_list(epochs: list[int]) -> str:
    shown = [str(e) for e in epochs]
    return ", ".join(shown) if len(shown) <= 6 else ", ".join(shown[:3] + ["\u2026"] + shown[-2:])


def component_curves(runs: pd.DataFrame, history: dict, colours: dict,
                     out_dir: Path) -> list[FigureFile]:
    """One figure per (dataset, IF, profile) where a method records loss components: a panel
    per component (the hybrids: feature loss, classifier loss, alpha)."""
    figures = []
    for (dataset, factor, profile, stage), cell, stacked in _cells(runs, history):
        components = [c for c in stacked.columns if c not in COMMON | {"label", "run_id"}
                      and stacked[c].notna().any()]
        if not components:
            continue
        known = [c for c in COMPONENT_TITLES if c in components]
        panels = [(c, COMPONENT_TITLES.get(c, c)) for c in known + sorted(set(components) - set(known))]
        fig, axes = panel_grid(len(panels), 4.4, 3.3)
        shown = _draw(axes, panels, stacked, colours)
        legend(fig, colours, shown, marker="")
        name, title = _names("components", dataset, factor, profile, stage)
        with_them = cell[cell["label"].isin(shown)]
        figures.append(save_figure(fig, out_dir, name, f"Loss components: {title}",
                             f"What the methods record per epoch ({title}): "
                             + ", ".join(t for _, t in panels) + "; "
                             + _how(with_them) + " Only methods that record a "
                             "component are drawn in its panel." + _stage_note(stage),
                             "curves"))
    return figures


def _cells(runs: pd.DataFrame, history: dict):
    """(dataset, IF, profile, stage), that cell's runs with a history, and their histories
    stacked (with label and run_id columns), in table order; stage is 2 for the runs of
    two-stage methods (their history is their stage 2's), 1 for the others."""
    with_history = runs[runs["run_id"].isin(history)]
    first = with_history.get("stage1_run_id", pd.Series("", index=with_history.index))
    with_history = with_history.assign(stage=first.fillna("").astype(str).ne("").map({True: 2, False: 1}))
    groups = with_history.groupby(["dataset", "imbalance_factor", "profile", "stage"], dropna=False)
    for key, cell in sorted(groups, key=lambda g: (
            cell_order({"dataset": g[0][0], "imbalance_factor": g[0][1]}), str(g[0][2]), g[0][3])):
        stacked = pd.concat([history[r.run_id].assign(label=r.label, run_id=r.run_id)
                             for r in cell.itertuples()], ignore_index=True)
        yield key, cell, stacked


def _draw(axes, panels, stacked: pd.DataFrame, colours: dict) -> set:
    """Per panel and label: the mean over seeds at each epoch, the seeds' range as a band."""
    shown = set()
    for ax, (column, title) in zip(axes, panels):
        for label in colours:
            rows = stacked[(stacked["label"] == label) & stacked[column].notna()]
            if not len(rows):
                continue
            by_epoch = rows.groupby("epoch")[column].agg(["mean", "min", "max"])
            epochs = by_epoch.index.to_numpy(float)
            ax.plot(epochs, by_epoch["mean"], color=colours[label], linewidth=1.4,
                    marker="o" if len(epochs) <= MARKERS_UP_TO else None, markersize=3,
                    drawstyle="steps-mid" if column in STEP_COLUMNS else "default")
            if rows["run_id"].nunique() > 1 and len(epochs) > 1:
                ax.fill_between(epochs, by_epoch["min"], by_epoch["max"], color=colours[label],
                                alpha=0.18, linewidth=0)
            elif rows["run_id"].nunique() > 1:  # one evaluated epoch: a band would be invisible
                ax.errorbar(epochs, by_epoch["mean"], color=colours[label], capsize=3,
                            yerr=[by_epoch["mean"] - by_epoch["min"], by_epoch["max"] - by_epoch["mean"]])
            shown.add(label)
        # every panel over the whole run, even one evaluated only at its last epoch
        first, last = stacked["epoch"].min(), stacked["epoch"].max()
        margin = max(0.5, 0.03 * (last - first))
        ax.set_xlim(first - margin, last + margin)
        ax.set_xlabel("Epoch")
        ax.set_ylabel(title)
        ax.xaxis.get_major_locator().set_params(integer=True)
        values = stacked[column].dropna()
        if column in ("lr", "loss") and len(values) and (values > 0).all() \
                and values.max() / values.min() > 50:
            ax.set_yscale("log")  # a decayed learning rate spans decades
            ax.set_ylabel(f"{title} (log scale)")
    return shown


def _how(cell: pd.DataFrame) -> str:
    """What a line and a band are, and how many seeds stand behind them."""
    seeds = cell.groupby("label")["run_id"].nunique()
    counts = (plural(int(seeds.iloc[0]), "seed") + " per method" if seeds.nunique() == 1
              else f"{int(seeds.min())} to {int(seeds.max())} seeds per method")
    return (f"line: mean over seeds; band: range over seeds (lowest to highest; a bar at a "
            f"single evaluated epoch), where a method has more than one ({counts}).")


def _stage_note(stage: int) -> str:
    if stage != 2:
        return ""
    return (" Stage 2 of two-stage methods: epoch 1 is the first epoch after their stage-1 "
            "run (drawn with the single-stage methods), not the start of training.")


def _names(kind: str, dataset, factor, profile, stage: int = 1) -> tuple[str, str]:
    plain = profile in ("exp", "") or pd.isna(profile)
    name = (f"{kind}_{dataset}_if{fmt_factor(factor)}" + ("" if plain else f"_{profile}")
            + ("_stage2" if stage == 2 else ""))
    title = (f"{dataset_name(dataset)}, IF {fmt_factor(factor)}"
             + ("" if plain else f", {profile} profile") + (", stage 2" if stage == 2 else ""))
    return name, title
