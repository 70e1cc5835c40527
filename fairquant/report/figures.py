"""The report's charts: one drawing per figure kind, the only plotting code in the report.

Renderers call :func:`save_png` (or :func:`draw`) on a :class:`~fairquant.report.document.Figure`; a figure
kind nobody registered is an error, never a blank chart.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from fairquant.errors import FairquantError  # noqa: E402
from fairquant.fairness.summary import HEADLINE_GAPS  # noqa: E402
from fairquant.io import atomic_path  # noqa: E402
from fairquant.report.document import Figure  # noqa: E402
from fairquant.report.numbers import level  # noqa: E402

DRAWINGS: dict[str, Callable[[Figure], plt.Figure]] = {}


def drawing(kind: str):
    """Register the function that draws figures of ``kind``."""
    def register(function: Callable[[Figure], plt.Figure]) -> Callable[[Figure], plt.Figure]:
        DRAWINGS[kind] = function
        return function
    return register


def draw(figure: Figure) -> plt.Figure:
    if figure.kind not in DRAWINGS:
        raise FairquantError(f"no drawing for figure kind {figure.kind!r}; register one of {sorted(DRAWINGS)} "
                             "with @drawing in fairquant/report/figures.py")
    return DRAWINGS[figure.kind](figure)


def png_bytes(figure: Figure) -> bytes:
    """``figure`` drawn as PNG, as every renderer shows it (a file beside report.md, inlined in report.html)."""
    chart = draw(figure)
    buffer = io.BytesIO()
    try:
        chart.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(chart)
    return buffer.getvalue()


def save_png(figure: Figure, folder: Path) -> Path:
    """Draw ``figure`` into ``folder``/<name>.png (written atomically) and return the path."""
    path = Path(folder) / f"{figure.name}.png"
    png = png_bytes(figure)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(png)
    return path


def _synthetic_note(figure: Figure) -> str:
    return " (SYNTHETIC data)" if figure.synthetic else ""


@drawing("rates_by_group")
def _rates_by_group(figure: Figure) -> plt.Figure:
    """Accuracy, TPR and FPR per group, one bar group per variant (accuracy alone where the rates are undefined:
    a multi-class target's group rates are per class)."""
    frame = figure.frame.assign(**{m: pd.to_numeric(figure.frame[m], errors="coerce") for m in ("accuracy", "tpr", "fpr")})
    metrics = [m for m in ("accuracy", "tpr", "fpr") if frame[m].notna().any()] or ["accuracy"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        frame.pivot(index="variant", columns="group", values=metric).plot.bar(ax=ax, rot=0)
        ax.set_title(f"{metric} by group{_synthetic_note(figure)}")
        ax.set_ylim(0, 1)
    return fig


@drawing("gaps_with_intervals")
def _gaps_with_intervals(figure: Figure) -> plt.Figure:
    """The headline gaps per variant, with their simultaneous bootstrap CIs as error bars."""
    fig, ax = plt.subplots(figsize=(8, 3.8))
    gaps = figure.frame
    shown = gaps[gaps["gap"].isin(HEADLINE_GAPS)]
    variants = list(dict.fromkeys(shown["variant"]))
    width = 0.8 / max(len(variants), 1)
    for k, variant in enumerate(variants):
        part = shown[shown["variant"] == variant].set_index("gap").loc[list(HEADLINE_GAPS)]
        x = [i + k * width for i in range(len(HEADLINE_GAPS))]
        errors = [(part["value"] - part["ci_low"]).clip(lower=0), (part["ci_high"] - part["value"]).clip(lower=0)]
        ax.bar(x, part["value"], width, yerr=errors, capsize=3, label=variant)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(HEADLINE_GAPS))], HEADLINE_GAPS)
    ax.set_title(f"fairness gaps with {level(figure.confidence)} simultaneous bootstrap CI{_synthetic_note(figure)}")
    ax.legend()
    return fig


