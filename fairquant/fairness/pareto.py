"""Pareto dominance: which candidates no other candidate beats on every objective at once."""

from __future__ import annotations

from collections.abc import Sequence


def dominates(b: Sequence[float], a: Sequence[float]) -> bool:
    """``b`` is at least as good as ``a`` on every objective and better on one (higher is better everywhere;
    negate an objective to minimise it)."""
    return all(y >= x for x, y in zip(a, b)) and any(y > x for x, y in zip(a, b))


def non_dominated(points: Sequence[Sequence[float]]) -> list[bool]:
    """Per point: True when no other point dominates it (the Pareto front)."""
    return [not any(j != i and dominates(b, a) for j, b in enumerate(points)) for i, a in enumerate(points)]
