"""Every compressor on ViT-small: fake-quant PTQ and QAT at every bit-width, k-means sharing, global pruning, mixed
precision, and the real int8 kernels, each reaching every Linear layer and the patch convolution.

Full ViT-S (21 M parameters) is slow to compress on 2 cores, so most tests run a narrow ViT of the same classes
(fairquant.vit.VisionTransformer, 48 wide, 2 blocks): the module names and layer types the compressors see are
vit_small's; one test wraps the full vit_small."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from fairquant.compress import fakequant, int8, kmeans, pruning
from fairquant.models import build_model, to_input
from fairquant.params import QuantSchemeParams
from fairquant.vit import VisionTransformer

SIZE = 16  # px: 2 px patches, 64 patch tokens


def narrow_vit(depth: int = 2) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(image_size=SIZE, width=48, heads=6, hidden=96, depth=depth).eval()


def images(n=8, size=SIZE, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def vit_layer_names(depth: int) -> list[str]:
    per_block = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
    return ["patch_embed", *(f"blocks.{k}.{name}" for k in range(depth) for name in per_block), "head"]


def test_fakequant_wraps_every_layer_of_vit_small_and_mixed_precision_names_a_block():
    model = build_model("vit_small", small_input_stem=False, image_size=8)
    originals = [name for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert originals == vit_layer_names(12) and len(originals) == 50
    quantized = fakequant.quantize_model(model, QuantSchemeParams(bits=4, activation_bits=4, layers={"blocks.0": 8}))
    described = fakequant.describe(quantized)
    assert [row["layer"] for row in described] == originals
    wrapped = [m for m in quantized.modules() if isinstance(m, fakequant.QuantizedLayer)]
    assert len(wrapped) == 50 and all(m.weight_quant is not None and m.input_quant is not None for m in wrapped)
    # no Linear or convolution outside a wrapper
    inner = {id(m.layer) for m in wrapped}
    assert all(id(m) in inner for m in quantized.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    eight = {row["layer"] for row in described if row["weight_bits"] == 8 and row["activation_bits"] == 8}
    assert eight == {f"blocks.0.{name}" for name in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")}
    assert all(row["weight_bits"] == row["activation_bits"] == 4 for row in described if row["layer"] not in eight)


@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8, 16])
def test_fake_quant_puts_every_vit_weight_and_input_on_its_grid(bits, granularity):
    model = narrow_vit()
    quantized = fakequant.calibrate(
        fakequant.quantize_model(model, QuantSchemeParams(bits=bits, activation_bits=bits, granularity=granularity,
                                                          observer="minmax")),
        images())
    layers = {name: m for name, m in quantized.named_modules() if isinstance(m, fakequant.QuantizedLayer)}
    assert list(layers) == vit_layer_names(2)
    for name, layer in layers.items():
        q = layer.weight_quant
        codes = q.integer_codes(layer.layer.weight)
        assert q.scale.numel() == (layer.layer.weight.shape[0] if granularity == "per_channel" else 1), name
        assert codes.min() >= -(2 ** (bits - 1)) and codes.max() <= 2 ** (bits - 1) - 1, name
        shape = (-1,) + (1,) * (codes.dim() - 1) if granularity == "per_channel" else ()
        assert torch.equal(q(layer.layer.weight), codes * q.scale.reshape(shape)), name
        assert layer.input_quant.bits == bits and layer.input_quant.scale > 0, name
    with torch.no_grad():
        x = to_input(images(4))
        fp32, simulated = model(x), quantized(x)
    assert torch.isfinite(simulated).all()
    if bits == 16:  # 16-bit grids are finer than anything the logits show
        assert torch.allclose(simulated, fp32, atol=1e-3)
    if bits >= 8:  # the quantization noise of a coarse grid can swamp a random model's logits; not at 8 bits
        assert int8.sqnr_db(fp32, simulated) > 20


def test_qat_trains_every_vit_layer_through_the_fake_quantizers():
    model = fakequant.calibrate(fakequant.quantize_model(narrow_vit(), QuantSchemeParams(bits=4, activation_bits=4)),
                                images())
    layers = [m for m in model.modules() if isinstance(m, fakequant.QuantizedLayer)]
    before = [layer.layer.weight.detach().clone() for layer in layers]
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(4, 3, SIZE, SIZE)).pow(2).mean().backward()
    for layer in layers:
        assert layer.layer.weight.grad is not None and layer.layer.weight.grad.abs().sum() > 0
    optimizer.step()
    assert all(not torch.equal(b, layer.layer.weight) for b, layer in zip(before, layers))
    model.eval()
    for layer in layers:
        codes = layer.weight_quant(layer.layer.weight) / layer.weight_quant.scale.reshape(
            (-1,) + (1,) * (layer.layer.weight.dim() - 1))
        assert torch.allclose(codes, codes.round(), atol=1e-4) and codes.abs().max() <= 8


def test_kmeans_shares_every_vit_weight_and_rebuilds_from_its_state():
    model = narrow_vit()
    clustered = kmeans.cluster_model(narrow_vit(), 16, 20)
    shared = {name: m for name, m in clustered.named_modules() if isinstance(m, kmeans.SharedWeightLayer)}
    assert list(shared) == vit_layer_names(2)
    assert all(len(torch.unique(layer.weight())) <= 16 for layer in shared.values())
    # 4-bit indices, fp32 codebooks; LayerNorms, biases, class token and position embeddings at 32 bits
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    floats = sum(p.numel() for p in model.parameters()) - weights
    expected = sum(math.ceil(layer.indices.numel() * 4 / 8) for layer in shared.values()) + 16 * 4 * 10 + 4 * floats
    assert kmeans.clustered_size_bytes(clustered, 16) == expected
    rebuilt = kmeans.empty_clustered(narrow_vit(), 16)
    rebuilt.load_state_dict(clustered.state_dict(), strict=True)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), clustered(x))


def test_global_pruning_reaches_every_vit_layer():
    pruned = pruning.prune_model(narrow_vit(), 0.8, "one_shot", 1, None)
    layers = {name: m for name, m in pruned.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    total = sum(m.weight.numel() for m in layers.values())
    assert pruning.weight_sparsity(pruned) == pytest.approx(round(0.8 * total) / total)
    # global, not per layer: every layer loses some weights, and not all the same share
    shares = [float((m.weight == 0).float().mean()) for m in layers.values()]
    assert all(share > 0 for share in shares) and max(shares) - min(shares) > 0.05
    assert not any(hasattr(m, "weight_mask") for m in layers.values())  # masks made permanent



@pytest.mark.slow
@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN int8 kernels")
def test_int8_kernels_run_every_vit_linear_and_agree_with_the_reference():
    """The PT2E flow quantizes every Linear and the patch convolution (x86's quantizer takes linear and conv, not
    the attention's matmuls, which scaled-dot-product attention keeps in fp32 as the simulated path does), inductor
    lowers each to a oneDNN int8 kernel, and the compiled model agrees with its q/dq reference."""
    from torch._inductor.utils import run_and_get_code

    model, data = narrow_vit(depth=1), images(16)
    reduce_range = int8.reduce_range_for("auto")
    state = int8.calibrate_int8(model, data[:8], 8, SIZE, reduce_range=reduce_range)
    reference = int8.convert_int8(model, state, 8, SIZE, reduce_range=reduce_range)
    weights = [n for n in reference.graph.nodes
               if n.target == torch.ops.quantized_decomposed.dequantize_per_channel.default]
    assert len(weights) == len(vit_layer_names(1)) == 6
    compiled = int8.compile_for_cpu(reference)
    with torch.no_grad():
        _, code = run_and_get_code(compiled, torch.randn(8, 3, SIZE, SIZE))
    code = "\n".join(code)
    assert code.count("torch.ops.onednn.qlinear_pointwise") == 5 and code.count("torch.ops.onednn.qconv_pointwise") == 1
    check = int8.check_kernels(model, reference, compiled, data, 8, reduce_range, 5.0)
    assert check.passed, check.summary()
    # int8 weights, fp32 per-channel scales and biases, fp32 LayerNorms, class token, position embeddings;
    # 8 bytes per quantized input
    weight_count = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    channels = sum(m.weight.shape[0] for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    floats = sum(p.numel() for p in model.parameters()) - weight_count
    quantize_nodes = sum(1 for n in reference.graph.nodes
                         if n.target == torch.ops.quantized_decomposed.quantize_per_tensor.default)
    assert int8.stored_size_bytes(reference) == weight_count + 4 * channels + 4 * floats + 8 * quantize_nodes
    latency = int8.measure_latency(compiled, 8, SIZE, 2, "compiled")
    assert latency.median_ms > 0 and latency.batch_size == 8
