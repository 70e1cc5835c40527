"""Post-training int8 quantization with real x86 CPU kernels (torchao PT2E + inductor).

The maintained flow: ``torch.export`` (strict; non-strict export fails on these models) ->
``prepare_pt2e`` with ``X86InductorQuantizer`` -> calibrate -> ``convert_pt2e`` -> ``torch.compile``
with inductor freezing, which lowers the quantize/dequantize patterns to oneDNN int8 kernels.

CPUs differ. Without VNNI (AVX2-only, or AVX-512 before Cascade Lake) oneDNN multiplies uint8 inputs by int8
weights with instructions that add pairs of products into saturating int16, so inputs above 127 can overflow:
torchao's x86 config then needs ``reduce_range`` (activations on 0..127, 7 bits). Even then the compiled
model is not exactly its reference: inductor's fused conv+quantize kernels saturate at 255, not at the
graph's 127, so activations above their calibrated range pass on larger (explicit clamps restore agreement
but stop the fusion: slower than fp32, measured). Every compiled model is therefore checked against its own
q/dq reference (:func:`quantize_int8`) and refused when they disagree by more than quantization itself.

What is stored is the *prepared* model's state dict: the fp32 weights plus every observer's calibrated
range. Rebuilding is export -> prepare -> load those observers -> convert, which is deterministic and
keeps checkpoints loadable with ``weights_only=True`` (a pickled GraphModule would not be).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from fairquant.compress import registry
from fairquant.compress.checkpoints import untrained
from fairquant.compress.registry import SchemeConfig, VariantKind
from fairquant.errors import FairquantError
from fairquant.models import to_input

# oneDNN's int8 convolutions accumulate in int32 only with one of these; otherwise in saturating int16 pairs.
_VNNI_FEATURES = (("AMX", "amx_int8"), ("AVX512-VNNI", "avx512_vnni"), ("AVX-VNNI", "avx_vnni"))
_OTHER_FEATURES = (("AVX512", "avx512_f"), ("AVX2", "avx2"))
_CPUINFO_NAMES = {"avx512_f": "avx512f"}  # /proc/cpuinfo spells this one flag differently


@dataclass(frozen=True)
class CpuInt8:
    capability: str  # the best int8 instruction set: AMX, AVX512-VNNI, AVX-VNNI, AVX512, AVX2, or torch's own name
    torch_capability: str  # torch.backends.cpu.get_cpu_capability(): the vector ISA ATen dispatches to
    vnni: bool


def _cpu_features() -> set[str]:
    """Feature names as torch's cpuinfo reports them; the kernel's /proc/cpuinfo flags on a torch without that query."""
    try:
        return {name for name, present in torch.cpu.get_capabilities().items() if present is True}
    except AttributeError:
        cpuinfo = Path("/proc/cpuinfo")
        text = cpuinfo.read_text() if cpuinfo.exists() else ""
        flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
        return {key for _, key in (*_VNNI_FEATURES, *_OTHER_FEATURES) if _CPUINFO_NAMES.get(key, key) in flags}


def cpu_int8() -> CpuInt8:
    """What this CPU offers oneDNN's int8 kernels."""
    features = _cpu_features()
    for label, key in _VNNI_FEATURES:
        if key in features:
            return CpuInt8(label, torch.backends.cpu.get_cpu_capability(), True)
    label = next((label for label, key in _OTHER_FEATURES if key in features), torch.backends.cpu.get_cpu_capability())
    return CpuInt8(label, torch.backends.cpu.get_cpu_capability(), False)


def reduce_range_for(setting: str | bool | None = "auto") -> bool:
    """``auto`` (or None): 7-bit activations exactly where the CPU has no VNNI; a bool forces the choice."""
    if setting in ("auto", None):
        return not cpu_int8().vnni
    if not isinstance(setting, bool):
        raise ValueError(f"reduce_range setting must be 'auto', True or False, found {setting!r}")
    return setting


