"""The sweep's charts: each curve (groups against depth with interval bands, fp32 dashed), the heatmap of curves x
depth, and the Pareto scatter over every point. Registered with :func:`fairquant.report.figures.drawing`."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

from fairquant.report.document import Figure
from fairquant.report.figures import drawing
from fairquant.report.numbers import level

AXIS_LABEL = {"bits": "weight bits", "clusters": "clusters per layer", "sparsity": "sparsity"}
RATE_TITLE = {"accuracy": "accuracy", "tpr": "TPR", "fpr": "FPR"}


def _note(figure: Figure) -> str:
    return " (SYNTHETIC data)" if figure.synthetic else ""


def _deepest_right(ax, axis: str) -> None:
    """Compression deepens to the right: fewer bits or clusters, more sparsity."""
    if axis in ("bits", "clusters"):
        ax.invert_xaxis()
    if axis == "clusters":
        ax.set_xscale("log", base=2)


@drawing("sweep_curve")
def _sweep_curve(figure: Figure) -> plt.Figure:
    """Per rate, each group's value against depth with its interval band and fp32's level dashed; then each gap's
    change vs fp32 with its paired interval."""
    frame, gaps, axis = figure.frame, figure.frame.attrs["gaps"], figure.frame.attrs["axis"]
    drawn = [rate for rate in RATE_TITLE if rate in frame.columns]  # accuracy alone for a multi-class target
    fig, axes = plt.subplots(1, len(drawn) + 1, figsize=(4.25 * (len(drawn) + 1), 3.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, rate in zip(axes, drawn):
        for k, (group, part) in enumerate(frame.groupby("group", sort=False)):
            part = part.sort_values("x")
            color = colors[k % len(colors)]
            ax.plot(part["x"], part[rate], marker="o", color=color, label=group)
            ax.fill_between(part["x"], part[f"{rate}_low"].astype(float), part[f"{rate}_high"].astype(float),
                            color=color, alpha=0.2)
            ax.axhline(float(part[f"fp32_{rate}"].iloc[0]), color=color, linestyle="--", linewidth=1)
        ax.set_title(f"{RATE_TITLE[rate]} by group (fp32 dashed)", fontsize=9)
        ax.set_xlabel(AXIS_LABEL[axis])
        _deepest_right(ax, axis)
    ax = axes[-1]
    for gap, part in gaps.groupby("gap", sort=False):
        part = part.sort_values("x")
        low = (part["change"] - part["ci_low"]).clip(lower=0).fillna(0)
        high = (part["ci_high"] - part["change"]).clip(lower=0).fillna(0)
        ax.errorbar(part["x"], part["change"], yerr=[low, high], marker="o", capsize=3, label=gap)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_title("gap change vs fp32, paired intervals", fontsize=9)
    ax.set_xlabel(AXIS_LABEL[axis])
    _deepest_right(ax, axis)
    axes[0].legend(fontsize=8)
    ax.legend(fontsize=7)
    fig.suptitle(f"{frame['curve'].iloc[0]}: {level(figure.confidence)} intervals{_note(figure)}", fontsize=10)
    return fig


@drawing("sweep_heatmap")
def _sweep_heatmap(figure: Figure) -> plt.Figure:
    """Curves x points: the worst group's accuracy change and the TPR (multi-class: accuracy) gap change; * where the interval excludes 0."""
    frame = figure.frame
    fig, axes = plt.subplots(1, 2, figsize=(15, 1.6 + 0.5 * frame["curve"].nunique()), layout="constrained")
    gap = "tpr_gap" if "tpr_gap_change" in frame.columns else "accuracy_gap"  # accuracy: a multi-class target
    panels = (("worst_group_change", "worst_group_significant", "worst group's accuracy change", "RdBu"),
              (f"{gap}_change", f"{gap}_significant", f"{gap.replace('_', ' ').replace('tpr', 'TPR')} change",
               "RdBu_r"))
    for ax, (value, flag, title, cmap) in zip(axes, panels):
        grid = frame.pivot_table(index="curve", columns="point", values=value, aggfunc="first", sort=False)
        marks = frame.pivot_table(index="curve", columns="point", values=flag, aggfunc="first", sort=False)
        data = grid.to_numpy(dtype=float)
        bound = np.nanmax(np.abs(data)) if np.isfinite(data).any() else 1.0
        image = ax.imshow(data, cmap=cmap, vmin=-bound, vmax=bound, aspect="auto")
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                if np.isfinite(data[i, j]):
                    star = "*" if bool(marks.iloc[i, j]) else ""
                    ax.text(j, i, f"{data[i, j]:+.3f}{star}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(grid.shape[1]), grid.columns, fontsize=8)
        ax.set_yticks(range(grid.shape[0]), grid.index, fontsize=8)
        ax.set_title(f"{title} (* interval excludes 0){_note(figure)}", fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


@drawing("sweep_pareto")
def _sweep_pareto(figure: Figure) -> plt.Figure:
    """Size against worst-group accuracy, colour by TPR gap (accuracy gap: multi-class); the front (smaller, better worst group, fairer) ringed."""
    frame: pd.DataFrame = figure.frame
    fig, ax = plt.subplots(figsize=(7, 4.5))
    gap = "tpr_gap" if "tpr_gap" in frame.columns else "accuracy_gap"  # accuracy: a multi-class target
    points = ax.scatter(frame["size_mb"], frame["worst_group_accuracy"], c=frame[gap].astype(float),
                        cmap="viridis_r", s=60)
    front = frame[frame["on_front"]]
    ax.scatter(front["size_mb"], front["worst_group_accuracy"], s=180, facecolors="none", edgecolors="tab:red",
               label="Pareto front")
    for row in frame.itertuples():
        ax.annotate(row.slot.split("/")[-1], (row.size_mb, row.worst_group_accuracy), fontsize=7, xytext=(4, 2),
                    textcoords="offset points")
    fig.colorbar(points, ax=ax, label=gap.replace("_", " ").replace("tpr", "TPR"))
    ax.set_xscale("log")  # ticks at 1, 2, 5 x 10^k in plain numbers: the default minor labels overlap on a short range
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.12)  # room for the rightmost point's label
    ax.set_xlabel("size (MB, log)")
    ax.set_ylabel("worst-group accuracy")
    ax.set_title(f"every sweep point: size x worst-group accuracy x {gap.replace('_', ' ').replace('tpr', 'TPR')}"
                 f"{_note(figure)}", fontsize=9)
    ax.legend(fontsize=8)
    return fig
