"""A model folder (fp32 or compressed) -> predictions, size and latency, whatever the variant kind."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from fairquant.compress import fakequant, int8, kmeans, pruning, registry
from fairquant.compress.checkpoints import CHECKPOINT, build_fp32, fp32_size_bytes
from fairquant.compress.registry import VariantKind
from fairquant.io import load_checkpoint
from fairquant.models import build_from_config
from fairquant.params import QuantSchemeParams
from fairquant.training import predict_scores



@dataclass
class LoadedVariant:
    name: str
    kind: str  # "fp32" | "ptq-int8" | "fakequant" | "kmeans" | "pruned"
    kernels: str  # what ran it: "fp32", "int8" (real kernels), "simulated", "dense-decoded"
    config: dict
    model: nn.Module
    size_bytes: int
    score: Callable[[np.ndarray], np.ndarray]
    latency: Callable[[], dict]
    forward: Callable[[torch.Tensor], torch.Tensor]  # a standardised input batch -> raw outputs (logits, embeddings)


def _untrained(config: dict) -> nn.Module:
    return build_from_config(config).eval()


def _load_into(model: nn.Module, state_dict: dict) -> nn.Module:
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


registry.register(VariantKind("fp32", build_fp32, lambda config, model: fp32_size_bytes(model), "fp32"))
registry.register(VariantKind("pruned", build_fp32, lambda config, model: pruning.sparse_size_bytes(model),
                              "dense-decoded"))
registry.register(VariantKind(
    "fakequant",
    lambda config, state: _load_into(
        fakequant.quantize_model(_untrained(config), QuantSchemeParams(**config["scheme"])), state),
    lambda config, model: fakequant.quantized_size_bytes(model), "simulated"))
registry.register(VariantKind(
    "kmeans", lambda config, state: _load_into(kmeans.empty_clustered(_untrained(config), config["clusters"]), state),
    lambda config, model: kmeans.clustered_size_bytes(model, config["clusters"]), "dense-decoded"))
registry.register(VariantKind(
    "ptq-int8",
    lambda config, state: int8.convert_int8(_untrained(config), state, config["export_batch"], config["image_size"],
                                            config["scheme"]["observer"], config["scheme"]["percentile"],
                                            config.get("int8_check", {}).get("reduce_range", False)),
    lambda config, model: int8.stored_size_bytes(model), "int8"))


def rebuild(config: dict, state_dict: dict) -> nn.Module:
    """The module of a stored variant (for ptq-int8, the reference q/dq graph, not yet compiled)."""
    return registry.lookup(config["kind"]).rebuild(config, state_dict)


def size_bytes(config: dict, model: nn.Module) -> int:
    return registry.lookup(config["kind"]).size_bytes(config, model)


def load_variant(model_dir: str | Path, *, batch_size: int, repeats: int, latency_batch: int) -> LoadedVariant:
    checkpoint = load_checkpoint(Path(model_dir) / CHECKPOINT)
    config = checkpoint["config"]
    image_size = config["image_size"]
    kind = registry.lookup(config["kind"])
    if kind.kernels == "int8":
        int8.require_loadable_here(config)
    # For ptq-int8 the prepared state holds every weight and observer range, so an untrained model of the same
    # architecture is enough to rebuild the graph it is loaded into.
    model = kind.rebuild(config, checkpoint["state_dict"])
    size = kind.size_bytes(config, model)
    if kind.kernels == "int8":
        export_batch = config["export_batch"]
        compiled = int8.compile_for_cpu(model)

        def score(images: np.ndarray) -> np.ndarray:
            logits = int8.run_fixed_batches(compiled, images, export_batch)
            return torch.sigmoid(logits).numpy()

        def latency() -> dict:
            measured = int8.measure_latency(compiled, export_batch, image_size, repeats, "compiled")
            return {"compiled": asdict(measured)}

        return LoadedVariant(config["name"], kind.name, kind.kernels, config, model, size, score, latency,
                             lambda batch: int8.run_fixed_tensor(compiled, batch, export_batch))

    if kind.kernels == "fp32":
        def latency() -> dict:
            eager = int8.measure_latency(model, latency_batch, image_size, repeats, "eager")
            compiled = int8.measure_latency(int8.compile_for_cpu(model), latency_batch, image_size, repeats,
                                            "compiled")
            return {"eager": asdict(eager), "compiled": asdict(compiled)}
    else:
        # No kernels for these formats here: fake quantization only simulates the integers, and shared or
        # sparse weights are decoded to dense fp32. A latency would be fp32's or worse, so none is claimed.
        def latency() -> dict:
            return {}

    return LoadedVariant(config["name"], kind.name, kind.kernels, config, model, size,
                         lambda images: predict_scores(model, images, batch_size), latency, model)


