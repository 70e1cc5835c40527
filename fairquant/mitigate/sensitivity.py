"""Fairness-aware layer sensitivity and the mixed-precision plan built from it.

Quantizing every layer to few bits can cost one group far more accuracy than another, and a few layers usually
carry most of that damage. :func:`layer_sensitivity` quantizes each Conv2d/Linear alone (weights and input, every
other layer float) and measures what that does to the worst-off group on the validation split; the damage of a
layer is the fp32 worst-group accuracy minus the worst-group accuracy with that layer quantized.
:func:`precision_plan` keeps the most damaging layers at higher precision, within an optional size budget, and
returns a complete ``layers`` map that ``quantize_ptq`` runs as it is.

Measuring ~21 layers one by one with :func:`fakequant.quantize_model` and :func:`fakequant.calibrate` costs 21
calibration passes and 21 validation passes. Here the answer is the same with one pass of each plus partial ones:

* With one layer quantized, everything upstream of it is float, so its input range is observed on the float
  model's activations: one float pass over the calibration images feeds every layer's observer at once (same
  batches as ``calibrate``, so the same ranges).
* On validation, the float model's intermediate values are kept per batch (a torch.fx graph of the model) and,
  for each layer, only the nodes downstream of it are run again.
"""

from __future__ import annotations

import collections

import numpy as np
import torch
from torch import fx, nn

from fairquant.compress import fakequant
from fairquant.errors import FairquantError
from fairquant.models import to_input
from fairquant.params import QuantSchemeParams
from fairquant.training import labels_from_scores, logits_of, predict_scores, probabilities

CALIBRATION_BATCH = 128  # fakequant.calibrate's batch: histogram observers' ranges depend on the batching


def _scheme(scheme_base: QuantSchemeParams, layers: dict[str, int | None]) -> QuantSchemeParams:
    """``scheme_base`` (observers, granularity, fold_bn, ...) with a complete ``layers`` map."""
    return QuantSchemeParams(**{**scheme_base.scheme().model_dump(), "layers": layers})


def _layer_names(model: nn.Module) -> list[str]:
    return list(fakequant.quantizable_layers(model))


def _accuracy(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray, names: list[str],
              reference: dict | None = None) -> dict:
    """Overall and per-group accuracy of the labels ``scores`` choose (> 0.5, or the most probable class), the
    worst group, and (against ``reference``, the fp32 result) the damage to the worst group and each group's drop."""
    hits = labels_from_scores(scores) == np.asarray(labels)
    by_group = {name: float(hits[groups == name].mean()) for name in names}
    worst = min(names, key=lambda name: by_group[name])  # ties: the first group in sorted order
    out = {"accuracy": float(hits.mean()), "group_accuracy": by_group, "worst_group": worst,
           "worst_group_accuracy": by_group[worst]}
    if reference is not None:
        out["damage"] = reference["worst_group_accuracy"] - by_group[worst]
        out["group_drop"] = {name: reference["group_accuracy"][name] - by_group[name] for name in names}
    return out


def _float_graph(model: nn.Module, scheme: QuantSchemeParams, names: list[str]) -> fx.GraphModule:
    """The float model exactly as :func:`fakequant.quantize_model` prepares it (BatchNorm folded when the scheme
    folds it), as an fx graph, with in-place activations turned off so that kept intermediate values stay intact."""
    base = fakequant.quantize_model(model, _scheme(scheme, {name: None for name in names}))
    graph = base if isinstance(base, fx.GraphModule) else fx.symbolic_trace(base)
    for module in graph.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False
    # an in-place function (x.relu_(), F.relu(x, inplace=True)) would overwrite a kept value: none of the
    # torchvision architectures has one, so refuse rather than handle it
    for node in graph.graph.nodes:
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
        if node.op in ("call_function", "call_method") and (node.kwargs.get("inplace") or (
                name.endswith("_") and not name.endswith("__"))):
            raise FairquantError(f"layer sensitivity cannot run a model with the in-place operation '{node.name}'; "
                                 f"use its out-of-place form in the model's code")
    return graph.eval()


@torch.no_grad()
def _calibrated_layers(graph: fx.GraphModule, names: list[str], scheme: QuantSchemeParams, bits: int,
                       images: np.ndarray) -> dict[str, fakequant.QuantizedLayer]:
    """Each layer wrapped at ``bits`` (weights and input) and calibrated as if it were the only quantized layer:
    its observer sees the float model's input to it, all layers in one pass."""
    if len(images) == 0:
        raise FairquantError("the calibration set is empty; build it or choose another set")
    wrapped = {name: fakequant.QuantizedLayer(graph.get_submodule(name), bits, bits, scheme) for name in names}
    hooks = []
    for name, layer in wrapped.items():
        layer.input_quant.observing = True

        def observe(_module, args, quantizer=layer.input_quant):
            quantizer(args[0])  # observing: records the range, passes the input on unchanged

        hooks.append(graph.get_submodule(name).register_forward_pre_hook(observe))
    try:
        for start in range(0, len(images), CALIBRATION_BATCH):
            graph(to_input(images[start:start + CALIBRATION_BATCH]))
    finally:
        for hook in hooks:
            hook.remove()
    for layer in wrapped.values():
        layer.input_quant.freeze()
    return wrapped