@contextlib.contextmanager
def _quiet_torch_chatter():
    """torchao's import and inductor's first compile log warnings that say nothing about the model (an Enum
    registration, "No CUDA runtime is found"); a stage that fails must print one line, not those."""
    loggers = [logging.getLogger(name) for name in ("torch.utils._pytree", "torch.utils.cpp_extension")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _quantizer(observer: str = "histogram", percentile: float = 1.0, reduce_range: bool = False):
    """x86's int8 scheme (uint8 inputs per tensor, int8 per-channel symmetric weights) with the chosen
    activation observer. ``reduce_range`` goes through torchao's own config argument, which sets the
    activations' QuantizationSpec to quant_max 127 (observers, quantize nodes and kernels all follow it)."""
    import dataclasses

    from torchao.quantization.pt2e import observer as observers
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    from fairquant.compress.fakequant import _percentile_observer_class, levels_histogram_observer_class

    constructors = {"minmax": observers.MinMaxObserver, "moving_average": observers.MovingAverageMinMaxObserver,
                    "histogram": levels_histogram_observer_class()}
    if observer == "percentile":
        constructor = _percentile_observer_class().with_args(percentile=percentile, eps=2 ** -12)
    else:
        constructor = constructors[observer].with_args(eps=2 ** -12)
    config = get_default_x86_inductor_quantization_config(reduce_range=reduce_range)
    activation = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=constructor)
    config = dataclasses.replace(config, input_activation=activation, output_activation=activation)
    return X86InductorQuantizer().set_global(config)


def _export(model: nn.Module, batch_size: int, image_size: int, dynamic_batch: bool = False) -> torch.fx.GraphModule:
    example = torch.zeros(batch_size, 3, image_size, image_size)
    dynamic = ({0: torch.export.Dim("batch", min=1, max=65536)},) if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(model.eval(), (example,), dynamic_shapes=dynamic, strict=True).module()


def prepare_int8(model: nn.Module, batch_size: int, image_size: int, observer: str = "histogram",
                 percentile: float = 1.0, reduce_range: bool | None = None, *,
                 dynamic_batch: bool = False) -> torch.fx.GraphModule:
    """The observed graph. ``dynamic_batch``: any batch size runs (for calibration); otherwise it is fixed.
    Both give the same observer names, so a state calibrated on one loads into the other."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    return prepare_pt2e(_export(model, batch_size, image_size, dynamic_batch),
                        _quantizer(observer, percentile, reduce_range_for(reduce_range)))


@torch.no_grad()
def run_fixed_tensor(module: nn.Module, batch: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Run an exported module (fixed batch size) on a standardised batch of any length, padding the last part.
    The batch is made contiguous: a compiled graph is specialised on its input's strides, and ``to_input``'s
    permuted batch and its mirror (``flip``, contiguous) would otherwise compile it twice."""
    outputs = []
    batch = batch.contiguous()
    for start in range(0, len(batch), batch_size):
        part = batch[start:start + batch_size]
        real = part.shape[0]
        if real < batch_size:
            part = torch.cat([part, part[-1:].expand(batch_size - real, *part.shape[1:])])
        outputs.append(module(part)[:real].float())
    return torch.cat(outputs)


@torch.no_grad()
def run_fixed_batches(module: nn.Module, images: np.ndarray, batch_size: int) -> torch.Tensor:
    """Run an exported module (fixed batch size) over all images, padding the last batch.

    For prediction only: the padded rows' outputs are dropped. Never for calibration, where the copies
    would be observed as if they were data."""
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = to_input(images[start:start + batch_size])
        real = batch.shape[0]
        if real < batch_size:
            batch = torch.cat([batch, batch[-1:].expand(batch_size - real, -1, -1, -1)])
        outputs.append(module(batch)[:real].float().reshape(real, -1))
    if not outputs:
        return torch.zeros(0)
    out = torch.cat(outputs)
    return out.flatten() if out.shape[1] == 1 else out  # one logit per image, or an embedding per row


