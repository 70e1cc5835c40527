"""Params of the mitigate wing: one section per remedy, and which remedies the graph runs.

A remedy is declared once, by its params class: ``method`` (its name: the ``mitigate.<method>`` section, the
value listed in ``mitigate``'s lists, the slot prefix) and ``family``, which says when it acts:

- ``before``: fine-tune the fp32 model under the remedy, then compress it (listed in ``before_compression``);
- ``during``: constrained fine-tuning in place of a compressor's own (``during_prune``, ``during_qat``,
  ``during_kmeans``);
- ``after``: a post-processor fitted on a variant's validation predictions (``after``);
- ``precision``: a mixed-precision plan, then PTQ (``precision``).

The lists' allowed values come from :data:`REMEDY_PARAMS`; the mitigate wing dispatches on the class.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from fairquant.params.base import Bits, TrainingParams, _Section
from fairquant.params.compress import (CalibrationSet, PruneParams, QuantizeKmeansParams, QuantizePTQParams,
                                       QuantizeQATParams)

COMPRESSORS = tuple(section.compressor for section in (QuantizePTQParams, QuantizeQATParams, QuantizeKmeansParams,
                                                       PruneParams))  # their slots

FairnessRate = Literal["tpr", "fpr"]


class FairALMParams(TrainingParams):
    """FairALM (Lokhande et al. 2020, Algorithm 2): fine-tune the fp32 model under equal TPR (or FPR) across
    groups by an augmented Lagrangian; each group's surrogate is held against the mean over groups."""

    method: ClassVar[str] = "fairalm"
    family: ClassVar[str] = "before"

    constraint: FairnessRate = Field("tpr", description="tpr: equal opportunity (DEO, on positives); fpr: on negatives")
    surrogate: Literal["cross_entropy", "sigmoid"] = Field(
        "cross_entropy", description="per-group differentiable rate: cross-entropy on the constrained rows (the "
                                     "released code) or the mean sigmoid miss rate")
    eta: float = Field(0.05, gt=0, le=100, description="augmented-Lagrangian step: penalty weight and dual step size")
    eta_growth: float = Field(1.0, ge=1, le=2, description="eta is multiplied by this after every epoch (1.01 in "
                                                           "the released code; 1 = the paper's fixed eta)")
    epochs: float = Field(1, gt=0, le=1000, description="fine-tuning epochs from the fp32 model; may be fractional")
    batch_size: int = Field(64, ge=1, le=4096)
    weight_decay: float = Field(5e-4, ge=0, le=1)


class DPRegularizerParams(TrainingParams):
    """Fine-tune the fp32 model with a demographic-parity penalty: the spread of the groups' mean sigmoid scores
    (differentiable; an argmax gives no gradient)."""

    method: ClassVar[str] = "dp_regularizer"
    family: ClassVar[str] = "before"

    weight: float = Field(1.0, gt=0, le=1000, description="weight of the penalty against the cross-entropy")
    epochs: float = Field(1, gt=0, le=1000)
    batch_size: int = Field(64, ge=1, le=4096)
    weight_decay: float = Field(5e-4, ge=0, le=1)


class ConstrainedParams(_Section):
    """Constrained fine-tuning of a compressed model against the fp32 reference (cooper-optim), in place of the
    compressor's own fine-tuning and with its settings (the compressor's section: epochs, lr, batch size, seed),
    so that the remedy and the variant it fixes differ only by the constraint."""

    family: ClassVar[str] = "during"

    rate: Literal["accuracy", "tpr", "fpr"] = Field(
        "accuracy", description="the per-group quantity the constraint holds: accuracy on all rows, TPR on "
                                "positives, FPR form on negatives (its accuracy there is 1 - FPR)")
    dual_lr: float = Field(0.01, gt=0, le=100, description="dual SGD step (CEAG: 1e-4 UTKFace/FairFace, 1e-2 CIFAR-100)")
    buffer: int = Field(40, ge=1, le=100000, description="per-group replay buffer of the latest correctness values; "
                                                         "only full buffers enter the dual step")
    checks: int = Field(4, ge=1, le=1000, description="validation checks over the run; the best feasible one is kept")


