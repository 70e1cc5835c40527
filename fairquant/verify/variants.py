"""Every compressed variant of the verification branch, made by the same compressors as classification.

``ptq`` (calibration only: real x86 int8 kernels for W8A8 where the CPU and scheme allow, simulated otherwise)
and ``quantface`` (QuantFace: fake quantization fine-tuned to match the fp32 embeddings, no labels) run at every
entry of ``verify.bits`` x ``verify.calibration``; ``qat``, ``kmeans`` and ``prune`` run once each, with their own
params sections and margin-loss fine-tuning. Names say what each is: ptq-w4a4-synthetic is plain PTQ calibrated
on synthetic faces, quantface-w4a4-synthetic is QuantFace fine-tuned on them (FACTS: not the same method)."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from fairquant.compress import calibration, fakequant, int8, kmeans, pruning
from fairquant.compress.checkpoints import base_config, fp32_size_bytes
from fairquant.errors import FairquantError
from fairquant.params import DistributedParams, Params, QuantSchemeParams

CHECK_IMAGES = 256  # training images the int8 kernels are also checked on (inputs beyond the calibrated ranges)


@dataclass(frozen=True)
class VariantSpec:
    method: str  # ptq | quantface | qat | kmeans | prune
    bits: int | None = None
    calibration: str | None = None
    mixed: bool = False  # verify.layers sets some layers' bits apart from ``bits``

    @property
    def name(self) -> str:
        if self.method in ("ptq", "quantface"):
            return f"{self.method}-w{self.bits}a{self.bits}{'-mixed' if self.mixed else ''}-{self.calibration}"
        return self.method


def planned_variants(params: Params) -> list[VariantSpec]:
    specs = []
    for method in params.verify.methods:
        if method in ("ptq", "quantface"):
            specs += [VariantSpec(method, b, c, bool(mixed_layers(params.verify.layers, b, b)))
                      for b in params.verify.bits for c in params.verify.calibration]
        else:
            specs.append(VariantSpec(method))
    return specs


def fine_tunes_with_labels(specs: list[VariantSpec], params: Params) -> bool:
    """Whether a planned variant fine-tunes on the margin loss (qat, kmeans, prune with epochs > 0): then the fp32
    model's margin head is needed."""
    sections = {"qat": params.quantize_qat, "kmeans": params.quantize_kmeans, "prune": params.prune}
    return any(spec.method in sections and sections[spec.method].epochs > 0 for spec in specs)


def mixed_layers(layers: dict, bits: int, activation_bits: int | None) -> dict:
    """verify.layers for a scheme at ``bits``: the map, unless every entry runs the scheme's own bits for weights
    and inputs (then no layer differs, and W8A8 keeps the int8 kernels): {}."""
    uniform = activation_bits == bits and all(value == bits for value in layers.values())
    return {} if uniform else dict(layers)


def ptq_scheme(params: Params, bits: int, calibration_set: str) -> QuantSchemeParams:
    """quantize_ptq's scheme at ``bits`` for weights and activations, with verify.layers' mixed precision (the
    compressor's own settings otherwise; quantize_ptq.layers names the classifier's modules, not these). The
    calibration set's size is verify.data.calibration_size's, recorded with the variant."""
    return params.quantize_ptq.scheme().model_copy(update={
        "bits": bits, "activation_bits": bits, "calibration": "train" if calibration_set == "balanced" else
        calibration_set, "calibration_size": None, "layers": mixed_layers(params.verify.layers, bits, bits)})


def quantface_scheme(params: Params, bits: int, calibration_set: str) -> QuantSchemeParams:
    """QuantFace's: weights per-channel asymmetric, activations per tensor (FACTS, Face verification)."""
    return ptq_scheme(params, bits, calibration_set).model_copy(update={"granularity": "per_channel",
                                                                        "weight_symmetric": False})


@dataclass
class VerificationData:
    """What the compressors read from the prepared verification folder."""

    train_images: np.ndarray
    train_rows: np.ndarray
    identities: np.ndarray
    calibration_dir: Path
    image_size: int


def calibration_images(data: VerificationData, name: str, size: int | None, seed: int,
                       size_key: str = "verify.data.calibration_size") -> tuple[np.ndarray, dict]:
    folder = data.calibration_dir / name
    if not (folder / "images.npy").is_file():
        raise FairquantError(f"verification calibration set '{name}' is missing from {data.calibration_dir} (the "
                             f"balanced set needs race folders in verify.data.train_root); choose another in "
                             f"verify.calibration")
    return calibration.load_set(folder, size, size_key, seed, image_size=data.image_size,
                                rerun="re-run verify_prepare (dvc repro -f -s verify_prepare)")