def calibrate_int8(model: nn.Module, calibration: np.ndarray, batch_size: int, image_size: int,
                   observer: str = "histogram", percentile: float = 1.0,
                   reduce_range: bool | None = None) -> dict[str, torch.Tensor]:
    """Observe activation ranges on exactly the calibration images (a dynamic-batch graph, so the last
    batch is not padded); return the prepared state to store."""
    if len(calibration) == 0:
        raise FairquantError("the calibration set is empty; build it or choose another set")
    prepared = prepare_int8(model, batch_size, image_size, observer, percentile, reduce_range, dynamic_batch=True)
    with torch.no_grad():
        for start in range(0, len(calibration), batch_size):
            prepared(to_input(calibration[start:start + batch_size]))
    return {k: v.detach().clone() for k, v in prepared.state_dict().items()}


def convert_int8(model: nn.Module, prepared_state: dict[str, torch.Tensor], batch_size: int,
                 image_size: int, observer: str = "histogram", percentile: float = 1.0,
                 reduce_range: bool | None = None) -> torch.fx.GraphModule:
    """Rebuild the int8 model (reference q/dq representation, fixed batch) from a stored prepared state."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    prepared = prepare_int8(model, batch_size, image_size, observer, percentile, reduce_range)
    prepared.load_state_dict(prepared_state, strict=True)
    return convert_pt2e(prepared)


def compile_for_cpu(module: nn.Module) -> nn.Module:
    """Inductor with weight freezing: without it nothing is lowered to int8 kernels (measured: the generated
    code then has no oneDNN int8 call and computes the q/dq reference in fp32, matching it exactly)."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    return torch.compile(module)


def sqnr_db(signal: torch.Tensor, other: torch.Tensor) -> float:
    """10 log10(sum signal^2 / sum (signal - other)^2); inf when they are equal, -inf for a zero signal."""
    noise = float((signal - other).double().pow(2).sum())
    power = float(signal.double().pow(2).sum())
    if noise == 0:
        return math.inf
    return -math.inf if power == 0 else 10 * math.log10(power / noise)


# A floor on the compiled-vs-reference correlation of the logits, next to the relative SQNR rule: SQNR's signal
# power includes a common offset of the logits, so an output that carries no information (a constant near the
# mean) could pass the relative rule when quantization itself is coarse. Correct kernels measured >= 0.99 here
# (ResNet-18, AVX2 with reduce_range), saturating ones about 0.6-0.8.
MIN_CORRELATION = 0.95


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    denominator = float(a.norm() * b.norm())
    return float((a * b).sum()) / denominator if denominator > 0 else (1.0 if torch.equal(a, b) else 0.0)


@dataclass(frozen=True)
class Int8Check:
    """How closely the compiled int8 kernels follow their own q/dq reference, next to how far quantization
    itself moves the fp32 model, on the same images (logits)."""

    cpu_capability: str
    torch_cpu_capability: str
    reduce_range: bool
    images: int
    sqnr_db: float  # compiled kernels vs the q/dq reference
    quant_sqnr_db: float  # the q/dq reference vs fp32
    mean_abs_diff: float  # mean |compiled - reference|
    quant_noise: float  # mean |reference - fp32|
    tolerance_db: float
    correlation: float = 1.0  # compiled vs reference logits
    image_set: str = "calibration"  # which images this check ran on

    @property
    def passed(self) -> bool:
        # Relative, not an absolute SQNR floor: absolute SQNR follows the logits' scale (a saturating model
        # measured 24 dB on one ResNet-18, a correct one 21 dB on another). Measured on an AVX2 machine
        # (ResNet-18, 16-32 px): with reduce_range sqnr_db - quant_sqnr_db was -2.6 to +9 dB, saturating
        # without it -8.7 to -13 dB; the default tolerance of 5 dB sits between the two.
        return self.sqnr_db >= self.quant_sqnr_db - self.tolerance_db and self.correlation >= MIN_CORRELATION

    def summary(self) -> str:
        return (f"on {self.images} {self.image_set} images {self.sqnr_db:.1f} dB vs the q/dq reference (correlation "
                f"{self.correlation:.3f}), quantization itself {self.quant_sqnr_db:.1f} dB vs fp32; mean |logit diff| "
                f"{self.mean_abs_diff:.4f} vs {self.quant_noise:.4f} from quantizing")


