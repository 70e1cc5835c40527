"""Stored variants: the fp32 reference and every compressed model as a model folder (checkpoint + info.json).

What every compressor stage needs to read the fp32 model and write its own variant, without importing the
other compressors (so that an edit to one compressor re-runs only its own stages)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from fairquant.errors import FairquantError
from fairquant.io import load_checkpoint
from fairquant.models import build_from_config

CHECKPOINT = "model.pt"


def build_fp32(config: dict, state_dict: dict) -> nn.Module:
    model = build_from_config(config)
    model.load_state_dict(state_dict)
    return model.eval()


def variant_name(method: str, params) -> str:
    """What a variant is, in its name: ptq-w4a8-balanced, qat-w4a4, kmeans-k16, prune-s90."""
    if method in ("ptq", "qat"):
        activations = "f" if params.activation_bits is None else params.activation_bits
        name = f"{method}-w{params.bits}a{activations}"
        name += "-pt" if params.granularity == "per_tensor" else ""
        name += "-mixed" if params.layers else ""
        return name + (f"-{params.calibration}" if method == "ptq" else "")
    if method == "kmeans":
        return f"kmeans-k{params.clusters}" + ("-ft" if params.epochs else "")
    if method == "prune":
        return f"prune-s{round(params.sparsity * 100)}" + ("-iter" if params.schedule == "iterative" else "")
    raise ValueError(method)


def fp32_size_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values() if t.is_floating_point())


def load_fp32(model_dir: str | Path) -> tuple[nn.Module, dict]:
    checkpoint = load_checkpoint(Path(model_dir) / CHECKPOINT)
    if checkpoint["config"]["kind"] != "fp32":
        raise FairquantError(f"{model_dir} holds a {checkpoint['config']['kind']} model; compressors start from fp32")
    return build_fp32(checkpoint["config"], checkpoint["state_dict"]), checkpoint["config"]


def base_config(fp32_config: dict, kind: str, name: str, **extra) -> dict:
    """A compressed variant's config: the fp32 model's identity (minus its training log) plus its own.

    When the fp32 model was itself fine-tuned by a remedy (``mitigation`` in its config, e.g. fairalm), the
    name says both parts: fairalm+ptq-w8a8-train."""
    keep = {k: v for k, v in fp32_config.items() if k not in ("finetune", "kind", "name")}
    if fp32_config.get("mitigation"):
        name = f"{fp32_config['mitigation']['method']}+{name}"
    return {**keep, "kind": kind, "name": name, **extra}


HEAD = "head.pt"  # a verification model's margin head (identity centres), for compression fine-tuning


def save_variant(out: str | Path, state_dict: dict, config: dict, head: dict | None = None) -> None:
    from fairquant.io import atomic_dir, save_checkpoint, write_json

    with atomic_dir(out) as tmp:
        save_checkpoint(tmp / CHECKPOINT, state_dict, config)
        if head is not None:
            save_checkpoint(tmp / HEAD, head, {"kind": "margin-head", "of": config["name"]})
        write_json(tmp / "info.json", config)
