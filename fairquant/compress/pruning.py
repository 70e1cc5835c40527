"""Global magnitude pruning (torch.nn.utils.prune), one-shot or iterative with fine-tuning.

Pruning is global over every Conv2d/Linear weight: the smallest-magnitude share of all of them is zeroed,
so layers lose different fractions, as in "Balancing Act" (CEAG's study). The masks stay attached while
fine-tuning (pruned weights get no update) and are made permanent at the end.
"""

from __future__ import annotations

import math
import re
from typing import Callable

from pydantic import Field, model_validator
from torch import nn
from torch.nn.utils import prune

from fairquant.compress import registry
from fairquant.compress.checkpoints import WeightsMismatch, build_fp32, fp32_size_bytes
from fairquant.compress.fakequant import quantizable_layers
from fairquant.compress.registry import StoredConfig, VariantKind
from fairquant.errors import FairquantError


def sparsity_schedule(target: float, steps: int) -> list[float]:
    """Cumulative sparsity after each round: the cubic schedule of Zhu & Gupta (2017), ending at ``target``."""
    return [target * (1 - (1 - k / steps) ** 3) for k in range(1, steps + 1)]


def prune_global(model: nn.Module, sparsity: float) -> None:
    """Zero the globally smallest-magnitude weights until ``sparsity`` of all conv/linear weights are zero.

    Weights already masked stay masked; the count passed to ``global_unstructured`` is the number of
    further weights to remove, so rounds compose to the cumulative target. Only masked weights count as removed:
    a weight that is zero but unmasked (a model that holds exact zeros) is still among those L1 pruning picks, and
    counting it twice would leave the model short of its target."""
    layers = list(quantizable_layers(model).values())
    total = sum(layer.weight.numel() for layer in layers)
    masked = sum(int((layer.weight_mask == 0).sum()) for layer in layers if prune.is_pruned(layer))
    wanted = round(sparsity * total) - masked
    if wanted > 0:
        # contiguous scores: after channels-last fine-tuning a pruned layer's recomputed weight keeps that layout,
        # which global_unstructured's flattening cannot view
        prune.global_unstructured([(layer, "weight") for layer in layers], pruning_method=prune.L1Unstructured,
                                  amount=wanted,
                                  importance_scores={(layer, "weight"): layer.weight.detach().contiguous() for layer in layers})


def prune_model(model: nn.Module, sparsity: float, schedule: str, steps: int,
                finetune: Callable[[nn.Module, int], nn.Module] | None) -> nn.Module:
    """Prune to ``sparsity``; with ``finetune``, train after the (last) round, or after every round."""
    rounds = [sparsity] if schedule == "one_shot" else sparsity_schedule(sparsity, steps)
    for k, target in enumerate(rounds):
        prune_global(model, target)
        if finetune is not None:
            model = finetune(model, k)
    for layer in quantizable_layers(model).values():
        if prune.is_pruned(layer):
            prune.remove(layer, "weight")
    return model


def weight_sparsity(model: nn.Module) -> float:
    layers = list(quantizable_layers(model).values())
    total = sum(layer.weight.numel() for layer in layers)
    return sum(int((layer.weight == 0).sum()) for layer in layers) / max(total, 1)


def sparse_size_bytes(model: nn.Module) -> int:
    """A bitmap sparse format: per conv/linear weight one bit per position plus the fp32 non-zeros; every
    other floating tensor dense at 32 bits. Dense storage is counted instead where it is smaller."""
    total, counted = 0, set()
    for layer in quantizable_layers(model).values():
        weight = layer.weight
        counted.add(id(weight))
        nonzero = int((weight != 0).sum())
        total += min(math.ceil(weight.numel() / 8) + 4 * nonzero, 4 * weight.numel())
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) not in counted and tensor.is_floating_point():
            total += tensor.numel() * tensor.element_size()
    return total


class PrunedConfig(StoredConfig):
    """A pruned variant's config: the sparsity its weights hold, typed, and said by its name (prune-s50,
    ceag+prune-s90-iter: an 's<percent>' part, the params' target, which the weights meet to the rounding)."""

    sparsity: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _name_says_the_sparsity(self) -> "PrunedConfig":
        named = [int(part[1:]) for part in re.split(r"[-+]", self.name) if re.fullmatch(r"s\d+", part)]
        percent = 100 * self.sparsity
        if len(named) != 1 or abs(named[0] - percent) > 1:
            raise ValueError(f"its name {self.name!r} does not say its sparsity {self.sparsity:.3f} (an "
                             f"'s{round(percent)}' part); the name or the sparsity was edited")
        return self


def rebuild_pruned(config: dict, state: dict) -> nn.Module:
    """The fp32 model with the stored zeros; its weights must hold the sparsity its config records (weights
    edited or swapped for dense ones would otherwise be measured as the pruned variant)."""
    model = build_fp32(config, state)
    held = weight_sparsity(model)
    if abs(held - config["sparsity"]) > 1e-6:
        raise WeightsMismatch(f"they are {held:.6f} sparse but the config records {config['sparsity']:.6f}")
    return model


# A pruned model is an fp32 model with zeros: rebuilt as one, counted in its sparse format, run dense.
PRUNED = registry.register(VariantKind("pruned", rebuild=rebuild_pruned,
                                       size_bytes=lambda config, model: sparse_size_bytes(model),
                                       kernels="dense-decoded", config=PrunedConfig))


def pruned_variant(model: nn.Module, params, finetune: Callable[[nn.Module, int], nn.Module] | None) -> tuple[nn.Module, dict]:
    """Prune ``model`` as ``params`` (the prune section) says, fine-tuning with ``finetune``; the pruned module
    and what its variant config records."""
    fp32_bytes = fp32_size_bytes(model)
    pruned = prune_model(model, params.sparsity, params.schedule, params.steps, finetune).eval()
    held = weight_sparsity(pruned)
    if abs(held - params.sparsity) > 0.01:  # the name says the target: a variant that misses it is not saved
        raise FairquantError(f"pruning to {params.variant_name()} left {held:.3f} of the weights zero, not "
                             f"{params.sparsity}: the fine-tuning diverged (NaN weights) or the model held more zeros "
                             "than the target; lower the section's lr or raise its sparsity")
    return pruned, {"kind": PRUNED.name, "kernels": PRUNED.kernels, "sparsity": held,
                    "size_bytes": sparse_size_bytes(pruned), "fp32_size_bytes": fp32_bytes}


def describe_variant(config: dict) -> str:
    return (f"{config['name']}: sparsity {config['sparsity']:.3f}; {config['size_bytes'] / 1e6:.2f} MB sparse vs "
            f"{config['fp32_size_bytes'] / 1e6:.2f} MB fp32 ({config['fp32_size_bytes'] / config['size_bytes']:.2f}x)")
