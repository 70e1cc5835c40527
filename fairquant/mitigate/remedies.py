"""One verb for every remedy: ``mitigate(config, ...)``, dispatched on the config's type.

Four families, each with its inputs and outputs:
- before compression (FairALM, DP regulariser): fp32 model -> fp32 model fine-tuned under the remedy;
- during compression (CEAG, equalized loss): fp32 model + a trainable compressor (prune, qat) -> the
  compressed model, its fine-tuning constrained against the fp32 reference;
- after (calibrated equalized odds, threshold optimiser): a variant's validation and test predictions ->
  post-processed predictions;
- precision (layer sensitivity): fp32 model + calibration set -> a mixed-precision plan and its PTQ model.
A remedy is declared once, by its params class (``method`` and ``family`` ClassVars, listed in
``fairquant.params.mitigate.REMEDY_PARAMS``); its family's function here dispatches on the config's type to the
method registered in the family's module (``inprocess``, ``constrained``, ``postprocess``, ``sensitivity``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from fairquant.errors import FairquantError
from fairquant.params import (REMEDY_PARAMS, FairALMParams, PruneParams, QuantizeKmeansParams, QuantizeQATParams,
                              TrainingParams)


def remedy_params(method: str) -> type:
    """The params class of the remedy named ``method`` (its ``mitigate.<method>`` section)."""
    by_method = {remedy.method: remedy for remedy in REMEDY_PARAMS}
    if method not in by_method:
        raise FairquantError(f"unknown remedy {method!r}; known: {', '.join(by_method)}")
    return by_method[method]


def family(method: str) -> str:
    """When the remedy acts: before, during or after compression, or precision."""
    return remedy_params(method).family


def finetune_before(config, *, model, data, protected: list[str], live_dir, seed: int, control: bool = False,
                    processes=None):
    """Fine-tune the fp32 ``model`` under the remedy; returns the model and what the variant records.

    ``control``: the same fine-tuning (section, seed, data order, schedule) with plain cross-entropy, the
    baseline a remedy is compared with: fp32 was not fine-tuned for these extra epochs, and the extra epochs
    alone move the gaps. ``processes``: params.yaml's ``distributed`` (the training's process count)."""
    from fairquant.data.prepare import load_prepared
    from fairquant.mitigate.inprocess import objective_for
    from fairquant.training import Objective, fit_logged, group_index

    method = config.method
    table, images, _ = load_prepared(data)
    names, index = group_index(table, protected)
    if len(names) < 2:
        raise FairquantError(f"{method} needs at least two groups; the data has only {names}")
    if isinstance(config, FairALMParams):
        train = table["split"].to_numpy() == "train"
        wanted = table["y_true"].to_numpy() == (1 if config.constraint == "tpr" else 0)
        empty = [names[g] for g in range(len(names)) if not (train & wanted & (index == g)).any()]
        if empty:
            raise FairquantError(f"fairalm constrains {config.constraint.upper()}, but group(s) {empty} have no "
                                 f"{'positives' if config.constraint == 'tpr' else 'negatives'} in the training split; "
                                 "use the other constraint or merge the group")
    objective = Objective() if control else objective_for(config, names)
    label = f"{method}{'-control' if control else ''} (seed {seed})"
    model = fit_logged(model, table, images, protected, config, live_dir, label, seed=seed,
                       section=f"mitigate.{method}", objective=objective, processes=processes)
    if control:
        return model, {"method": f"{method}-control", "family": "control", "control_for": method,
                       "params": config.model_dump(include=set(TrainingParams.model_fields)), "groups": names}
    return model, {"method": method, "family": "before compression", "params": config.model_dump(),
                   "groups": names, **objective.summary()}


def _split(table, protected, names, split):
    """A split's store rows, labels, group indices (into ``names``) and group labels."""
    from fairquant.fairness.metrics import group_labels
    from fairquant.training import group_index

    part = table[table["split"] == split]
    return (part["row"].to_numpy(), part["y_true"].to_numpy().astype(np.int64),
            group_index(part, protected, names)[1], group_labels(part, protected))


def _trainable_compressor(compressor_params) -> Callable | None:
    """The compressor whose section ``compressor_params`` is (by its type), as (model, calibration images,
    fine-tuning) -> (module, recorded); None for a compressor without fine-tuning."""
    from fairquant.compress import fakequant, kmeans, pruning

    return {PruneParams: lambda model, images, finetune: pruning.pruned_variant(model, compressor_params, finetune),
            QuantizeQATParams: lambda model, images, finetune: fakequant.qat_variant(model, compressor_params, images,
                                                                                     finetune),
            QuantizeKmeansParams: lambda model, images, finetune: kmeans.kmeans_variant(model, compressor_params,
                                                                                        finetune),
            }.get(type(compressor_params))


