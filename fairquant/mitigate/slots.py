"""The study's slots: every variant the graph makes, where each lives, and for each remedy the unmitigated variant it
fixes. The one place slot names and folders are defined (tests/test_dvc_slots.py holds dvc.yaml's paths against it).

Slots are stable names, so sweeps line up in `dvc exp show`: fp32, ptq, qat, kmeans, prune; a remedy before
compression gives <method> (the fine-tuned fp32 model) and <method>+ptq, compared with <method>-control and
<method>-control+ptq (the same fine-tuning without the remedy); a calibration set <set>+ptq; one during compression gives
<method>+prune, <method>+qat or <method>+kmeans; a post-processor gives <slot>+<method>; a precision plan <method>+ptq.

Folders, per training seed s: a model slot's model in ``data/models/s<seed>/<slot>`` and its predictions in
``data/predictions/s<seed>/variants/<slot>`` (one predict stage per seed writes them all); a post-processed slot's
predictions in ``data/predictions/s<seed>/postprocessed/<slot>``; the timed slots' latency in
``data/predictions/s<seed>/latency.json``."""

from __future__ import annotations

import re

from pathlib import Path

from fairquant.errors import FairquantError
from fairquant.params import Params

COMPRESSED = tuple(Params().compressors())  # ptq, qat, kmeans, prune: each compressor's section declares its slot
TIMED = ("fp32", "ptq")  # real kernels, timed: the plain fp32 model and its int8 PTQ (remedies' variants run the same)
VARIANTS = "variants"  # predictions of models, under data/predictions/s<seed>/
POSTPROCESSED = "postprocessed"  # predictions of post-processors, under the same
LATENCY = "latency.json"  # the timed slots' latency, under the same


def control(method: str) -> str:
    """The slot of a remedy's control: the same fine-tuning with plain cross-entropy."""
    return f"{method}-control"


def combined(first: str, then: str) -> str:
    """``first`` followed by ``then``: fairalm+ptq, balanced+ptq, ceag+prune, ptq+caleqodds."""
    return f"{first}+{then}"


def model_slots(mitigate) -> dict[str, str | None]:
    """The slots that are models (every slot but post-processed predictions), fp32 first -> the slot each is compared
    with as its unmitigated baseline (None for fp32 and the compressors). Independent of the post-processing lists,
    so that adding a post-processor re-predicts nothing."""
    slots: dict[str, str | None] = {"fp32": None, **{c: None for c in COMPRESSED}}
    for method in mitigate.before_compression:  # vs the same fine-tuning without the remedy (its control)
        slots[control(method)] = None
        slots[combined(control(method), "ptq")] = None
        slots[method] = control(method)
        slots[combined(method, "ptq")] = combined(control(method), "ptq")
    for compressor, methods in (("prune", mitigate.during_prune), ("qat", mitigate.during_qat),
                                ("kmeans", mitigate.during_kmeans)):
        for method in methods:
            slots[combined(method, compressor)] = compressor
    for calibration_set in mitigate.calibration_sets:  # calibration-side: the same PTQ, another calibration set
        slots[combined(calibration_set, "ptq")] = "ptq"
    for method in mitigate.precision:  # a low-bit plan: compared with fp32, whose behaviour it should keep
        slots[combined(method, "ptq")] = "fp32"
    return slots


def study_slots(mitigate) -> dict[str, str | None]:
    """Every slot -> the slot it is compared with as its unmitigated baseline (None for fp32 and the compressors)."""
    slots = model_slots(mitigate)
    unknown = [s for s in mitigate.post_on if s not in slots]
    if unknown:
        raise FairquantError(f"mitigate.post_on names {unknown}, which this study does not make; choose among "
                             f"{sorted(slots)}")
    for method in mitigate.after:
        for slot in mitigate.post_on:
            slots[combined(slot, method)] = slot
    return slots


def postprocessed_slots(mitigate) -> list[str]:
    return [combined(slot, method) for method in mitigate.after for slot in mitigate.post_on]


