"""A model folder (fp32 or compressed) -> predictions, size and latency, whatever the variant kind."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from fairquant import quantization
from fairquant.io import load_checkpoint
from fairquant.models import build_model
from fairquant.training import predict_scores

CHECKPOINT = "model.pt"


@dataclass
class LoadedVariant:
    name: str
    kind: str  # "fp32" | "ptq-int8"
    config: dict
    model: nn.Module
    size_bytes: int
    score: Callable[[np.ndarray], np.ndarray]
    latency: Callable[[], dict]


def build_fp32(config: dict, state_dict: dict) -> nn.Module:
    model = build_model(config["arch"], small_input_stem=config["small_input_stem"])
    model.load_state_dict(state_dict)
    return model.eval()


def load_variant(model_dir: str | Path, *, batch_size: int, repeats: int, latency_batch: int) -> LoadedVariant:
    checkpoint = load_checkpoint(Path(model_dir) / CHECKPOINT)
    config = checkpoint["config"]
    image_size = config["image_size"]
    if config["kind"] == "fp32":
        model = build_fp32(config, checkpoint["state_dict"])

        def latency() -> dict:
            eager = quantization.measure_latency(model, latency_batch, image_size, repeats, "eager")
            compiled = quantization.measure_latency(quantization.compile_for_cpu(model), latency_batch, image_size,
                                                    repeats, "compiled")
            return {"eager": asdict(eager), "compiled": asdict(compiled)}

        return LoadedVariant(config["name"], "fp32", config, model, quantization.fp32_size_bytes(model),
                             lambda images: predict_scores(model, images, batch_size), latency)
    if config["kind"] == "ptq-int8":
        # The prepared state holds every weight and observer range, so an untrained model of the same
        # architecture is enough to rebuild the graph it is loaded into.
        untrained = build_model(config["arch"], small_input_stem=config["small_input_stem"]).eval()
        export_batch = config["export_batch"]
        reference = quantization.convert_int8(untrained, checkpoint["state_dict"], export_batch, image_size)
        compiled = quantization.compile_for_cpu(reference)

        def score(images: np.ndarray) -> np.ndarray:
            logits = quantization.run_fixed_batches(compiled, images, export_batch)
            return torch.sigmoid(logits).numpy()

        def latency() -> dict:
            measured = quantization.measure_latency(compiled, export_batch, image_size, repeats, "compiled")
            return {"compiled": asdict(measured)}

        return LoadedVariant(config["name"], "ptq-int8", config, reference,
                             quantization.stored_size_bytes(reference), score, latency)
    raise ValueError(f"unknown variant kind {config['kind']!r} in {model_dir}")

