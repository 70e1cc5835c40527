"""How the report prints numbers: one formatter for every section, classification and verification alike.

A value that is None or NaN prints as "undefined" everywhere, an infinite one as "inf" or "-inf" (an SER with an
error-free group is infinite, not undefined). Formats are named by what they print.
"""

from __future__ import annotations

import math
from typing import Literal

from fairquant.errors import FairquantError

Kind = Literal["text", "int", "num", "num1", "num2", "num4", "general", "thousands", "pct", "pct_change",
               "change", "times"]
UNDEFINED = "undefined"

FORMATS = {
    "text": str,
    "int": str,                             # counts
    "num": lambda v: f"{v:.3f}",            # rates, gaps, differences: 0.239
    "num1": lambda v: f"{v:.1f}",           # dB, milliseconds
    "num2": lambda v: f"{v:.2f}",           # shares
    "num4": lambda v: f"{v:.4f}",           # correlations, logit differences, multipliers
    "general": lambda v: f"{v:g}",          # settings as the user wrote them: 5, 0.05
    "thousands": lambda v: f"{v:,.1f}",     # sizes in KB: 4,918.1
    "pct": lambda v: f"{100 * v:.2f}",      # a rate in percent: 91.50
    "pct_change": lambda v: f"{100 * v:+.2f}",  # a change in percentage points: -0.90
    "change": lambda v: f"{v:+.2f}",        # a change of a ratio: +0.03
    "times": lambda v: f"{v:.2f}x",         # a size ratio: 4.26x
}


def is_undefined(value) -> bool:
    """None or NaN (of any float type)."""
    return value is None or (not isinstance(value, str) and value != value)


def fmt(value, kind: Kind = "num") -> str:
    """``value`` printed as ``kind``; "undefined" for None and NaN, "inf" / "-inf" for infinities."""
    if kind not in FORMATS:
        raise FairquantError(f"unknown number format {kind!r}; use one of {sorted(FORMATS)}")
    if isinstance(value, str):
        return value
    if is_undefined(value):
        return UNDEFINED
    if not isinstance(value, (str, bool)) and abs(value) == math.inf:
        return "inf" if value > 0 else "-inf"
    return FORMATS[kind](value)


def interval(low, high, kind: Kind = "num") -> str:
    """'[low, high]', both ends printed as ``kind``."""
    return f"[{fmt(low, kind)}, {fmt(high, kind)}]"


def cell_text(value, kind: Kind, bounds: tuple | None, note: str | None) -> str:
    """A cell's words, whatever the format: 'value [low, high] note'."""
    parts = [fmt(value, kind)]
    if bounds is not None:
        parts.append(interval(*bounds, kind))
    if note:
        parts.append(note)
    return " ".join(parts)


def level(confidence: float) -> str:
    """A confidence as the report names it: 95%."""
    return f"{100 * confidence:g}%"
