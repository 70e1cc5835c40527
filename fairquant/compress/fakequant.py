"""Simulated (fake) quantization at any bit-width from 2 to 16, for PTQ and QAT.

One stack, chosen for reach: torch's own ``fake_quantize_per_{tensor,channel}_affine`` ops (straight-through
gradients, so QAT needs nothing more) and torchao's observers (min-max, moving average, histogram, whose range
search is told the grid's real number of levels here), plus a percentile observer and an MSE weight-range
search written here. Every Conv2d/Linear is wrapped: its input is quantized per tensor (activation bits) and
its weight per channel or per tensor (weight bits). BatchNorm can be folded into the preceding convolution
first, as int8 deployment does. A per-layer map gives mixed precision. Eager, any batch size, and written
for any device (run on CPU only so far: no GPU was lent), unlike the exported int8 graph with its fixed batch.

What is stored is the wrapped model's state dict: float weights plus every scale and zero point; the integer
codes are a deterministic function of them, and :func:`quantized_size_bytes` counts what a packed format
would store (codes at their bit-width, scales, zero points, unquantized tensors).
"""

from __future__ import annotations

import difflib
import functools
import logging
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fairquant.compress import registry
from fairquant.compress.checkpoints import fp32_size_bytes, load_into, untrained
from fairquant.compress.registry import SchemeConfig, VariantKind
from fairquant.errors import FairquantError
from fairquant.params import QuantSchemeParams

QUANTIZABLE = (nn.Conv2d, nn.Linear)
# Smallest scale allowed. x86's int8 config uses 2^-12, which would make 16-bit grids far coarser than 16 bits.
EPS = float(torch.finfo(torch.float32).eps)


def quant_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """Integer grid: signed [-2^(b-1), 2^(b-1)-1] with zero point 0, or unsigned [0, 2^b-1] with a zero point."""
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2 ** bits - 1)


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int,
                  axis: int | None = None) -> torch.Tensor:
    """torch's fake-quantize op (per tensor, or per channel along ``axis``), with the same arithmetic done by
    plain tensor ops when no gradient is needed: round(x * (1/scale)) + zero point, clamped, minus the zero
    point, times scale, as torch's CPU kernels compute it (bit-identical: tested), about 3x faster on 2 cores
    because those kernels also build the straight-through mask. Training (QAT) keeps torch's op and its
    gradients. Identical for finite inputs within int64 after scaling. Outside that they differ: NaN stays NaN
    here (torch's kernels give a grid value), and beyond int64 this saturates where torch's per-channel kernel
    wraps around its integer cast."""
    if torch.is_grad_enabled() and x.requires_grad:
        if axis is None:
            return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, qmin, qmax)
        return torch.fake_quantize_per_channel_affine(x, scale, zero_point, axis, qmin, qmax)
    if axis is not None:
        shape = [1] * x.dim()
        shape[axis] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    zero = zero_point.to(x.dtype)
    return torch.round(x * (1.0 / scale)).add_(zero).clamp_(qmin, qmax).sub_(zero).mul_(scale)


def _observer_dtype(bits: int, symmetric: bool) -> torch.dtype:
    if bits <= 8:
        return torch.int8 if symmetric else torch.uint8
    return torch.int32


@functools.cache
def _observers():
    """torchao's observer module. Its first import logs an Enum-registration warning through torch's logging that
    says nothing about the model; a stage that then refuses an input must print one line, not two."""
    logger = logging.getLogger("torch.utils._pytree")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torchao.quantization.pt2e import observer
    finally:
        logger.setLevel(level)
    return observer


def make_observer(kind: str, bits: int, symmetric: bool, percentile: float = 1.0, per_channel: bool = False):
    """An observer for activations (per tensor) or weights (per channel along axis 0)."""
    observers = _observers()
    MinMaxObserver, MovingAverageMinMaxObserver = observers.MinMaxObserver, observers.MovingAverageMinMaxObserver
    PerChannelMinMaxObserver = observers.PerChannelMinMaxObserver

    qmin, qmax = quant_range(bits, symmetric)
    common = {"dtype": _observer_dtype(bits, symmetric), "quant_min": qmin, "quant_max": qmax, "eps": EPS}
    if per_channel:
        scheme = torch.per_channel_symmetric if symmetric else torch.per_channel_affine
        return PerChannelMinMaxObserver(ch_axis=0, qscheme=scheme, **common)
    scheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
    if kind == "minmax":
        return MinMaxObserver(qscheme=scheme, **common)
    if kind == "moving_average":
        return MovingAverageMinMaxObserver(qscheme=scheme, **common)
    if kind == "histogram":
        return LevelsHistogramObserver(qscheme=scheme, **common)
    if kind == "percentile":
        return PercentileObserver(percentile, qscheme=scheme, **common)
    raise ValueError(f"unknown observer {kind!r}")