def _downstream(graph: fx.GraphModule, name: str) -> list[fx.Node]:
    """The nodes whose value changes when layer ``name`` changes: its calls and everything fed by them, in order."""
    dirty, order = set(), []
    for node in graph.graph.nodes:
        if (node.op == "call_module" and node.target == name) or any(n in dirty for n in node.all_input_nodes):
            dirty.add(node)
            order.append(node)
    return order


@torch.no_grad()
def _single_layer_scores(graph: fx.GraphModule, wrapped: dict[str, fakequant.QuantizedLayer], images: np.ndarray,
                         batch_size: int, device: torch.device | str = "cpu"
                         ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Scores of the float model and of the model with each layer alone quantized, computed on ``device``. Per
    batch the float graph's values are kept; each layer's run swaps in its quantized version and recomputes only
    what lies downstream."""
    graph.to(device)
    for layer in wrapped.values():  # its own quantizers' scales (the wrapped layer itself is the graph's)
        layer.to(device)
    interpreter = fx.Interpreter(graph)
    nodes = list(graph.graph.nodes)
    downstream = {name: _downstream(graph, name) for name in wrapped}
    float_scores, layer_scores = [], {name: [] for name in wrapped}
    for start in range(0, len(images), batch_size):
        batch = to_input(images[start:start + batch_size]).to(device)
        env = {}
        interpreter.env = env
        for node in nodes:
            env[node] = batch if node.op == "placeholder" else interpreter.run_node(node)
        output = nodes[-1]
        float_scores.append(probabilities(logits_of(env[output]).float()).cpu())
        for name, layer in wrapped.items():
            changed = {}
            interpreter.env = collections.ChainMap(changed, env)
            for node in downstream[name]:
                if node.op == "call_module" and node.target == name:
                    args, kwargs = interpreter.fetch_args_kwargs_from_env(node)
                    changed[node] = layer(*args, **kwargs)
                else:
                    changed[node] = interpreter.run_node(node)
            layer_scores[name].append(probabilities(logits_of(interpreter.env[output]).float()).cpu())
    interpreter.env = {}
    return (torch.cat(float_scores).numpy(),
            {name: torch.cat(scores).numpy() for name, scores in layer_scores.items()})


def layer_sensitivity(model: nn.Module, calibration_images: np.ndarray, val_images: np.ndarray,
                      val_labels: np.ndarray, val_groups: np.ndarray, scheme_base: QuantSchemeParams, bits: int,
                      batch_size: int = 256, device: torch.device | str = "cpu") -> dict:
    """How much each quantizable layer, quantized alone at ``bits``, hurts the worst-off validation group.

    For every Conv2d/Linear: the scheme of ``scheme_base`` (observers, granularity, fold_bn; its own ``bits``,
    ``activation_bits`` and ``layers`` are replaced) with a ``layers`` map that sets this layer to ``bits``
    (weights and input) and every other layer to float, calibrated on ``calibration_images``. Each row holds
    overall and per-group accuracy, the worst group, its damage (fp32 worst-group accuracy minus this
    worst-group accuracy) and each group's drop; rows are sorted by damage, most damaging first, ties in layer
    order. ``all_layers`` is the same for every layer at ``bits``, calibrated as a whole, for comparison.

    ``fp32`` is the float model as quantization prepares it (BatchNorm folded when ``fold_bn``): the same function
    as the checkpoint up to float rounding, so that a damage measures quantization alone. The result equals
    quantizing each layer with :func:`fakequant.quantize_model` and :func:`fakequant.calibrate`, computed faster
    (see the module docstring). Calibration runs on the CPU; the validation scoring on ``device``. Returns
    JSON-ready values.
    """
    names = _layer_names(model)
    groups = np.asarray(val_groups).astype(str)
    group_names = [str(g) for g in np.unique(groups)]
    labels = np.asarray(val_labels)
    if len(val_images) == 0 or len(labels) != len(val_images) or len(groups) != len(val_images):
        raise FairquantError(f"layer sensitivity needs validation images with one label and one group each; found "
                             f"{len(val_images)} images, {len(labels)} labels, {len(groups)} groups")
    graph = _float_graph(model, scheme_base, names)
    wrapped = _calibrated_layers(graph, names, _scheme(scheme_base, {name: bits for name in names}), bits,
                                 calibration_images)
    float_scores, layer_scores = _single_layer_scores(graph, wrapped, val_images, batch_size, device)
    fp32 = _accuracy(float_scores, labels, groups, group_names)
    rows = [{"layer": name, "index": index, **_accuracy(layer_scores[name], labels, groups, group_names, fp32)}
            for index, name in enumerate(names)]
    rows.sort(key=lambda row: (-row["damage"], row["index"]))

    full = fakequant.calibrate(fakequant.quantize_model(model, _scheme(scheme_base, {name: bits for name in names})),
                               calibration_images, CALIBRATION_BATCH)
    all_layers = _accuracy(predict_scores(full.to(device), val_images, batch_size, device), labels, groups,
                           group_names, fp32)
    scheme = {key: value for key, value in scheme_base.scheme().model_dump().items()
              if key not in ("bits", "activation_bits", "layers")}  # replaced by the per-layer maps
    return {"bits": bits, "scheme": scheme,
            "calibration_images": len(calibration_images), "validation_images": len(val_images),
            "group_sizes": {name: int((groups == name).sum()) for name in group_names},
            "fp32": fp32, "all_layers": all_layers, "layers": rows}


def _mb(size_bytes: float) -> str:
    return f"{size_bytes / 1e6:g}"


def _per_layer_sizes(model: nn.Module, scheme_base: QuantSchemeParams, names: list[str],
                     bits: int | None) -> tuple[int, dict[str, int]]:
    """The model's :func:`fakequant.quantized_size_bytes` with every layer at ``bits`` (None = float), and each
    layer's share of it. The total is a sum over tensors, so a mixed map's size is the float model's size plus,
    per layer, its size at its bits minus its float size: exact, with no model built per candidate plan."""
    quantized = fakequant.quantize_model(model, _scheme(scheme_base, {name: bits for name in names}))
    return (fakequant.quantized_size_bytes(quantized),
            {name: fakequant.quantized_size_bytes(quantized.get_submodule(name)) for name in names})


def precision_plan(sensitivity: dict, model: nn.Module, scheme_base: QuantSchemeParams, bits: int,
                   high_bits: int | None, keep: int, size_budget_bytes: float | None) -> dict:
    """A complete mixed-precision ``layers`` map: the most damaging layers at ``high_bits`` (None = float), every
    other quantizable layer at ``bits``.

    Layers with damage > 0 are taken in the sensitivity table's order (most damaging first); each is kept unless
    its upgrade would push the model over ``size_budget_bytes`` (then it is skipped and the next one is tried),
    until ``keep`` layers are kept. Sizes are :func:`fakequant.quantized_size_bytes` of the model quantized with
    the map under ``scheme_base``. Returns the map (layer order), the kept and skipped layers (damage order),
    the plan's size, the fully quantized size (every layer at ``bits``) and the budget.
    """
    names = _layer_names(model)
    measured = [row["layer"] for row in sensitivity["layers"]]
    if sorted(measured) != sorted(names):
        raise FairquantError(f"the sensitivity table names layers {sorted(set(measured) ^ set(names))[:4]} that "
                             f"differ from this model's; measure the sensitivity of this model again")
    if high_bits is not None and high_bits <= bits:
        raise FairquantError(f"mitigate.sensitivity.high_bits ({high_bits}) must be above mitigate.sensitivity.bits "
                             f"({bits}) for kept layers to gain precision; raise high_bits or set it to null (float)")
    float_total, float_sizes = _per_layer_sizes(model, scheme_base, names, None)
    low_total, low_sizes = _per_layer_sizes(model, scheme_base, names, bits)
    high_sizes = float_sizes if high_bits is None else _per_layer_sizes(model, scheme_base, names, high_bits)[1]
    if size_budget_bytes is not None and size_budget_bytes < low_total:
        raise FairquantError(f"precision plan: the size budget {_mb(size_budget_bytes)} MB is smaller than the fully "
                             f"quantized model ({_mb(low_total)} MB, every layer at {bits} bits); raise "
                             f"mitigate.sensitivity.size_budget_mb to at least {np.ceil(low_total / 1e3) / 1e3:.3f} "
                             f"or lower mitigate.sensitivity.bits")
    size, kept, skipped = low_total, [], []
    for row in sensitivity["layers"]:
        if len(kept) >= keep or row["damage"] <= 0:
            break
        name = row["layer"]
        upgraded = size + high_sizes[name] - low_sizes[name]
        if size_budget_bytes is not None and upgraded > size_budget_bytes:
            skipped.append(name)
            continue
        size = upgraded
        kept.append(name)
    layers = {name: high_bits if name in kept else bits for name in names}
    return {"layers": layers, "kept": kept, "skipped": skipped, "size_bytes": int(size),
            "fully_quantized_size_bytes": int(low_total), "float_size_bytes": int(float_total),
            "budget_bytes": size_budget_bytes}
