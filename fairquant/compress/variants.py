"""A model folder (fp32 or compressed) -> predictions, size and latency, whatever the variant kind.

The kinds are registered by the modules that define them (fp32 in checkpoints, pruned in pruning, fakequant in
fakequant, kmeans in kmeans, ptq-int8 in int8); this loader imports each of them, since it reads them all."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from fairquant.compress import checkpoints, fakequant, int8, kmeans, pruning, registry
from fairquant.errors import FairquantError
from fairquant.io import load_checkpoint
from fairquant.models import first_non_finite
from fairquant.training import logits_of, predict_scores, probabilities

KINDS = (checkpoints.FP32, pruning.PRUNED, fakequant.FAKEQUANT, kmeans.KMEANS, int8.PTQ_INT8)  # what it reads
# what a variant's config records about how it was made, copied to its predictions' info.json (``details``)
DETAILS = ("calibration", "scheme", "layers", "clusters", "sparsity", "training", "fp32_size_bytes", "int8_check",
           "trained_here", "pretrained", "classes", "mitigation", "training_seed")


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
    device: torch.device  # where score and forward run: the CPU for real int8, else the device asked for

    @property
    def details(self) -> dict:
        """How the variant was made (compressor settings, calibration, int8 check, remedy record, ...)."""
        return {key: value for key, value in self.config.items() if key in DETAILS}


def rebuild(config: dict, state_dict: dict) -> nn.Module:
    """The module of a stored variant (for ptq-int8, the reference q/dq graph, not yet compiled)."""
    return registry.lookup(config["kind"]).rebuild(config, state_dict)


def size_bytes(config: dict, model: nn.Module) -> int:
    return registry.lookup(config["kind"]).size_bytes(config, model)


def load_variant(model_dir: str | Path, *, batch_size: int, repeats: int, latency_batch: int,
                 device: torch.device | str = "cpu") -> LoadedVariant:
    """The variant stored in ``model_dir``, ready to score on ``device`` (a float model: fp32, fake-quant, k-means,
    pruned); real int8 runs on the CPU's x86 kernels whatever ``device`` says. Its ``latency`` is always timed on
    the CPU (a float model scoring elsewhere is timed on a CPU copy); ``device`` records where it scores."""
    path = Path(model_dir) / checkpoints.CHECKPOINT
    checkpoint = load_checkpoint(path)
    config = checkpoint["config"]
    damaged = first_non_finite(checkpoint["state_dict"])  # first: NaN weights would also break the config's checks
    if damaged is not None:
        raise FairquantError(f"{path}: tensor {damaged!r} holds NaN or infinite values; the model is damaged or "
                             f"diverged: {checkpoints.RERUN}")
    checkpoints.check_config(path, config)  # before anything reads it
    image_size = config["image_size"]
    kind = registry.lookup(config["kind"])
    if kind.kernels == "int8":
        int8.require_loadable_here(config)
    model = checkpoints.rebuild_stored(path, config, checkpoint["state_dict"])
    size = kind.size_bytes(config, model)
    if kind.kernels == "int8":
        export_batch = config["export_batch"]
        compiled = int8.compile_for_cpu(model)

        def score(images: np.ndarray) -> np.ndarray:
            return probabilities(logits_of(int8.run_fixed_batches(compiled, images, export_batch))).numpy()

        def latency() -> dict:
            measured = int8.measure_latency(compiled, export_batch, image_size, repeats, "compiled")
            return {"compiled": asdict(measured)}

        return LoadedVariant(config["name"], kind.name, kind.kernels, config, model, size, score, latency,
                             lambda batch: int8.run_fixed_tensor(compiled, batch.cpu(), export_batch),
                             torch.device("cpu"))

    device = torch.device(device)
    model.to(device)

    if kind.kernels == "fp32":
        def latency() -> dict:
            on_cpu = model if device.type == "cpu" else copy.deepcopy(model).cpu()
            eager = int8.measure_latency(on_cpu, latency_batch, image_size, repeats, "eager")
            compiled = int8.measure_latency(int8.compile_for_cpu(on_cpu), latency_batch, image_size, repeats,
                                            "compiled")
            return {"eager": asdict(eager), "compiled": asdict(compiled)}
    else:
        # No kernels for these formats here: fake quantization only simulates the integers, and shared or
        # sparse weights are decoded to dense fp32. A latency would be fp32's or worse, so none is claimed.
        def latency() -> dict:
            return {}

    return LoadedVariant(config["name"], kind.name, kind.kernels, config, model, size,
                         lambda images: predict_scores(model, images, batch_size, device), latency,
                         lambda batch: model(batch.to(device)), device)
