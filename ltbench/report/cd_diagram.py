"""The critical-difference diagram of Demšar (2006, figure 1), laid out as Orange draws it.

Average ranks on one axis, best (rank 1) on the left; the better half of the methods is
named on the left, the rest on the right; a thick bar joins methods whose average ranks
differ by less than the Nemenyi critical difference (not significantly different), and a
bar of length CD sits above the axis for scale.
"""

import math

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from .stats import nemenyi_groups

ROW = 0.28  # inches per row of labels
AXIS_WIDTH = 4.0  # inches
FONT = 9


def cd_figure(average_ranks: pd.Series, cd: float, title: str = "") -> Figure:
    """`average_ranks`: method (display name) -> average rank, as `Ranking.average_ranks`.
    `cd` NaN draws the ranks without the CD bar or groups."""
    ranks = average_ranks.sort_values(kind="stable")
    names, values = list(ranks.index), list(ranks.to_numpy(dtype=float))
    k = len(names)
    low, high = 1, max(k, 2)
    groups = nemenyi_groups(ranks, cd)
    half = math.ceil(k / 2)
    left, right = names[:half], names[half:][::-1]  # right side: worst at the top row
    first_row = 0.5 + 0.2 * len(groups)
    rows = max(len(left), len(right))
    bottom = first_row + 0.45 * rows
    label = max((len(f"{n} ({r:.2f})") for n, r in zip(names, values)), default=0)
    margin = 0.3 + 0.065 * label  # inches each side, for the longest label
    width = AXIS_WIDTH + 2 * margin
    height = (bottom + 1.6) * ROW + (0.3 if title else 0)
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((margin / width, 0.05 / height, AXIS_WIDTH / width,
                       (height - 0.1 - (0.3 if title else 0)) / height))
    ax.set_axis_off()
    ax.set_xlim(low - 0.1, high + 0.1)
    ax.set_ylim(bottom + 0.1, -1.5)
    ax.plot([low, high], [0, 0], color="black", linewidth=1)
    for tick in range(low, high + 1):
        ax.plot([tick, tick], [0, -0.12], color="black", linewidth=1)
        ax.text(tick, -0.18, str(tick), ha="center", va="bottom", fontsize=FONT)
    if not math.isnan(cd):
        ax.plot([low, low + cd], [-1.0, -1.0], color="black", linewidth=1.2,
                solid_capstyle="butt")
        for end in (low, low + cd):
            ax.plot([end, end], [-1.08, -0.92], color="black", linewidth=1)
        ax.text(low + cd / 2, -1.12, f"CD = {cd:.2f}", ha="center", va="bottom",
                fontsize=FONT)
    # Label lines end just outside the axis; names sit in the margins.
    outside = blended_transform_factory(ax.transAxes, ax.transData)
    rank = dict(zip(names, values))
    for side, shown, edge, align in (("left", left, low - 0.1, "right"),
                                     ("right", right, high + 0.1, "left")):
        for i, name in enumerate(shown):
            y = first_row + 0.45 * i
            ax.plot([rank[name], rank[name], edge], [0, y, y], color="0.25", linewidth=0.9)
            ax.text(0 if side == "left" else 1, y, f" {name} ({rank[name]:.2f}) ",
                    transform=outside, ha=align, va="center", fontsize=FONT, clip_on=False)
    for j, group in enumerate(groups):
        y = 0.3 + 0.2 * j
        ax.plot([rank[group[0]] - 0.03, rank[group[-1]] + 0.03], [y, y], color="black",
                linewidth=3, solid_capstyle="round")
    if title:
        fig.suptitle(title, fontsize=FONT + 1, y=1 - 0.05 / height, va="top")
    return fig