@drawing("pareto_scatter")
def _pareto_scatter(figure: Figure) -> plt.Figure:
    """Accuracy against worst-group accuracy, marker area by size, non-dominated variants in blue."""
    table: pd.DataFrame = figure.frame
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sizes = 40 + 300 * table["size_kb"] / table["size_kb"].max()
    ax.scatter(table["accuracy"], table["worst_group_accuracy"], s=sizes,
               c=["tab:blue" if p else "tab:gray" for p in table["pareto"]], alpha=0.7)
    for _, row in table.iterrows():
        ax.annotate(f"{row['variant']} ({row['size_kb'] / 1000:.1f} MB)", (row["accuracy"], row["worst_group_accuracy"]),
                    fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax.set_xlabel("accuracy")
    ax.set_ylabel("worst-group accuracy")
    ax.set_title("accuracy x worst-group accuracy x size (marker area); blue = not dominated"
                 + _synthetic_note(figure), fontsize=9)
    return fig


@drawing("ser_by_bits")
def _ser_by_bits(figure: Figure) -> plt.Figure:
    """Verification SER against bit-width per method and calibration set, fp32 as a dashed line."""
    ser = figure.frame
    fig, ax = plt.subplots(figsize=(7, 4))
    fp32 = ser[ser["method"] == "fp32"]
    if len(fp32) and fp32["ser"].notna().all():
        ax.axhline(float(fp32["ser"].iloc[0]), color="black", linestyle="--", label="fp32")
    for (method, calibration), part in ser[ser["method"] != "fp32"].groupby(["method", "calibration"]):
        part = part.sort_values("bits").dropna(subset=["ser"])
        if part.empty:
            continue
        low = (part["ser"] - part["ci_low"]).clip(lower=0).fillna(0)
        high = (part["ci_high"] - part["ser"]).clip(lower=0).fillna(0)
        ax.errorbar(part["bits"], part["ser"], yerr=[low, high], marker="o", capsize=3,
                    linestyle="-" if calibration == "train" else ":", label=f"{method}, {calibration} calibration")
    ax.set_xlabel("bits (weights and activations)")
    ax.set_ylabel("SER (max race error / min race error)")
    ax.invert_xaxis()
    ax.set_title(f"SER by bits, {level(figure.confidence)} bootstrap CI{_synthetic_note(figure)}")
    ax.legend(fontsize=8)
    return fig


@drawing("verify_curve")
def _verify_curve(figure: Figure) -> plt.Figure:
    """Per curve (a row of panels): each race's accuracy against bits with its CI band and its fp32 level dashed,
    and SER against bits with fp32's dashed."""
    frame = figure.frame
    curves = list(dict.fromkeys(frame["curve"]))
    fig, axes = plt.subplots(len(curves), 2, figsize=(12, 3.6 * len(curves)), squeeze=False)
    for (left, right), curve in zip(axes, curves):
        part = frame[frame["curve"] == curve]
        accuracy, ser = part[part["quantity"] == "accuracy"], part[part["quantity"] == "ser"]
        for k, (race, series) in enumerate(accuracy.groupby("series", sort=False)):
            color = f"C{k}"
            points = series[~series["reference"]].sort_values("bits")
            left.plot(points["bits"], points["value"], marker="o", color=color, label=race)
            left.fill_between(points["bits"], points["ci_low"].astype(float), points["ci_high"].astype(float),
                              color=color, alpha=0.15)
            left.axhline(float(series[series["reference"]]["value"].iloc[0]), color=color, linestyle="--", lw=1)
        points = ser[~ser["reference"]].sort_values("bits")
        right.plot(points["bits"], points["value"].astype(float), marker="o", color="black", label="SER")
        fp32 = ser[ser["reference"]]["value"].astype(float)
        if len(fp32) and fp32.notna().all():
            right.axhline(float(fp32.iloc[0]), color="black", linestyle="--", lw=1, label="fp32")
        left.set_title(f"{curve}: accuracy per race, {level(figure.confidence)} CI band; dashed: fp32"
                       f"{_synthetic_note(figure)}", fontsize=9)
        right.set_title(f"{curve}: SER (max race error / min race error){_synthetic_note(figure)}", fontsize=9)
        for ax in (left, right):
            ax.set_xlabel("bits (weights and activations)")
            ax.set_xticks(sorted(points["bits"].unique()))
            ax.invert_xaxis()
            ax.legend(fontsize=7)
        left.set_ylabel("accuracy")
        right.set_ylabel("SER")
    fig.tight_layout()
    return fig
