"""Real int8 kernels: stored size, rebuild, calibration on real images only, and agreement with the q/dq reference
on whatever CPU runs the tests (AVX2-only machines need reduce_range; VNNI machines do not)."""

import numpy as np
import pytest
import torch
from torch import nn

from fairquant.compress import int8
from fairquant.compress.checkpoints import fp32_size_bytes
from fairquant.errors import FairquantError
from fairquant.models import build_model

CPU = int8.cpu_int8()
needs_no_vnni = pytest.mark.skipif(CPU.vnni, reason=f"this CPU has VNNI ({CPU.capability}): its int8 kernels do "
                                                    f"not saturate, so there is nothing to refuse")


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.bn(self.conv(x)))), 1))


class TwoConv(nn.Module):
    """Small, but with 16-channel 3x3 sums large enough to overflow int16 pairs on full-range inputs."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 1)

    def forward(self, x):
        x = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def images(n, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def resnet_int8():
    """ResNet-18 quantized, compiled and checked with the configuration this CPU gets by default."""
    torch.manual_seed(0)
    model = build_model("resnet18", small_input_stem=True).eval()
    data = images(64, 16)
    reduce_range = int8.reduce_range_for("auto")
    state, reference, check = int8.quantize_int8(model, data[:32], 16, 16, "histogram", 1.0, reduce_range, 5.0)
    return model, data, state, reference, check


def test_cpu_capability_decides_reduce_range():
    caps = torch.cpu.get_capabilities()
    assert CPU.vnni == any(caps.get(k, False) for k in ("amx_int8", "avx512_vnni", "avx_vnni"))
    assert CPU.torch_capability == torch.backends.cpu.get_cpu_capability()
    assert int8.reduce_range_for("auto") is (not CPU.vnni)
    assert int8.reduce_range_for(True) is True and int8.reduce_range_for(False) is False


def test_reduce_range_gives_7_bit_activations_in_the_graph():
    torch.manual_seed(0)
    state = int8.calibrate_int8(Toy().eval(), images(8, 8), 4, 8, reduce_range=True)
    converted = int8.convert_int8(Toy().eval(), state, 4, 8, reduce_range=True)
    quantize = [n for n in converted.graph.nodes if n.op == "call_function"
                and n.target == torch.ops.quantized_decomposed.quantize_per_tensor.default]
    assert quantize and all(n.args[3:5] == (0, 127) for n in quantize)


def test_toy_size_is_what_a_deployment_stores():
    torch.manual_seed(0)
    model = Toy().eval()
    state = int8.calibrate_int8(model, images(8, 8), 4, 8)
    converted = int8.convert_int8(model, state, 4, 8)
    # conv: 108 int8 weights + per-channel fp32 scales (4) + fp32 bias with BN folded (4); symmetric weights
    # store no zero points (the graph's all-zero int64 ones are not counted)
    # linear: 4 int8 weights + 1 scale + 1 fp32 bias; plus 8 bytes per quantize node (conv and fc inputs).
    quantize_nodes = sum(1 for n in converted.graph.nodes if n.op == "call_function"
                         and n.target == torch.ops.quantized_decomposed.quantize_per_tensor.default)
    assert quantize_nodes == 2
    assert int8.stored_size_bytes(converted) == 108 + 4 * 4 + 4 * 4 + 4 + 4 + 4 + 8 * quantize_nodes
    assert fp32_size_bytes(model) == 4 * (108 + 4 + 4 * 4 + 4 + 1)


def test_calibration_observes_exactly_the_real_images():
    """40 images at batch 16: the last batch has 8 real images and is not padded with copies."""
    torch.manual_seed(0)
    model, data = Toy().eval(), images(40, 8)
    state = int8.calibrate_int8(model, data, 16, 8, "histogram")
    prepared = int8.prepare_int8(model, 16, 8, "histogram")
    prepared.load_state_dict(state)
    observers = [m for m in prepared.modules() if hasattr(m, "histogram")]
    # every histogram counted each element of exactly 40 images: the input (3 x 8 x 8) and the pooled features (4)
    assert sorted(float(o.histogram.sum()) for o in observers) == [40 * 4, 40 * 3 * 8 * 8]
    # min-max ranges equal those of calibrating on exactly these images (batch 8 divides 40: nothing to pad)
    ranges = int8.calibrate_int8(model, data, 16, 8, "minmax")
    exact = int8.calibrate_int8(model, data, 8, 8, "minmax")
    assert ranges.keys() == exact.keys()
    assert all(torch.equal(ranges[k], exact[k]) for k in ranges)


@pytest.mark.slow
def test_rebuild_from_stored_state_is_exact(resnet_int8):
    model, data, state, _, _ = resnet_int8
    untrained = build_model("resnet18", small_input_stem=True).eval()
    a = int8.convert_int8(model, state, 16, 16)
    b = int8.convert_int8(untrained, state, 16, 16)
    x = torch.randn(16, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_int8_size_ratio_and_compiled_kernels_match_reference(resnet_int8):
    """With the configuration this CPU gets (reduce_range exactly where there is no VNNI), the compiled kernels
    follow their q/dq reference within the tolerance, on the calibration images and on new ones."""
    model, data, _, reference, check = resnet_int8
    assert 3.9 < fp32_size_bytes(model) / int8.stored_size_bytes(reference) < 4.1
    assert check.passed and check.images == 32 and check.reduce_range is (not CPU.vnni)
    assert check.cpu_capability == CPU.capability
    held_out = int8.check_kernels(model, reference, int8.compile_for_cpu(reference), data[32:], 16,
                                  check.reduce_range, 5.0)
    assert held_out.passed, held_out.summary()
    # quantization itself moves fp32 by a fraction of the logits, not more
    fp32 = int8.run_fixed_batches(model, data, 16)
    assert held_out.quant_noise < 0.2 * fp32.abs().mean()


@needs_no_vnni
def test_full_range_activations_are_refused_on_a_cpu_without_vnni():
    torch.manual_seed(0)
    model, data = TwoConv().eval(), images(32, 8)
    with pytest.raises(FairquantError, match=r"disagree with their own q/dq reference on this CPU .*no VNNI; "
                                             r"reduce_range false.*set quantize_ptq.int8_reduce_range to auto"):
        int8.quantize_int8(model, data, 8, 8, "minmax", 1.0, False, 5.0)
    # the same model with 7-bit activations is accepted, and its kernels then follow the reference closely
    _, _, check = int8.quantize_int8(model, data, 8, 8, "minmax", 1.0, True, 5.0)
    assert check.sqnr_db > check.quant_sqnr_db


@needs_no_vnni
def test_a_full_range_int8_variant_is_not_run_on_a_cpu_without_vnni():
    with pytest.raises(FairquantError, match=r"ptq-w8a8-train was quantized with 8-bit activations \(reduce_range "
                                             r"false\).* has no VNNI and its int8 kernels would saturate"):
        int8.require_loadable_here({"name": "ptq-w8a8-train", "int8_check": {"reduce_range": False}})
    int8.require_loadable_here({"name": "ptq-w8a8-train", "int8_check": {"reduce_range": True}})


def test_sqnr_by_hand():
    signal = torch.tensor([3.0, 4.0])
    assert int8.sqnr_db(signal, signal + torch.tensor([0.3, 0.4])) == pytest.approx(20.0)
    assert int8.sqnr_db(signal, signal) == float("inf")