def predictions_folder(root: str | Path, slot: str, mitigate) -> Path:
    """Where one seed's predictions of ``slot`` live, under that seed's predictions ``root``."""
    kind = POSTPROCESSED if slot in postprocessed_slots(mitigate) else VARIANTS
    return Path(root) / kind / slot


# The sweep (params.yaml's sweep section), per training seed: each architecture's fp32 model and its points in
# data/sweep/s<seed>/models/<arch>/<fp32 | point folder>, their predictions in data/sweep/s<seed>/predictions/<same>.
SWEEP_MODELS = "models"
SWEEP_PREDICTIONS = "predictions"


def sweep_slots(sweep) -> list[str]:
    """Every model of the sweep as ``<arch>/<folder>``: each architecture's fp32 first, then its points."""
    return [f"{arch}/{folder}" for arch in sweep.architectures for folder in ("fp32", *sweep.folders())]


def sweep_model_names(params: Params) -> dict[str, tuple[str, str]]:
    """Each sweep slot -> (architecture, name) its model records: the fp32 model, or its point's variant name as the
    point's section (with its PTQ calibration set) names it."""
    out = {}
    for arch in params.sweep.architectures:
        out[f"{arch}/fp32"] = (arch, "fp32")
        for point, calibration, folder in params.sweep.entries():
            section = params.point_section(point)
            if calibration is not None:
                section = section.model_copy(update={"calibration": calibration})
            out[f"{arch}/{folder}"] = (arch, section.variant_name())
    return out


KEPT = "{k}"  # where a precision plan's name holds the number of layers it kept


def study_model_names(params: Params) -> dict[str, tuple[str, bool]]:
    """Each study slot -> the variant name its model (or post-processed predictions) records, as params.yaml's
    sections name it, and whether the name holds a number known only once the model is made: a precision plan's
    name is ``<method>+ptq-w<bits>-keep<k>`` (the number of layers it kept), written here with ``{k}`` where k goes,
    also inside a post-processed slot's name. A model copied or left in another slot's folder is refused by it."""
    mitigate, compressors = params.mitigate, params.compressors()
    ptq = compressors["ptq"].variant_name()
    names = {"fp32": ("fp32", False), **{c: (section.variant_name(), False) for c, section in compressors.items()}}
    for method in mitigate.before_compression:
        for first in (method, control(method)):
            names[first] = (first, False)
            names[combined(first, "ptq")] = (combined(first, ptq), False)
    for compressor, methods in (("prune", mitigate.during_prune), ("qat", mitigate.during_qat),
                                ("kmeans", mitigate.during_kmeans)):
        for method in methods:
            names[combined(method, compressor)] = (combined(method, compressors[compressor].variant_name()), False)
    for calibration_set in mitigate.calibration_sets:
        section = compressors["ptq"].model_copy(update={"calibration": calibration_set})
        names[combined(calibration_set, "ptq")] = (section.variant_name(), False)
    for method in mitigate.precision:
        names[combined(method, "ptq")] = (f"{method}+ptq-w{getattr(mitigate, method).bits}-keep{KEPT}", True)
    for method in mitigate.after:
        for slot in mitigate.post_on:
            name, prefix = names[slot]
            names[combined(slot, method)] = (combined(name, method), prefix)
    return names


def check_slot_holds(slot: str, found: str, *, names: dict[str, tuple[str, bool]], where: str) -> None:
    """``found`` (the variant name recorded in ``where``) is what params.yaml says ``slot`` holds."""
    want, counted = names[slot]
    if counted:
        before, _, after = want.partition(KEPT)
        holds = re.fullmatch(re.escape(before) + r"\d+" + re.escape(after), found) is not None
    else:
        holds = found == want
    if not holds:
        raise FairquantError(f"{where} holds {found!r}, but the {slot} slot holds {want.replace(KEPT, '<k>')!r} by "
                             "params.yaml; it was copied or left from another slot or other params: re-run its stages "
                             "(dvc repro)")
