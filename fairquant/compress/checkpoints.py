"""Stored variants: the fp32 reference and every compressed model as a model folder (checkpoint + info.json).

What every compressor stage needs to read the fp32 model and write its own variant, without importing the
other compressors (so that an edit to one compressor re-runs only its own stages). The fp32 kind registers here;
each compressor module registers its own kinds (:mod:`fairquant.compress.registry`)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from fairquant.compress import registry
from fairquant.compress.registry import VariantKind
from fairquant.errors import FairquantError
from fairquant.io import load_checkpoint
from fairquant.models import build_from_config

CHECKPOINT = "model.pt"


def build_fp32(config: dict, state_dict: dict) -> nn.Module:
    model = build_from_config(config)
    model.load_state_dict(state_dict)
    return model.eval()


def untrained(config: dict) -> nn.Module:
    """The stored variant's architecture, untrained: what a compressor's rebuild loads the stored state into."""
    return build_from_config(config).eval()


def load_into(model: nn.Module, state_dict: dict) -> nn.Module:
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def fp32_size_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values() if t.is_floating_point())


FP32 = registry.register(VariantKind("fp32", rebuild=build_fp32,
                                     size_bytes=lambda config, model: fp32_size_bytes(model), kernels="fp32"))


def load_fp32(model_dir: str | Path) -> tuple[nn.Module, dict]:
    checkpoint = load_checkpoint(Path(model_dir) / CHECKPOINT)
    if checkpoint["config"]["kind"] != FP32.name:
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