@functools.cache
def _percentile_observer_class():
    MinMaxObserver = _observers().MinMaxObserver

    class _PercentileObserver(MinMaxObserver):
        """Range = mean over batches of the batch's [1-p, p] quantiles (outliers clipped)."""

        def __init__(self, percentile: float, **kwargs):
            super().__init__(**kwargs)
            self.percentile = percentile
            self.batches = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            flat = x.detach().flatten().float()
            if flat.numel() > 1_000_000:  # torch.quantile's input limit; a strided sample keeps the tails' scale
                flat = flat[:: math.ceil(flat.numel() / 1_000_000)]
            low, high = torch.quantile(flat, torch.tensor([1 - self.percentile, self.percentile], device=flat.device))
            self.batches += 1
            if self.batches == 1:
                self.min_val.resize_(low.shape).copy_(low)
                self.max_val.resize_(high.shape).copy_(high)
            else:
                self.min_val += (low - self.min_val) / self.batches
                self.max_val += (high - self.max_val) / self.batches
            return x

    _PercentileObserver.__qualname__ = "_PercentileObserver"  # picklable by name (module __getattr__)
    return _PercentileObserver


def PercentileObserver(percentile: float, **kwargs):  # noqa: N802 - a class factory, used like a class
    return _percentile_observer_class()(percentile, **kwargs)