class CEAGParams(ConstrainedParams):
    """CEAG (Hashemizadeh et al. 2024): per group g, (acc_fp32,g - acc_c,g) - (acc_fp32 - acc_c) <= tolerance."""

    method: ClassVar[str] = "ceag"

    tolerance: float | None = Field(0.02, gt=0, lt=1, description="required: the excess accuracy drop allowed "
                                                                   "to any group (0.02 = 2 points)")


class EqualizedLossParams(ConstrainedParams):
    """Equalized loss, CEAG's baseline: each group's loss equal to the overall loss (equality constraints)."""

    method: ClassVar[str] = "equalized_loss"


class CalEqOddsParams(_Section):
    """Calibrated equalized odds (Pleiss et al. 2017), fitted on the validation split, applied to test."""

    method: ClassVar[str] = "caleqodds"
    family: ClassVar[str] = "after"

    cost_constraint: Literal["fpr", "fnr", "weighted"] = "weighted"
    seed: int = 0


class ThresholdParams(_Section):
    """fairlearn's ThresholdOptimizer on a variant's scores (prefit), fitted on validation, applied to test."""

    method: ClassVar[str] = "threshold"
    family: ClassVar[str] = "after"

    constraint: Literal["equalized_odds", "true_positive_rate_parity", "false_positive_rate_parity",
                        "demographic_parity"] = "equalized_odds"
    objective: Literal["accuracy_score", "balanced_accuracy_score"] = "accuracy_score"
    grid_size: int = Field(1000, ge=10, le=100000)
    seed: int = 0


class SensitivityParams(_Section):
    """Fairness-aware layer sensitivity and the mixed-precision plan built from it."""

    method: ClassVar[str] = "sensitivity"
    family: ClassVar[str] = "precision"

    bits: Bits = Field(4, description="low bits (weights and inputs, as a `layers` map sets them): each layer alone "
                                      "is quantized at these to measure its damage; the plan puts every layer it "
                                      "does not keep at them")
    high_bits: Bits | None = Field(8, description="bits of the kept layers' weights and inputs; null = float")
    keep: int = Field(3, ge=0, le=1000, description="at most this many of the most damaging layers are kept high")
    size_budget_mb: float | None = Field(None, gt=0, description="the plan's model size may not exceed this; null = "
                                                                 "no budget beyond `keep`")
    calibration: CalibrationSet = "train"
    calibration_size: int | None = Field(None, ge=1)


REMEDY_PARAMS = (FairALMParams, DPRegularizerParams, CEAGParams, EqualizedLossParams, CalEqOddsParams,
                 ThresholdParams, SensitivityParams)  # every remedy, in the order its lists name them


def _methods(family: str):
    """The remedies of one family, as the Literal a list of them is validated against."""
    return Literal[tuple(remedy.method for remedy in REMEDY_PARAMS if remedy.family == family)]


BeforeMethod = _methods("before")
DuringMethod = _methods("during")
AfterMethod = _methods("after")
PrecisionMethod = _methods("precision")


