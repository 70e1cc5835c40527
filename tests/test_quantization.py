import numpy as np
import pytest
import torch
from torch import nn

from fairquant.compress import int8
from fairquant.models import build_model


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.bn(self.conv(x)))), 1))


@pytest.fixture(scope="module")
def resnet_int8():
    torch.manual_seed(0)
    model = build_model("resnet18", small_input_stem=True).eval()
    images = np.random.default_rng(0).integers(0, 256, (64, 16, 16, 3), dtype=np.uint8)
    state = int8.calibrate_int8(model, images[:32], 16, 16)
    return model, images, state


def test_toy_size_is_what_a_deployment_stores():
    torch.manual_seed(0)
    model = Toy().eval()
    images = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)
    state = int8.calibrate_int8(model, images, 4, 8)
    converted = int8.convert_int8(model, state, 4, 8)
    # conv: 108 int8 weights + per-channel fp32 scales (4) + int64 zero points (4) + fp32 bias with BN folded (4)
    # linear: 4 int8 weights + 1 scale + 1 zero point + 1 fp32 bias; plus 8 bytes per quantize node.
    quantize_nodes = sum(1 for n in converted.graph.nodes if n.op == "call_function"
                         and "quantize_per_tensor" in str(n.target) and "dequantize" not in str(n.target))
    expected = 108 + 4 * 4 + 4 * 8 + 4 * 4 + 4 + 4 + 8 + 4 + 8 * quantize_nodes
    assert int8.stored_size_bytes(converted) == expected
    assert int8.fp32_size_bytes(model) == 4 * (108 + 4 + 4 * 4 + 4 + 1)


def test_rebuild_from_stored_state_is_exact(resnet_int8):
    model, images, state = resnet_int8
    untrained = build_model("resnet18", small_input_stem=True).eval()
    a = int8.convert_int8(model, state, 16, 16)
    b = int8.convert_int8(untrained, state, 16, 16)
    x = torch.randn(16, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_int8_size_ratio_and_compiled_kernels_match_reference(resnet_int8):
    model, images, state = resnet_int8
    reference = int8.convert_int8(model, state, 16, 16)
    ratio = int8.fp32_size_bytes(model) / int8.stored_size_bytes(reference)
    assert 3.9 < ratio < 4.1
    compiled = int8.compile_for_cpu(reference)
    ref_logits = int8.run_fixed_batches(reference, images, 16)
    int8_logits = int8.run_fixed_batches(compiled, images, 16)
    fp32_logits = int8.run_fixed_batches(model, images, 16)
    scale = fp32_logits.abs().mean()
    # torch's int8 kernels vs the q/dq reference: same quantized model, tiny rounding differences only
    assert (int8_logits - ref_logits).abs().max() < 0.1 * scale
    assert (ref_logits - fp32_logits).abs().mean() < 0.2 * scale