@functools.cache
def levels_histogram_observer_class():
    HistogramObserver = _observers().HistogramObserver

    class _LevelsHistogramObserver(HistogramObserver):
        """torchao's L2 range search, told the grid's real number of levels.

        torchao searches as if the grid had 2^(dtype bits) levels (256 for any uint8 grid), so a 4-bit grid,
        or x86's 7-bit reduce_range grid, would get the range that suits 256 levels: far too wide."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dst_nbins = self.quant_max - self.quant_min + 1

        def _non_linear_param_search(self) -> tuple[torch.Tensor, torch.Tensor]:
            # The greedy search stops at the first rise of its error estimate and never scores the unclipped
            # range it starts from; at 8 bits on a half-normal it stopped at a range worse than min-max by its
            # own estimate. Keep the observed range when that estimate says it is better.
            new_min, new_max = super()._non_linear_param_search()
            bin_width = float(self.max_val - self.min_val) / self.bins
            if bin_width == 0:
                return new_min, new_max
            start = round(float(new_min - self.min_val) / bin_width)
            end = round(float(new_max - self.min_val) / bin_width) - 1
            if self._compute_quantization_error(0, self.bins - 1) <= self._compute_quantization_error(start, end):
                return self.min_val.clone(), self.max_val.clone()
            return new_min, new_max

    _LevelsHistogramObserver.__qualname__ = "_LevelsHistogramObserver"  # picklable by name (module __getattr__)
    return _LevelsHistogramObserver


def __getattr__(name: str):
    """The observer classes made on first use (torchao imported lazily), found by name: a model holding them
    pickles, and so reaches the processes of distributed training."""
    if name == "_LevelsHistogramObserver":
        return levels_histogram_observer_class()
    if name == "_PercentileObserver":
        return _percentile_observer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def LevelsHistogramObserver(**kwargs):  # noqa: N802 - a class factory, used like a class
    return levels_histogram_observer_class()(**kwargs)


def weight_qparams(weight: torch.Tensor, bits: int, symmetric: bool, per_channel: bool,
                   search: str = "minmax") -> tuple[torch.Tensor, torch.Tensor]:
    """Scales and zero points of a weight tensor (per output channel, or one pair).

    ``minmax`` takes the observed range; ``mse`` shrinks it by the factor in [0.5, 1] that minimises the
    squared quantization error, per channel (a grid search of 20 factors).
    """
    observer = make_observer("minmax", bits, symmetric, per_channel=per_channel).to(weight.device)
    observer(weight.detach())
    scale, zero_point = observer.calculate_qparams()
    scale, zero_point = scale.to(weight.device), zero_point.to(weight.device)
    if search == "mse":
        qmin, qmax = quant_range(bits, symmetric)
        rows = weight.detach().reshape(weight.shape[0], -1) if per_channel else weight.detach().reshape(1, -1)
        best_error = torch.full((rows.shape[0],), float("inf"), device=weight.device)
        best_scale, best_zero = scale.clone().reshape(-1), zero_point.clone().reshape(-1)
        low, high = rows.min(1).values.clamp(max=0), rows.max(1).values.clamp(min=0)
        for factor in torch.linspace(0.5, 1.0, 20).tolist():
            lo, hi = low * factor, high * factor
            if symmetric:
                s = torch.maximum(-lo, hi) / ((qmax - qmin) / 2)
                z = torch.zeros_like(s, dtype=torch.int32)
            else:
                s = (hi - lo) / (qmax - qmin)
                z = (qmin - torch.round(lo / s.clamp(min=EPS))).clamp(qmin, qmax).int()
            s = s.clamp(min=EPS)
            fq = torch.fake_quantize_per_channel_affine(rows, s, z, 0, qmin, qmax)
            error = ((fq - rows) ** 2).sum(1)
            better = error < best_error
            best_error = torch.where(better, error, best_error)
            best_scale = torch.where(better, s, best_scale)
            best_zero = torch.where(better, z, best_zero.int())
        scale, zero_point = best_scale.reshape(scale.shape), best_zero.reshape(zero_point.shape)
    return scale.float(), zero_point.int()


class WeightQuantizer(nn.Module):
    """Fake-quantizes a weight. In training (QAT) the range follows the weight; in eval it is frozen."""

    def __init__(self, weight: torch.Tensor, bits: int, symmetric: bool, per_channel: bool, search: str):
        super().__init__()
        self.bits, self.symmetric, self.per_channel, self.search = bits, symmetric, per_channel, search
        self.qmin, self.qmax = quant_range(bits, symmetric)
        scale, zero_point = weight_qparams(weight, bits, symmetric, per_channel, search)
        self.register_buffer("scale", scale.reshape(-1) if per_channel else scale.reshape(()))
        self.register_buffer("zero_point", zero_point.reshape(-1) if per_channel else zero_point.reshape(()))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.training:
            scale, zero_point = weight_qparams(weight, self.bits, self.symmetric, self.per_channel, self.search)
            self.scale.copy_(scale.reshape(self.scale.shape))
            self.zero_point.copy_(zero_point.reshape(self.zero_point.shape))
        if self.per_channel:
            return fake_quantize(weight, self.scale, self.zero_point, self.qmin, self.qmax, axis=0)
        return fake_quantize(weight, self.scale, self.zero_point, self.qmin, self.qmax)

    def integer_codes(self, weight: torch.Tensor) -> torch.Tensor:
        """The integers a deployment stores (for tests and inspection)."""
        shape = (-1,) + (1,) * (weight.dim() - 1) if self.per_channel else ()
        scale, zero = self.scale.reshape(shape), self.zero_point.reshape(shape)
        # multiply by the reciprocal, as torch's fake-quantize kernels do, so that ties round identically
        return (torch.round(weight * (1.0 / scale)) + zero).clamp(self.qmin, self.qmax).to(torch.int32)


class ActivationQuantizer(nn.Module):
    """Fake-quantizes a layer's input per tensor. ``observing``: record ranges and pass through unchanged.

    ``dynamic``: the range is each sample's own, taken at inference (min and max over the sample, 0 included, as
    the static observers do), so a prediction never depends on the other images of its batch; the calibrated
    static range is kept but unused."""

    def __init__(self, bits: int, symmetric: bool, observer: str, percentile: float, dynamic: bool = False):
        super().__init__()
        self.bits, self.symmetric, self.dynamic = bits, symmetric, dynamic
        self.qmin, self.qmax = quant_range(bits, symmetric)
        self.observing = False
        # Not a registered submodule: observer state (histograms) is a calibration tool, not part of the model.
        self.__dict__["observer"] = make_observer(observer, bits, symmetric, percentile)
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("zero_point", torch.zeros((), dtype=torch.int32))

    def freeze(self) -> None:
        """Turn the observed range into the scale and zero point used from now on."""
        observer = self.__dict__["observer"]
        if observer.min_val.numel() == 0 or not torch.isfinite(observer.min_val).all():
            raise FairquantError("an activation quantizer saw no calibration data; the calibration set is empty")
        scale, zero_point = observer.calculate_qparams()
        self.scale.copy_(scale.reshape(()))
        self.zero_point.copy_(zero_point.reshape(()).to(torch.int32))
        self.observing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            observer = self.__dict__["observer"]
            observer.to(x.device)(x.detach().float())
            return x
        if self.dynamic:
            scale, zero_point = self.sample_qparams(x)
            return fake_quantize(x, scale, zero_point, self.qmin, self.qmax, axis=0)
        return fake_quantize(x, self.scale, self.zero_point, self.qmin, self.qmax)

    def sample_qparams(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample scale and zero point (dynamic ranges), by the affine rule torch's observers use."""
        flat = x.detach().reshape(x.shape[0], -1).float()
        low = flat.min(dim=1).values.clamp(max=0)
        high = flat.max(dim=1).values.clamp(min=0)
        eps = torch.finfo(torch.float32).eps
        if self.symmetric:
            scale = (torch.maximum(-low, high) / ((self.qmax - self.qmin) / 2)).clamp(min=eps)
            return scale, torch.zeros_like(scale, dtype=torch.int32)
        scale = ((high - low) / (self.qmax - self.qmin)).clamp(min=eps)
        zero_point = (self.qmin - torch.round(low / scale)).clamp(self.qmin, self.qmax).to(torch.int32)
        return scale, zero_point