class MitigateParams(_Section):
    """Which remedies the graph runs (lists may be empty) and each method's settings."""

    before_compression: list[BeforeMethod] = Field(
        default_factory=lambda: ["fairalm"], description="fine-tune fp32 under the remedy, then quantize with PTQ")
    during_prune: list[DuringMethod] = Field(
        default_factory=lambda: ["ceag"], description="constrained fine-tuning in place of pruning's own")
    during_qat: list[DuringMethod] = Field(
        default_factory=list, description="constrained fine-tuning in place of QAT's own")
    during_kmeans: list[DuringMethod] = Field(
        default_factory=list, description="constrained fine-tuning of k-means centroids (quantize_kmeans.epochs > 0)")
    after: list[AfterMethod] = Field(default_factory=lambda: ["caleqodds"],
                                     description="post-processors fitted on validation, applied to test")
    post_on: list[str] = Field(default_factory=lambda: ["fp32", "ptq"], description="slots the post-processors fix")
    precision: list[PrecisionMethod] = Field(default_factory=list, description="[sensitivity]: a mixed-precision "
                                                                               "plan from layer sensitivity, then PTQ")
    calibration_sets: list[Literal["train", "balanced", "synthetic", "distilled"]] = Field(
        default_factory=list, description="calibration-side: PTQ again with each of these sets (e.g. balanced), "
                                          "compared with the PTQ of quantize_ptq.calibration")
    fairalm: FairALMParams = FairALMParams()
    dp_regularizer: DPRegularizerParams = DPRegularizerParams()
    ceag: CEAGParams = CEAGParams()
    equalized_loss: EqualizedLossParams = EqualizedLossParams()
    caleqodds: CalEqOddsParams = CalEqOddsParams()
    threshold: ThresholdParams = ThresholdParams()
    sensitivity: SensitivityParams = SensitivityParams()

    @model_validator(mode="after")
    def _lists_are_distinct(self) -> "MitigateParams":
        for key in ("before_compression", "during_prune", "during_qat", "during_kmeans", "after", "post_on", "precision",
                    "calibration_sets"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise ValueError(f"mitigate.{key} lists a value more than once ({values}); list each once")
        return self

    def model_slot_names(self) -> list[str]:
        """The model slots these lists make (fairquant.mitigate.slots.model_slots builds them, with their baselines;
        tests/test_params.py holds the two equal): what post_on may name."""
        slots = ["fp32", *COMPRESSORS]
        for method in self.before_compression:
            slots += [f"{method}-control", f"{method}-control+ptq", method, f"{method}+ptq"]
        for compressor in ("prune", "qat", "kmeans"):
            slots += [f"{method}+{compressor}" for method in getattr(self, f"during_{compressor}")]
        slots += [f"{name}+ptq" for name in (*self.calibration_sets, *self.precision)]
        return slots

    @model_validator(mode="after")
    def _post_on_names_made_slots(self) -> "MitigateParams":
        unknown = [slot for slot in self.post_on if slot not in self.model_slot_names()]
        if unknown:
            raise ValueError(f"mitigate.post_on names {unknown[0]!r}, a slot this study does not make; choose among "
                             f"{', '.join(self.model_slot_names())}")
        return self

    @model_validator(mode="after")
    def _ceag_has_its_tolerance(self) -> "MitigateParams":
        lists = [key for key in ("during_prune", "during_qat", "during_kmeans") if "ceag" in getattr(self, key)]
        if lists and self.ceag.tolerance is None:
            raise ValueError(f"mitigate.{lists[0]} lists ceag but mitigate.ceag.tolerance is null; CEAG needs the "
                             f"excess accuracy drop it allows each group: set it, e.g. 0.02")
        return self

    @model_validator(mode="after")
    def _precision_keeps_layers_higher(self) -> "MitigateParams":
        high, low = self.sensitivity.high_bits, self.sensitivity.bits
        if self.precision and high is not None and high <= low:
            raise ValueError(f"mitigate.sensitivity.high_bits is {high}, not above bits ({low}): the layers the plan "
                             f"keeps would not be kept at higher precision; set high_bits above bits (or null = float)")
        return self

    @model_validator(mode="after")
    def _post_processors_have_slots(self) -> "MitigateParams":
        if self.after and not self.post_on:
            raise ValueError(f"mitigate.after lists {self.after} but mitigate.post_on is empty, so none would run; "
                             "name the slots to fix in post_on (e.g. [fp32, ptq]) or empty after")
        return self