class Validation:
    """A constrained remedy's validation check of a candidate model: its accuracy and maximum excess drop against
    the fp32 reference's validation predictions. Sent to spawned ranks by pickling, a memory-mapped store by its
    file (:func:`fairquant.distributed.portable`); never copied (it does not change)."""

    def __init__(self, images, rows, labels, reference_scores, groups_named, rate: str, batch: int):
        self.images, self.rows, self.labels, self.reference_scores = images, rows, labels, reference_scores
        self.groups_named, self.rate, self.batch = groups_named, rate, batch

    def __call__(self, candidate) -> dict:
        from fairquant.fairness.metrics import excess_drops
        from fairquant.training import labels_from_scores, predict_scores

        device = next(candidate.parameters()).device
        predicted = labels_from_scores(predict_scores(candidate, self.images, self.batch, device, rows=self.rows))
        drops = excess_drops(self.labels, labels_from_scores(self.reference_scores), predicted, self.groups_named,
                             self.rate)
        return {"accuracy": float((predicted == self.labels).mean()), "max_excess_drop": drops["max_excess_drop"]}

    def __getstate__(self):
        from fairquant.distributed import portable

        return {**vars(self), "images": portable(self.images)}

    def __setstate__(self, state):
        from fairquant.distributed import opened

        self.__dict__.update(state, images=opened(state["images"]))

    def __deepcopy__(self, memo):
        return self


def compress_during(config, *, model, data, protected: list[str], compressor_params,
                    calibration_images: np.ndarray | None, live_dir, seed: int, processes=None):
    """Run the compressor whose section is ``compressor_params`` (prune, qat or kmeans) on the fp32 ``model``, its
    fine-tuning replaced by the remedy's constrained one with the same settings (epochs, lr, batch, the seed the
    caller derives from the compressor's): the variant it fixes differs only by the constraint. Returns the module
    and the variant's config entries, with the constraint's satisfaction on the training and validation splits.
    ``processes``: params.yaml's ``distributed`` (the fine-tuning's process count)."""
    import copy

    from fairquant.data.prepare import load_prepared
    from fairquant.fairness.metrics import rate_rows
    from fairquant.mitigate.constrained import (constrained_objective, constraint_report, reference_for,
                                                require_tolerance)
    from fairquant.training import compression_finetuner, group_index, predict_scores

    method = config.method
    compressor = getattr(compressor_params, "compressor", type(compressor_params).__name__)
    compress = _trainable_compressor(compressor_params)
    if compress is None:
        raise FairquantError(f"{method} runs during prune, qat or kmeans, not {compressor!r}")
    require_tolerance(config)
    if not compressor_params.epochs:
        raise FairquantError(f"{method} replaces {compressor}'s fine-tuning, but {compressor_params.params_section}"
                             ".epochs is 0; set it above 0")
    table, images, _ = load_prepared(data)
    names, _ = group_index(table, protected)
    if len(names) < 2:
        raise FairquantError(f"{method} needs at least two groups; the data has only {names}")
    from fairquant.models import pick_device

    # the remedy's scoring (the fp32 reference, the constraint report) runs where its training runs
    device = pick_device(compressor_params.device, f"mitigate.{method}.device")
    reference_model = copy.deepcopy(model).eval().to(device)
    train_rows, train_y, train_g, train_named = _split(table, protected, names, "train")
    val_rows, val_y, _, val_named = _split(table, protected, names, "val")
    batch = max(compressor_params.batch_size, 256)
    for split, labels, named in (("training", train_y, train_named), ("validation", val_y, val_named)):
        missing = sorted(set(names) - set(named[rate_rows(labels, config.rate)].tolist()))
        if missing:
            what = {"tpr": "positives", "fpr": "negatives"}.get(config.rate, "rows")
            raise FairquantError(f"{method} with rate {config.rate}: group(s) {missing} have no {what} in the {split} "
                                 "split, so the constraint cannot be measured there; use rate accuracy")
    reference, train_ref_scores = reference_for(reference_model, images, train_rows, train_y, train_g, len(names),
                                                config.rate, batch, device)
    val_ref_scores = predict_scores(reference_model, images, batch, device, rows=val_rows)
    del reference_model  # its scores are all the remedy needs
    tolerance = getattr(config, "tolerance", None)

    validate = Validation(images, val_rows, val_y, val_ref_scores, val_named, config.rate, batch)

    objectives = []

    def make_objective(candidate):
        objectives.append(constrained_objective(config, names, reference, candidate, validate))
        return objectives[-1]

    # quantizers and weight sharing keep BatchNorm's statistics while fine-tuning; pruning retrains them
    finetune = compression_finetuner(data, protected, compressor_params, live_dir, f"{method}+{compressor}",
                                     freeze_bn=not isinstance(compressor_params, PruneParams), seed=seed,
                                     section=f"mitigate.{method}", objective=make_objective, processes=processes)
    module, recorded = compress(model, calibration_images, finetune)
    recorded["training"] = compressor_params.model_dump(include=set(TrainingParams.model_fields))
    module.to(device)
    constraint = {
        "train": constraint_report(train_y, train_ref_scores,
                                   predict_scores(module, images, batch, device, rows=train_rows),
                                   train_named, config.rate, tolerance),
        "validation": constraint_report(val_y, val_ref_scores,
                                        predict_scores(module, images, batch, device, rows=val_rows),
                                        val_named, config.rate, tolerance)}
    module.cpu()  # stored from the CPU, as training leaves it
    record = {"method": method, "family": "during compression", "compressor": compressor,
              "params": config.model_dump(), "groups": names, "constraint": constraint,
              **(objectives[-1].summary() if objectives else {})}
    return module.eval(), {**recorded, "mitigation": record}


