"""Params of the sweep: the points of each method's curve, built, predicted and evaluated inside the study.

A point is a short name that says what it changes in its compressor's section (every other setting is the
section's own): PTQ and QAT ``w<bits>a<bits>`` (weights and inputs), ``w<bits>`` (weights only, float inputs),
with ``-dyn`` for activation ranges taken per sample at inference (PTQ only); k-means ``k<clusters>``; pruning
``s<percent>``. Points are stage names and folder names (``data/sweep/s<seed>/models/<arch>/<method>-<point>``), so
adding one builds only that point.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field, field_validator, model_validator

from fairquant.params.base import ArchName, _Section
from fairquant.params.compress import CalibrationSet

_BITS = r"(1[0-6]|[2-9])"
POINT_GRAMMAR = {
    "ptq": (re.compile(rf"w{_BITS}(a{_BITS}(-dyn)?)?"), "w<bits>a<bits> or w<bits> (weights only), bits 2-16, "
                                                          "with -dyn after a<bits> for dynamic activation ranges, "
                                                          "e.g. w4a4, w4, w8a8-dyn"),
    "qat": (re.compile(rf"w{_BITS}(a{_BITS})?"), "w<bits>a<bits> or w<bits> (weights only), bits 2-16, e.g. w4a4"),
    "kmeans": (re.compile(r"k([2-9]|[1-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-6])"), "k<clusters>, 2-256, e.g. k16"),
    "prune": (re.compile(r"s([0-9]|[1-9][0-9])"), "s<percent sparsity>, 0-99, e.g. s50"),
}
AXIS = {"ptq": "bits", "qat": "bits", "kmeans": "clusters", "prune": "sparsity"}


@dataclass(frozen=True)
class SweepPoint:
    """One point of a method's curve: what it overrides in the compressor's section, and its x value."""

    method: str
    name: str

    @property
    def overrides(self) -> dict:
        if self.method in ("ptq", "qat"):
            match = POINT_GRAMMAR[self.method][0].fullmatch(self.name)
            weight, activation = int(match.group(1)), match.group(3)
            out = {"bits": weight, "activation_bits": None if activation is None else int(activation)}
            if self.method == "ptq":
                out["activation_ranges"] = "dynamic" if self.name.endswith("-dyn") else "static"
            return out
        number = int(self.name[1:])
        return {"clusters": number} if self.method == "kmeans" else {"sparsity": number / 100}

    @property
    def x(self) -> float:
        """Where the point sits on its curve: weight bits, clusters, or sparsity."""
        values = self.overrides
        return float(values.get("bits", values.get("clusters", values.get("sparsity"))))

    @property
    def series(self) -> str:
        """The curve the point belongs to within its method: W=A, weight-only, or fixed activation bits (A8: w2a8,
        w4a8, ...), each static or dynamic, so that a curve's x (weight bits) is its only moving part."""
        if self.method not in ("ptq", "qat"):
            return self.method
        values = self.overrides
        kind = "weight-only" if values["activation_bits"] is None else (
            "W=A" if values["activation_bits"] == values["bits"] else f"A{values['activation_bits']}")
        return f"{self.method} {kind}" + (" dynamic" if values.get("activation_ranges") == "dynamic" else "")


def _check_points(method: str, points: list[str]) -> list[str]:
    pattern, form = POINT_GRAMMAR[method]
    for point in points:
        if not pattern.fullmatch(point):
            raise ValueError(f"{point!r} is not a {method} point; write {form}")
    repeated = sorted({p for p in points if points.count(p) > 1})
    if repeated:
        raise ValueError(f"lists {repeated} more than once; list each point once")
    return points


class SweepParams(_Section):
    """Per method, the points of its curve; every point is built from each listed architecture's fp32 model."""

    methods: ClassVar[tuple[str, ...]] = ("ptq", "qat", "kmeans", "prune")

    ptq: list[str] = Field(default_factory=lambda: ["w8a8", "w6a6", "w4a4", "w3a3", "w2a2"],
                           description="PTQ points with quantize_ptq's other settings")
    ptq_calibration: list[CalibrationSet] = Field(default_factory=lambda: ["train"], min_length=1,
                                                  description="every PTQ point is built with each of these sets")
    qat: list[str] = Field(default_factory=list, description="QAT points with quantize_qat's other settings")
    kmeans: list[str] = Field(default_factory=list, description="k-means points with quantize_kmeans's settings")
    prune: list[str] = Field(default_factory=list, description="pruning points with prune's other settings")
    architectures: list[ArchName] = Field(
        default_factory=lambda: ["face_resnet10"], min_length=1,
        description="fp32 models the points are built from, each trained with finetune's settings (model.arch's "
                    "is the study's own fp32, reused)")

    @field_validator("ptq", "qat", "kmeans", "prune")
    @classmethod
    def _points_parse(cls, points: list[str], info) -> list[str]:
        return _check_points(info.field_name, points)

    @field_validator("ptq_calibration", "architectures")
    @classmethod
    def _listed_once(cls, values: list[str]) -> list[str]:
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(f"lists {repeated} more than once; list each once")
        return values

    @model_validator(mode="after")
    def _lists_a_point(self) -> "SweepParams":
        if not any(getattr(self, method) for method in self.methods):
            raise ValueError("the sweep lists no points; list at least one in sweep.ptq, qat, kmeans or prune "
                             "(e.g. ptq: [w8a8]): its stages always run")
        return self

    def points(self, method: str | None = None) -> list[SweepPoint]:
        if method is not None:
            return [SweepPoint(method, name) for name in getattr(self, method)]
        return [point for name in self.methods for point in self.points(name)]

    def entries(self) -> list[tuple[SweepPoint, str | None, str]]:
        """Every point built under an architecture: (point, PTQ's calibration set or None, its folder name
        <method>-<point>[-<set>])."""
        out = []
        for point in self.points():
            for calibration in (self.ptq_calibration if point.method == "ptq" else [None]):
                out.append((point, calibration, f"{point.method}-{point.name}" + (f"-{calibration}" if calibration else "")))
        return out

    def folders(self) -> list[str]:
        return [folder for _, _, folder in self.entries()]


def point_section(section: _Section, point: SweepPoint, key: str) -> _Section:
    """The compressor's section with the point's values; validated, so a point its settings cannot run is refused
    naming ``key`` (the params key of the point)."""
    from pydantic import ValidationError

    try:
        return type(section)(**{**section.model_dump(), **point.overrides})
    except ValidationError as exc:
        message = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ValueError(f"{key} point {point.name!r} cannot run with the section's settings: {message}") from None