class QuantizedLayer(nn.Module):
    """A Conv2d or Linear whose input and weight pass through fake quantizers (either may be float)."""

    def __init__(self, layer: nn.Conv2d | nn.Linear, weight_bits: int | None, activation_bits: int | None,
                 scheme: QuantSchemeParams):
        super().__init__()
        self.layer = layer
        self.weight_bits, self.activation_bits = weight_bits, activation_bits
        self.weight_quant = None if weight_bits is None else WeightQuantizer(
            layer.weight, weight_bits, scheme.weight_symmetric, scheme.granularity == "per_channel",
            scheme.weight_observer)
        self.input_quant = None if activation_bits is None else ActivationQuantizer(
            activation_bits, scheme.activation_symmetric, scheme.observer, scheme.percentile,
            dynamic=scheme.activation_ranges == "dynamic")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_quant is not None:
            x = self.input_quant(x)
        weight = self.layer.weight if self.weight_quant is None else self.weight_quant(self.layer.weight)
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, weight, self.layer.bias)
        return F.linear(x, weight, self.layer.bias)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a convolution into it (eval-mode statistics).

    Uses torch.fx's own conv-bn fusion; module names of the convolutions are kept, the BatchNorms vanish.
    """
    from torch.fx.experimental.optimization import fuse

    return fuse(model.eval())


def quantizable_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {name: module for name, module in model.named_modules() if isinstance(module, QUANTIZABLE)}


def layer_bits(names: list[str], scheme: QuantSchemeParams,
               key: str = "the layers map") -> dict[str, tuple[int | None, int | None]]:
    """(weight bits, activation bits) per layer: the scheme's, unless the ``layers`` map names the layer
    or a prefix of it (the longest matching prefix wins). A name that matches nothing is an error naming
    ``key``, the params key the map came from."""
    prefixes = sorted({".".join(n.split(".")[:k]) for n in names for k in range(1, n.count(".") + 2)})
    for name in scheme.layers:
        if name not in prefixes:
            close = difflib.get_close_matches(name, prefixes, n=5, cutoff=0.5)
            hint = f"close names: {', '.join(close)}" if close else f"layers are named like {', '.join(names[:4])}"
            raise FairquantError(f"{key} names '{name}', which this model does not have ({hint}); "
                                 f"fix the name in params.yaml")
    out = {}
    for name in names:
        matches = [k for k in scheme.layers if name == k or name.startswith(k + ".")]
        if matches:
            bits = scheme.layers[max(matches, key=len)]
            out[name] = (bits, bits)
        else:
            out[name] = (scheme.bits, scheme.activation_bits)
    return out


def check_layer_names(model: nn.Module, layers: dict, key: str) -> None:
    """Refuse, before any work, a mixed-precision map (the params key ``key``) that names a module ``model``
    does not have. BatchNorm folding keeps the convolutions' names, so the unfolded model's names are the ones."""
    layer_bits(list(quantizable_layers(model)), QuantSchemeParams(layers=layers), key)


def quantize_model(model: nn.Module, scheme: QuantSchemeParams) -> nn.Module:
    """Fold BN (optional) and wrap every Conv2d/Linear with its fake quantizers; weights are calibrated now,
    activations when :func:`calibrate` runs. Returns a new module; ``model`` is not changed."""
    import copy

    model = copy.deepcopy(model).eval()
    if scheme.fold_bn:
        model = fold_batchnorm(model)
    layers = quantizable_layers(model)
    bits = layer_bits(list(layers), scheme)
    for name, layer in layers.items():
        weight_bits, activation_bits = bits[name]
        if weight_bits is None and activation_bits is None:
            continue
        owner, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(owner) if owner else model, attribute,
                QuantizedLayer(layer, weight_bits, activation_bits, scheme))
    return model


def activation_quantizers(model: nn.Module) -> list[ActivationQuantizer]:
    return [m for m in model.modules() if isinstance(m, ActivationQuantizer)]


@torch.no_grad()
def calibrate(model: nn.Module, images: np.ndarray, batch_size: int = 128, device: str | torch.device = "cpu") -> nn.Module:
    """Observe every quantized layer's float input on the calibration images, then freeze the ranges."""
    from fairquant.models import to_input

    if len(images) == 0:
        raise FairquantError("the calibration set is empty; build it or choose another set")
    quantizers = activation_quantizers(model)
    for q in quantizers:
        q.observing = True
    model.eval().to(device)
    for start in range(0, len(images), batch_size):
        model(to_input(images[start:start + batch_size]).to(device))
    for q in quantizers:
        q.freeze()
    return model