def postprocess_predictions(config, *, val, test, protected: list[str]):
    """Fit the post-processor on ``val``, apply it to both; returns (val, test, details)."""
    from fairquant.mitigate.postprocess import postprocess

    val_out, test_out, details = postprocess(config.method, val, test, protected, config)
    return val_out, test_out, {"method": config.method, "family": "post-processing", **details}


def precision_variant(config, *, model, scheme_base, calibration_images: np.ndarray, val_images: np.ndarray,
                      val_labels: np.ndarray, val_groups: np.ndarray, device="cpu"):
    """Fairness-aware layer sensitivity on validation (scored on ``device``), the mixed-precision plan from it, and
    the fp32 model quantized (simulated) with that plan and ``scheme_base``'s observers; returns the module and its
    config entries."""
    from fairquant.compress import fakequant
    from fairquant.mitigate.sensitivity import layer_sensitivity, precision_plan
    from fairquant.params import QuantSchemeParams

    budget = None if config.size_budget_mb is None else config.size_budget_mb * 1e6
    if budget is not None:  # refuse before the sweep, not after it
        low = QuantSchemeParams(**{**scheme_base.model_dump(), "bits": config.bits, "activation_bits": config.bits,
                                   "layers": {}})
        floor = fakequant.quantized_size_bytes(fakequant.quantize_model(model, low))
        if floor > budget:
            raise FairquantError(f"precision plan: the size budget {config.size_budget_mb:g} MB is smaller than the "
                                 f"fully quantized model ({floor / 1e6:.3f} MB, every layer at {config.bits} bits); "
                                 f"raise mitigate.sensitivity.size_budget_mb or lower mitigate.sensitivity.bits")
    sensitivity = layer_sensitivity(model, calibration_images, val_images, val_labels, val_groups, scheme_base,
                                    config.bits, device=device)
    plan = precision_plan(sensitivity, model, scheme_base, config.bits, config.high_bits, config.keep, budget)
    scheme = QuantSchemeParams(**{**scheme_base.model_dump(), "bits": config.bits, "activation_bits": config.bits,
                                  "layers": plan["layers"]})
    quantized = fakequant.calibrate(fakequant.quantize_model(model, scheme), calibration_images).eval()
    from fairquant.compress.checkpoints import fp32_size_bytes

    fp32_bytes = fp32_size_bytes(model)
    record = {"method": config.method, "family": "precision", "params": config.model_dump(),
              "sensitivity": sensitivity, "plan": plan}
    return quantized, {"kind": "fakequant", "kernels": "simulated", "scheme": scheme.model_dump(),
                       "size_bytes": fakequant.quantized_size_bytes(quantized), "fp32_size_bytes": fp32_bytes,
                       "layers": fakequant.describe(quantized), "mitigation": record}


FAMILIES: dict[str, Callable] = {"before": finetune_before, "during": compress_during,
                                 "after": postprocess_predictions, "precision": precision_variant}
REMEDIES: dict[type, Callable] = {remedy: FAMILIES[remedy.family] for remedy in REMEDY_PARAMS}


def mitigate(config, **inputs):
    """Run the remedy ``config`` describes (its type picks the method) on ``inputs``."""
    if type(config) not in REMEDIES:
        raise FairquantError(f"no remedy is registered for {type(config).__name__}; known: "
                             f"{', '.join(remedy.method for remedy in REMEDIES)}")
    return REMEDIES[type(config)](config, **inputs)