def build_variant(spec: VariantSpec, model: torch.nn.Module, fp32_config: dict, head_state: dict, params: Params,
                  data: VerificationData, live_root: Path, *, seed: int,
                  processes: DistributedParams | None = None) -> tuple[dict, dict]:
    """(state dict to store, variant config) of one planned variant, made from a copy of ``model`` (k-means and
    pruning change the module they are given). ``processes`` (params.yaml's ``distributed``) spreads the variant's
    training (QuantFace, or the compressor's fine-tune) over several processes; None: one process."""
    from fairquant.models import pick_device
    from fairquant.training import derived_seed
    from fairquant.verify.training import margin_finetuner, quantface

    model = copy.deepcopy(model)
    fp32_bytes = fp32_size_bytes(model)
    common = {"fp32_size_bytes": fp32_bytes, "verify_method": spec.method}
    if spec.method in ("ptq", "quantface"):
        images, info = calibration_images(data, spec.calibration, None, seed)
        common["calibration"] = {"set": info["set"], "size": int(len(images))}
        if spec.method == "ptq":
            scheme = ptq_scheme(params, spec.bits, spec.calibration)
            kernels = params.quantize_ptq.kernels
            if kernels != "simulated" and scheme.uses_int8_kernels():
                rng = np.random.default_rng(seed)
                held_out = np.asarray(data.train_images[np.sort(rng.choice(
                    data.train_rows, min(CHECK_IMAGES, len(data.train_rows)), replace=False))])
                state, reference, check = int8.quantize_int8(
                    model, images, params.latency.batch, data.image_size, scheme.observer, scheme.percentile,
                    int8.reduce_range_for(params.quantize_ptq.int8_reduce_range),
                    params.quantize_ptq.int8_tolerance_db, held_out=held_out)
                return state, base_config(fp32_config, "ptq-int8", spec.name, kernels="int8",
                                          export_batch=params.latency.batch, scheme=scheme.model_dump(),
                                          size_bytes=int8.stored_size_bytes(reference), int8_check=asdict(check),
                                          **common)
            quantized = fakequant.calibrate(fakequant.quantize_model(model, scheme), images)
        else:
            settings = params.verify.quantface
            scheme = quantface_scheme(params, spec.bits, spec.calibration)
            quantized = fakequant.calibrate(fakequant.quantize_model(model, scheme), images)
            quantized = quantface(quantized, model, images, settings,
                                  pick_device(settings.device, "verify.quantface.device"), live_root / spec.name,
                                  seed=derived_seed(seed, settings.seed), label=spec.name, processes=processes)
            common["quantface"] = params.verify.quantface.model_dump()
        return quantized.state_dict(), base_config(
            fp32_config, "fakequant", spec.name, kernels="simulated", scheme=scheme.model_dump(),
            size_bytes=fakequant.quantized_size_bytes(quantized), layers=fakequant.describe(quantized), **common)

    key = {"qat": "quantize_qat", "kmeans": "quantize_kmeans", "prune": "prune"}[spec.method]
    section = getattr(params, key)
    if spec.method == "qat":  # verify.layers, not the classifier's quantize_qat.layers, names these modules
        section = section.model_copy(update={"layers": mixed_layers(params.verify.layers, section.bits,
                                                                    section.activation_bits)})
    finetune = margin_finetuner(data.train_images, data.train_rows, data.identities, head_state, params.verify.train,
                                section, live_root / spec.method, spec.method, seed=derived_seed(seed, section.seed),
                                freeze_bn=spec.method != "prune", device=pick_device(section.device, f"{key}.device"),
                                section=key, processes=processes)
    if spec.method == "qat":
        set_name = {"train": "train", "balanced": "balanced", "synthetic": "synthetic"}.get(section.calibration)
        if set_name is None:
            raise FairquantError(f"quantize_qat.calibration={section.calibration} has no verification set; use "
                                 f"train, balanced or synthetic when verify.methods lists qat")
        images, _ = calibration_images(data, set_name, section.calibration_size, seed, "quantize_qat.calibration_size")
        module, recorded = fakequant.qat_variant(model, section, images, finetune)
    elif spec.method == "kmeans":
        module, recorded = kmeans.kmeans_variant(model, section, finetune)
    else:
        module, recorded = pruning.pruned_variant(model, section, finetune)
    name = section.variant_name()
    common.pop("fp32_size_bytes")  # the compressor's own record has it
    return module.state_dict(), base_config(fp32_config, recorded.pop("kind"), name, **recorded, **common)
