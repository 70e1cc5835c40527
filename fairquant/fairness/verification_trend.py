"""Race bias against bits: the verification branch's curves and their trend answers.

A curve is one method x calibration set over the bit-widths of ``verify.bits`` (ptq-w8a8-train, ptq-w4a4-train,
... make the curve "ptq-train"). "Compressed Models Decompress Race Biases" reads its results as a curve: the lower
the bits, the higher the bias. The answer here is :func:`fairquant.fairness.trend.trend_answer`'s: the
least-squares slope on compression depth (bits removed, ``-bits``) with a percentile interval, Spearman's rank
correlation, and a verdict ("widens": grows as bits fall; "narrows"; "no clear trend"; "undefined" below 3 points).

The draws are the ones :func:`fairquant.fairness.verification.verification_report` already evaluates every variant
on (pairs resampled within race x fold x genuine, thresholds re-chosen): the reference (fp32) and every point of a
curve share each resample, so the slope's interval keeps their pairing. Nothing is resampled again here.

Per curve: SER, its change vs the reference (the same slope as SER's, fp32 being one constant per draw, but it
leaves out the draws where fp32's own SER is infinite), the STD of the race accuracies, their mean, and each race's
accuracy (its ``as_bits_fall`` says "falls" or "rises"). A point whose value is not finite (an SER with an
error-free race) is left out of that fit (``points`` counts the rest); values that are not finite are stored as
None.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fairquant.errors import FairquantError
from fairquant.fairness.trend import DEPTH, DEPTH_UNITS, trend_answer

CURVE_METHODS = ("ptq", "quantface")  # the methods run at every entry of verify.bits
METHOD = ("least-squares slope on compression depth (bits removed); percentile interval from the pair bootstrap "
          "every variant is evaluated on (pairs resampled within race x fold x genuine, thresholds re-chosen), "
          "shared by the reference and every point of the curve")
ACCURACY_READS = {"widens": "rises", "narrows": "falls"}


@dataclass(frozen=True)
class BitCurve:
    """The variants of one method and calibration set, in the order of ``bits`` (highest first)."""

    method: str
    calibration: str
    bits: tuple[int, ...]
    variants: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.method}-{self.calibration}"


def bit_curves(configs: Mapping[str, Mapping]) -> dict[str, BitCurve]:
    """The curves of the recorded variant configs (name -> config with ``verify_method``, ``scheme.bits``,
    ``scheme.layers`` and ``calibration.set``): one per method x calibration set, highest bits first. A variant
    with some layers at other bits (``verify.layers``) lies on its own curve, "<method>-mixed"."""
    points: dict[tuple[str, str], dict[int, str]] = {}
    for name, config in configs.items():
        method, scheme = config.get("verify_method"), config.get("scheme") or {}
        if method not in CURVE_METHODS or not scheme.get("bits"):
            continue
        method += "-mixed" if scheme.get("layers") else ""
        calibration = (config.get("calibration") or {}).get("set") or "none"
        curve = points.setdefault((method, calibration), {})
        if scheme["bits"] in curve:
            raise FairquantError(f"variants {curve[scheme['bits']]!r} and {name!r} both lie at {scheme['bits']} bits "
                                 f"on the {method}-{calibration} curve; give each bit-width one variant")
        curve[scheme["bits"]] = name
    curves = {}
    for (method, calibration), by_bits in sorted(points.items()):
        bits = tuple(sorted(by_bits, reverse=True))
        curve = BitCurve(method, calibration, bits, tuple(by_bits[b] for b in bits))
        curves[curve.name] = curve
    return curves


def check_curves(curves: Mapping[str, BitCurve], models: Mapping) -> None:
    for curve in curves.values():
        missing = [v for v in curve.variants if v not in models]
        if missing:
            raise FairquantError(f"curve {curve.name!r} names variants {missing} that were not scored; score them "
                                 f"too, or leave them out of the curve")


def _finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _answer(depth: np.ndarray, point: np.ndarray, draws: np.ndarray, confidence: float) -> dict:
    return {k: _finite(v) for k, v in trend_answer(depth, point, draws, confidence).items()}


def _series(curve: BitCurve, point: Mapping, boot: Mapping, key: str,
            race: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One statistic along the curve: its value per point (P,) and per draw (B, P)."""
    def pick(stats: Mapping) -> np.ndarray:
        values = np.asarray(stats[key], dtype=np.float64)
        return values if race is None else values[..., race]

    return (np.array([pick(point[v])[0] for v in curve.variants]),
            np.stack([pick(boot[v]) for v in curve.variants], axis=-1))


def curve_trend(curve: BitCurve, point: Mapping, boot: Mapping, *, reference: str, races: tuple[str, ...],
                confidence: float) -> dict:
    """Trend answers of one curve. ``point`` and ``boot``: per model, the statistics of
    :func:`~fairquant.fairness.verification_protocol.batch_statistics` on all pairs (leading axis 1) and on the
    shared resamples (leading axis B)."""
    depth = DEPTH["bits"](np.asarray(curve.bits, dtype=np.float64))
    ser, ser_draws = _series(curve, point, boot, "ser")
    with np.errstate(invalid="ignore"):  # inf - inf: undefined, left out
        change = ser - float(point[reference]["ser"][0])
        change_draws = ser_draws - np.asarray(boot[reference]["ser"], dtype=np.float64)[:, None]
    accuracy = {}
    for r, race in enumerate(races):
        answer = _answer(depth, *_series(curve, point, boot, "accuracy", r), confidence)
        accuracy[race] = answer | {"as_bits_fall": ACCURACY_READS.get(answer["verdict"], answer["verdict"])}
    return {
        "method": curve.method, "calibration": curve.calibration, "axis": "bits", "depth": DEPTH_UNITS["bits"],
        "x": [int(b) for b in curve.bits], "variants": list(curve.variants),
        "ser": _answer(depth, ser, ser_draws, confidence),
        "ser_change": _answer(depth, change, change_draws, confidence),
        "verification_std": _answer(depth, *_series(curve, point, boot, "verification_std"), confidence),
        "verification_accuracy": _answer(depth, *_series(curve, point, boot, "verification_accuracy"), confidence),
        "accuracy": accuracy,
    }


def bits_trends(curves: Mapping[str, BitCurve], point: Mapping, boot: Mapping, *, reference: str,
                races: tuple[str, ...], confidence: float) -> dict:
    """verify.json's ``trends``: curve name -> its answers (how they are obtained: :data:`METHOD`)."""
    return {name: curve_trend(curve, point, boot, reference=reference, races=races, confidence=confidence)
            for name, curve in curves.items()}
