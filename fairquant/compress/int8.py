"""Post-training int8 quantization with real x86 CPU kernels (torchao PT2E + inductor).

The maintained flow: ``torch.export`` (strict; non-strict export fails on these models) ->
``prepare_pt2e`` with ``X86InductorQuantizer`` -> calibrate -> ``convert_pt2e`` -> ``torch.compile``
with inductor freezing, which lowers the quantize/dequantize patterns to oneDNN int8 kernels.

What is stored is the *prepared* model's state dict: the fp32 weights plus every observer's calibrated
range. Rebuilding is export -> prepare -> load those observers -> convert, which is deterministic and
keeps checkpoints loadable with ``weights_only=True`` (a pickled GraphModule would not be).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fairquant.models import to_input


def _quantizer(observer: str = "histogram", percentile: float = 1.0):
    """x86's int8 scheme (uint8 inputs per tensor, int8 per-channel symmetric weights) with the chosen
    activation observer; torchao's default config is the same with a histogram observer."""
    import dataclasses

    from torchao.quantization.pt2e import observer as observers
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    from fairquant.compress.fakequant import _percentile_observer_class

    constructors = {"minmax": observers.MinMaxObserver, "moving_average": observers.MovingAverageMinMaxObserver,
                    "histogram": observers.HistogramObserver}
    if observer == "percentile":
        constructor = _percentile_observer_class().with_args(percentile=percentile, eps=2 ** -12)
    else:
        constructor = constructors[observer].with_args(eps=2 ** -12)
    config = get_default_x86_inductor_quantization_config()
    activation = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=constructor)
    config = dataclasses.replace(config, input_activation=activation, output_activation=activation)
    return X86InductorQuantizer().set_global(config)


def _export(model: nn.Module, batch_size: int, image_size: int) -> torch.fx.GraphModule:
    example = torch.zeros(batch_size, 3, image_size, image_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(model.eval(), (example,), strict=True).module()


def prepare_int8(model: nn.Module, batch_size: int, image_size: int, observer: str = "histogram",
                 percentile: float = 1.0) -> torch.fx.GraphModule:
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    return prepare_pt2e(_export(model, batch_size, image_size), _quantizer(observer, percentile))


@torch.no_grad()
def run_fixed_batches(module: nn.Module, images: np.ndarray, batch_size: int) -> torch.Tensor:
    """Run an exported module (fixed batch size) over all images, padding the last batch."""
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = to_input(images[start:start + batch_size])
        real = batch.shape[0]
        if real < batch_size:
            batch = torch.cat([batch, batch[-1:].expand(batch_size - real, -1, -1, -1)])
        outputs.append(module(batch)[:real].flatten().float())
    return torch.cat(outputs) if outputs else torch.zeros(0)


def calibrate_int8(model: nn.Module, calibration: np.ndarray, batch_size: int, image_size: int,
                   observer: str = "histogram", percentile: float = 1.0) -> dict[str, torch.Tensor]:
    """Observe activation ranges on the calibration images; return the prepared state to store."""
    prepared = prepare_int8(model, batch_size, image_size, observer, percentile)
    run_fixed_batches(prepared, calibration, batch_size)
    return {k: v.detach().clone() for k, v in prepared.state_dict().items()}


def convert_int8(model: nn.Module, prepared_state: dict[str, torch.Tensor], batch_size: int,
                 image_size: int, observer: str = "histogram", percentile: float = 1.0) -> torch.fx.GraphModule:
    """Rebuild the int8 model (reference q/dq representation) from a stored prepared state."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    prepared = prepare_int8(model, batch_size, image_size, observer, percentile)
    prepared.load_state_dict(prepared_state, strict=True)
    return convert_pt2e(prepared)


def compile_for_cpu(module: nn.Module) -> nn.Module:
    """Inductor with weight freezing: required for the int8 patterns to become real int8 kernels."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    return torch.compile(module)


def _get_attr(module: nn.Module, target: str) -> torch.Tensor:
    owner, _, name = target.rpartition(".")
    return getattr(module.get_submodule(owner) if owner else module, name)


def stored_size_bytes(module: torch.fx.GraphModule) -> int:
    """Bytes that a deployment would store: every tensor the graph reads, at its own dtype.

    A converted PT2E module still carries unused fp32 copies in its state dict, so counting the state
    dict overstates the size; the tensors reached by ``get_attr`` nodes (int8 weights, per-channel
    scales and zero points, fp32 biases) are what the model needs. Per-tensor activation scales and zero
    points are graph literals: 8 bytes per quantize node.
    """
    seen: set[str] = set()
    total = 0
    for node in module.graph.nodes:
        if node.op == "get_attr" and node.target not in seen:
            seen.add(node.target)
            tensor = _get_attr(module, node.target)
            total += tensor.numel() * tensor.element_size()
        elif node.op == "call_function" and "quantize_per_tensor" in str(node.target) and "dequantize" not in str(node.target):
            total += 8
    return total


def fp32_size_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values() if t.is_floating_point())


@dataclass(frozen=True)
class Latency:
    median_ms: float
    images_per_s: float
    batch_size: int
    mode: str


@torch.no_grad()
def measure_latency(module: nn.Module, batch_size: int, image_size: int, repeats: int, mode: str) -> Latency:
    """Median wall time of one batch after warm-up (first calls trigger compilation)."""
    batch = torch.randn(batch_size, 3, image_size, image_size)
    for _ in range(3):
        module(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        module(batch)
        times.append(time.perf_counter() - start)
    median = float(np.median(times))
    return Latency(median * 1e3, batch_size / median, batch_size, mode)
