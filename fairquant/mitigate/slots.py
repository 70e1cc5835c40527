"""The study's slots: every variant the graph makes, and for each remedy the unmitigated variant it fixes.

Slots are stable names, so sweeps line up in `dvc exp show`: fp32, ptq, qat, kmeans, prune; a remedy before
compression gives <method> (the fine-tuned fp32 model) and <method>+ptq, compared with <method>-control and
<method>-control+ptq (the same fine-tuning without the remedy); a calibration set <set>+ptq; one during compression gives
<method>+prune or <method>+qat; a post-processor gives <slot>+<method>; a precision plan <method>+ptq."""

from __future__ import annotations

from fairquant.errors import FairquantError

COMPRESSED = ("ptq", "qat", "kmeans", "prune")


def study_slots(mitigate) -> dict[str, str | None]:
    """Slot -> the slot it is compared with as its unmitigated baseline (None for fp32 and the compressors)."""
    slots: dict[str, str | None] = {"fp32": None, **{c: None for c in COMPRESSED}}
    for method in mitigate.before_compression:  # vs the same fine-tuning without the remedy (its control)
        slots[f"{method}-control"] = None
        slots[f"{method}-control+ptq"] = None
        slots[method] = f"{method}-control"
        slots[f"{method}+ptq"] = f"{method}-control+ptq"
    for method in mitigate.during_prune:
        slots[f"{method}+prune"] = "prune"
    for method in mitigate.during_qat:
        slots[f"{method}+qat"] = "qat"
    for method in mitigate.during_kmeans:
        slots[f"{method}+kmeans"] = "kmeans"
    for calibration_set in mitigate.calibration_sets:  # calibration-side: the same PTQ, another calibration set
        slots[f"{calibration_set}+ptq"] = "ptq"
    for method in mitigate.precision:  # a low-bit plan: compared with fp32, whose behaviour it should keep
        slots[f"{method}+ptq"] = "fp32"
    unknown = [s for s in mitigate.post_on if s not in slots]
    if unknown:
        raise FairquantError(f"mitigate.post_on names {unknown}, which this study does not make; choose among "
                             f"{sorted(slots)}")
    for method in mitigate.after:
        for slot in mitigate.post_on:
            slots[f"{slot}+{method}"] = slot
    return slots