def check_kernels(model: nn.Module, reference: nn.Module, compiled: nn.Module, images: np.ndarray, batch_size: int,
                  reduce_range: bool, tolerance_db: float, image_set: str = "calibration") -> Int8Check:
    """Run fp32, the q/dq reference and the compiled kernels over ``images`` and compare their logits."""
    fp32 = run_fixed_batches(model.eval(), images, batch_size)
    expected = run_fixed_batches(reference, images, batch_size)
    got = run_fixed_batches(compiled, images, batch_size)
    cpu = cpu_int8()
    return Int8Check(cpu.capability, cpu.torch_capability, reduce_range, len(images), sqnr_db(expected, got),
                     sqnr_db(fp32, expected), float((got - expected).abs().mean()),
                     float((expected - fp32).abs().mean()), tolerance_db, correlation(expected, got), image_set)


def require_agreement(check: Int8Check) -> None:
    if check.passed:
        return
    vnni = cpu_int8().vnni
    fix = ("set quantize_ptq.int8_reduce_range to auto (7-bit activations on CPUs without VNNI) or "
           "quantize_ptq.kernels to simulated" if not check.reduce_range and not vnni
           else "set quantize_ptq.kernels to simulated")
    raise FairquantError(
        f"the compiled int8 kernels disagree with their own q/dq reference on this CPU ({check.cpu_capability}, "
        f"{'VNNI' if vnni else 'no VNNI'}; reduce_range {str(check.reduce_range).lower()}): {check.summary()}, beyond "
        f"quantize_ptq.int8_tolerance_db={check.tolerance_db:g}; {fix}")


CHECK_CALIBRATION_IMAGES = 256  # as many as the held-out check: agreement is a per-image property, 256 measure it


def quantize_int8(model: nn.Module, images: np.ndarray, batch_size: int, image_size: int, observer: str,
                  percentile: float, reduce_range: bool, tolerance_db: float, held_out: np.ndarray | None = None
                  ) -> tuple[dict[str, torch.Tensor], torch.fx.GraphModule, Int8Check]:
    """Calibrate, convert, compile and check: (state to store, q/dq reference, check). The check runs on the first
    ``CHECK_CALIBRATION_IMAGES`` calibration images and on ``held_out`` images (never calibrated on: inputs beyond
    the calibrated ranges are where saturating kernels show); the worse of the two is returned. Raises :class:`FairquantError` when the
    kernels disagree with the reference, so a wrong model is never stored."""
    with _quiet_torch_chatter():
        state = calibrate_int8(model, images, batch_size, image_size, observer, percentile, reduce_range)
        reference = convert_int8(model, state, batch_size, image_size, observer, percentile, reduce_range)
        compiled = compile_for_cpu(reference)
        checks = [check_kernels(model, reference, compiled, images[:CHECK_CALIBRATION_IMAGES], batch_size, reduce_range,
                                tolerance_db)]
        if held_out is not None and len(held_out):
            checks.append(check_kernels(model, reference, compiled, held_out, batch_size, reduce_range, tolerance_db,
                                        "held-out validation"))
    failed = [c for c in checks if not c.passed]
    check = failed[0] if failed else min(checks, key=lambda c: c.sqnr_db - c.quant_sqnr_db)
    require_agreement(check)
    return state, reference, check


def require_loadable_here(config: dict) -> None:
    """A stored int8 variant was checked on the CPU that made it; refuse to run full-range (8-bit) activations
    on a CPU without VNNI, where the kernels would saturate."""
    reduce_range = config.get("int8_check", {}).get("reduce_range", False)
    cpu = cpu_int8()
    if not reduce_range and not cpu.vnni:
        raise FairquantError(
            f"{config['name']} was quantized with 8-bit activations (reduce_range false), which only CPUs with VNNI "
            f"run correctly; this CPU ({cpu.capability}) has no VNNI and its int8 kernels would saturate: re-run "
            f"quantize_ptq on this machine (int8_reduce_range: auto) or set quantize_ptq.kernels to simulated")


def _get_attr(module: nn.Module, target: str) -> torch.Tensor:
    owner, _, name = target.rpartition(".")
    return getattr(module.get_submodule(owner) if owner else module, name)


