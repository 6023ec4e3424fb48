"""What every figure shares: one colour per table row, a grid of panels, the legend outside
the axes, and saving as PNG (for the page) and PDF (for the paper).

Figures are built on `matplotlib.figure.Figure` rather than pyplot, so no GUI backend is
ever touched and nothing is left open; legends sit outside the axes so they hide no data.
"""

import io
import math
from pathlib import Path

import numpy as np
import seaborn as sns
from matplotlib import font_manager, rcParams
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ltbench.file_modes import atomic_write_bytes

from .formats import shown_label
from .model import FigureFile

DPI = 150


def label_colours(labels) -> dict[str, tuple]:
    """One colour per table row, the same in every figure."""
    labels = list(dict.fromkeys(labels))
    name = "tab10" if len(labels) <= 10 else "tab20" if len(labels) <= 20 else "husl"
    return dict(zip(labels, sns.color_palette(name, len(labels))))


def save_figure(fig: Figure, out_dir: Path, name: str, title: str, caption: str,
                section: str) -> FigureFile:
    """Both files written whole (a killed report leaves the old figure or the new one) with
    the results store's modes."""
    png, pdf = out_dir / f"{name}.png", out_dir / f"{name}.pdf"
    for path, options in [(png, {"dpi": DPI}), (pdf, {})]:
        data = io.BytesIO()
        # Constrained layout already makes room for the outside legend; "tight" would redo it.
        fig.savefig(data, format=path.suffix[1:], **options)
        atomic_write_bytes(path, data.getvalue())
    return FigureFile(name, title, caption, section, png, pdf)


def panel_grid(n: int, width: float, height: float, ncols_max: int = 3):
    ncols = min(ncols_max, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def legend(fig: Figure, colours: dict, shown, title="Method", extra=(), marker=None,
           line=True):
    """Patches for bars; lines (with `marker`, "" for none) when `marker` is given, markers
    alone when `line` is False."""
    def handle(label):
        if marker is not None:
            return Line2D([], [], color=colours[label], marker=marker or None, markersize=4,
                          linestyle="-" if line else "none", label=shown_label(label))
        return Patch(color=colours[label], label=shown_label(label))
    handles = [handle(label) for label in colours if label in shown]
    widen_for_legend(fig, [h.get_label() for h in [*handles, *extra]] + [title])
    fig.legend(handles=[*handles, *extra], loc="outside right upper", title=title,
               frameon=False)


def widen_for_legend(fig: Figure, labels: list[str]) -> None:
    """Constrained layout makes room for a legend outside the panels by narrowing them, to
    nothing where labels are long (a tuned variant names its settings): the figure gains
    the legend's width instead, estimated from its longest label, so the panels keep theirs."""
    points = font_manager.FontProperties(size=rcParams["legend.fontsize"]).get_size_in_points()
    longest = max((len(label) for label in labels), default=0)
    # a marker or patch and padding (~0.6 in), ~0.55 em a character
    fig.set_figwidth(fig.get_figwidth() + 0.6 + 0.55 * points / 72 * longest)