def _count(tensor: torch.Tensor, bits: int = 32) -> int:
    return math.ceil(tensor.numel() * bits / 8)


def quantized_size_bytes(model: nn.Module) -> int:
    """Bytes a packed deployment stores: quantized weights at their bit-width (bit-packed), one fp32 scale per
    channel or tensor, an int32 zero point where asymmetric, 8 bytes (scale, zero point) per quantized input;
    every other floating tensor (biases, unfolded BatchNorm, float layers) at 32 bits. BatchNorm's batch
    counter is not stored."""
    total, counted = 0, set()
    for module in model.modules():
        if isinstance(module, WeightQuantizer):
            total += _count(module.scale) + (0 if module.symmetric else _count(module.zero_point))
        elif isinstance(module, ActivationQuantizer):
            total += 8
        elif isinstance(module, QuantizedLayer) and module.weight_quant is not None:
            total += _count(module.layer.weight, module.weight_quant.bits)
            counted.add(id(module.layer.weight))
        if isinstance(module, (WeightQuantizer, ActivationQuantizer)):
            counted.update(id(b) for b in module.buffers())
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) not in counted and tensor.is_floating_point():
            total += _count(tensor)
    return total


def _rebuild(config: dict, state_dict: dict) -> nn.Module:
    return load_into(quantize_model(untrained(config), QuantSchemeParams(**config["scheme"])), state_dict)


# Simulated PTQ (any scheme the int8 kernels cannot run), QAT and the precision plan's models.
FAKEQUANT = registry.register(VariantKind("fakequant", rebuild=_rebuild,
                                          size_bytes=lambda config, model: quantized_size_bytes(model),
                                          kernels="simulated", config=SchemeConfig))


def describe(model: nn.Module) -> list[dict]:
    """Per quantized layer: the bit-widths it runs at (the report's mixed-precision table)."""
    return [{"layer": name, "weight_bits": m.weight_bits, "activation_bits": m.activation_bits}
            for name, m in model.named_modules() if isinstance(m, QuantizedLayer)]


def qat_variant(model: nn.Module, params, images: np.ndarray, finetune) -> tuple[nn.Module, dict]:
    """Quantization-aware fine-tuning (the quantize_qat section): activation ranges from the calibration
    ``images``, then fixed; weights and their ranges train with straight-through gradients (``finetune``)."""
    fp32_bytes = fp32_size_bytes(model)
    scheme = params.scheme()
    quantized = calibrate(quantize_model(model, scheme), images)
    if finetune:
        quantized = finetune(quantized)
    quantized.eval()
    return quantized, {"kind": FAKEQUANT.name, "kernels": FAKEQUANT.kernels, "scheme": scheme.model_dump(),
                       "training": params.model_dump(exclude=set(QuantSchemeParams.model_fields)),
                       "size_bytes": quantized_size_bytes(quantized), "fp32_size_bytes": fp32_bytes,
                       "layers": describe(quantized)}