def stored_size_bytes(module: torch.fx.GraphModule) -> int:
    """Bytes that a deployment would store, counted as :func:`fakequant.quantized_size_bytes` counts the same scheme.

    A converted PT2E module still carries unused fp32 copies in its state dict, so counting the state dict
    overstates the size; the tensors reached by ``get_attr`` nodes are what the model needs: int8 weights,
    fp32 biases, per-channel fp32 scales, and zero points only where the weights are asymmetric (symmetric
    weights have all-zero int64 zero points in the graph, which a deployment does not store; asymmetric ones
    are counted as int32). Per-tensor activation scale and zero point: 8 bytes per quantize node.
    """
    seen: set[str] = set()
    total = 0
    for node in module.graph.nodes:
        if node.op == "get_attr" and node.target not in seen:
            seen.add(node.target)
            tensor = _get_attr(module, node.target)
            roles = {user.args.index(node) for user in node.users if "quantize_per_channel" in str(user.target)}
            if roles == {1}:  # per-channel scales: fp32 whatever the graph holds
                total += tensor.numel() * 4
            elif roles == {2}:  # per-channel zero points
                total += 0 if not tensor.any() else tensor.numel() * 4
            else:
                total += tensor.numel() * tensor.element_size()
        elif node.op == "call_function" and str(node.target).startswith("quantized_decomposed.quantize_per_tensor"):
            total += 8
    return total


def _rebuild(config: dict, state_dict: dict) -> nn.Module:
    """The reference q/dq graph of a stored int8 variant, not yet compiled: the prepared state holds every weight
    and observer range, so an untrained model of the same architecture is enough to rebuild it."""
    return convert_int8(untrained(config), state_dict, config["export_batch"], config["image_size"],
                        config["scheme"]["observer"], config["scheme"]["percentile"],
                        config.get("int8_check", {}).get("reduce_range", False))


class StoredInt8Check(BaseModel):
    """What quantize_ptq measured of the compiled model; the rebuild reads only ``reduce_range``."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    reduce_range: bool = False


class Int8Config(SchemeConfig):
    """An int8 variant's config: the exported graph's fixed batch and input size, and how it was checked."""

    export_batch: int = Field(ge=1)
    image_size: int = Field(ge=1)
    int8_check: StoredInt8Check = Field(default_factory=StoredInt8Check)


PTQ_INT8 = registry.register(VariantKind("ptq-int8", rebuild=_rebuild,
                                         size_bytes=lambda config, model: stored_size_bytes(model), kernels="int8",
                                         config=Int8Config))


@dataclass(frozen=True)
class Latency:
    median_ms: float
    images_per_s: float
    batch_size: int
    mode: str
    # where it was timed: always the CPU (the int8 kernels are x86 ones; fp32 is timed beside them), with torch's
    # thread count, the best int8 instruction set (cpu_int8().capability: AMX, AVX512-VNNI, ..., AVX2) and ATen's
    # vector ISA, since the same model runs 2-4x apart on machines of one kind (FACTS: CPUs differ)
    device: str = "cpu"
    threads: int = 0
    isa: str = ""
    torch_isa: str = ""
    warmup: int = 0
    repeats: int = 0


LATENCY_WARMUP = 3  # untimed calls first (the first ones compile)
LATENCY_SEED = 0  # the timed batch: seeded standard-normal images, the same on every run


@torch.no_grad()
def measure_latency(module: nn.Module, batch_size: int, image_size: int, repeats: int, mode: str) -> Latency:
    """Median wall time of one batch of ``batch_size`` images on the CPU after warm-up (first calls trigger
    compilation). The batch is a seeded sample of standardised noise images, not test images: the kernels' time
    does not depend on pixel values, so the cost is (warm-up + ``repeats``) batches whatever the test set's size."""
    batch = torch.randn(batch_size, 3, image_size, image_size,
                        generator=torch.Generator().manual_seed(LATENCY_SEED))
    for _ in range(LATENCY_WARMUP):
        module(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        module(batch)
        times.append(time.perf_counter() - start)
    median = float(np.median(times))
    cpu = cpu_int8()
    return Latency(median * 1e3, batch_size / median, batch_size, mode, "cpu", torch.get_num_threads(),
                   cpu.capability, cpu.torch_capability, LATENCY_WARMUP, repeats)
