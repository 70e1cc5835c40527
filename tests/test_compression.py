"""Fake quantization, k-means sharing and pruning: grids, scales, sizes by hand, and cross-checks."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from fairquant.compress import fakequant, int8, kmeans, pruning
from fairquant.errors import FairquantError
from fairquant.models import build_model
from fairquant.params import QuantSchemeParams


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.bn(self.conv(x)))), 1))


def images(n=16, size=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8, 16])
def test_symmetric_per_channel_weights_land_on_each_channels_grid(bits):
    weight = torch.tensor([[-1.0, -0.5, 0.2, 1.0], [-0.01, 0.003, 0.02, 0.04]]).reshape(2, 4, 1, 1)
    q = fakequant.WeightQuantizer(weight, bits, symmetric=True, per_channel=True, search="minmax")
    qmax_abs = 2 ** (bits - 1) - 1 + 0.5  # (qmax - qmin) / 2
    # per-channel scale = max |w| / ((qmax - qmin) / 2), by hand
    assert torch.allclose(q.scale, torch.tensor([1.0 / qmax_abs, 0.04 / qmax_abs]), rtol=1e-6)
    assert torch.equal(q.zero_point, torch.zeros(2, dtype=torch.int32))
    out = q(weight)
    codes = out / q.scale.reshape(-1, 1, 1, 1)
    assert torch.allclose(codes, codes.round(), atol=1e-4)  # every value is an integer multiple of its channel's scale
    assert codes.round().min() >= -(2 ** (bits - 1)) and codes.round().max() <= 2 ** (bits - 1) - 1
    assert torch.equal(q.integer_codes(weight).float(), codes.round())


def test_asymmetric_per_tensor_has_a_zero_point_and_represents_zero_exactly():
    x = torch.tensor([0.1, 0.5, 1.3, 2.9])  # all positive: asymmetric keeps the lower bound at 0
    q = fakequant.WeightQuantizer(x, 4, symmetric=False, per_channel=False, search="minmax")
    # range [min(x, 0), max(x, 0)] = [0, 2.9] over 15 steps; zero point 0 maps exactly to 0.0
    assert q.scale.item() == pytest.approx(2.9 / 15, rel=1e-6)
    assert q.zero_point.item() == 0
    shifted = x - 1.0  # [-0.9, 1.9]: the zero point moves so that 0.0 stays representable
    q2 = fakequant.WeightQuantizer(shifted, 4, symmetric=False, per_channel=False, search="minmax")
    assert q2.scale.item() == pytest.approx(2.8 / 15, rel=1e-6)
    assert q2.zero_point.item() == round(0.9 / (2.8 / 15))
    zero = torch.fake_quantize_per_tensor_affine(torch.zeros(1), q2.scale, q2.zero_point, 0, 15)
    assert zero.item() == 0.0
    codes = q2.integer_codes(shifted)
    assert codes.min() >= 0 and codes.max() <= 15


def test_mse_range_search_never_does_worse_than_minmax():
    torch.manual_seed(0)
    weight = torch.randn(8, 16, 3, 3)
    weight[0, 0, 0, 0] = 12.0  # an outlier that min-max would stretch the grid for
    errors = {}
    for search in ("minmax", "mse"):
        q = fakequant.WeightQuantizer(weight, 3, True, True, search)
        errors[search] = ((q(weight) - weight) ** 2).sum().item()
    assert errors["mse"] < errors["minmax"]


def test_activation_observers_give_their_ranges():
    x = torch.cat([torch.linspace(0, 1, 10001), torch.tensor([100.0])])
    ranges = {}
    for kind in ("minmax", "percentile"):
        q = fakequant.ActivationQuantizer(8, symmetric=False, observer=kind, percentile=0.999)
        q.observing = True
        q(x)
        q.freeze()
        ranges[kind] = q.scale.item() * 255
    assert ranges["minmax"] == pytest.approx(100.0, rel=1e-3)
    assert ranges["percentile"] < 2.0  # the outlier is clipped away


def test_toy_simulated_size_computed_by_hand():
    model = Toy().eval()
    scheme = QuantSchemeParams(bits=4, activation_bits=8, fold_bn=True)
    q = fakequant.calibrate(fakequant.quantize_model(model, scheme), images())
    # BN folded: conv gains a bias. conv: 108 weights at 4 bits = 54 B, 4 fp32 scales (symmetric: no zero
    # point), 4 fp32 bias; input qparams 8 B. fc: 4 weights at 4 bits = 2 B, 1 scale, 1 bias, 8 B.
    assert fakequant.quantized_size_bytes(q) == (54 + 16 + 16 + 8) + (2 + 4 + 4 + 8)
    mixed = fakequant.quantize_model(model, QuantSchemeParams(bits=4, activation_bits=8, fold_bn=False,
                                                              granularity="per_tensor", weight_symmetric=False,
                                                              layers={"fc": None}))
    fakequant.calibrate(mixed, images())
    # conv 54 B + 1 scale + 1 int32 zero point + 8 B input; BN weight, bias, mean, var (4 x 4 x 4 B); fc float 5 x 4 B
    assert fakequant.quantized_size_bytes(mixed) == 54 + 4 + 4 + 8 + 64 + 20
    assert [(d["layer"], d["weight_bits"]) for d in fakequant.describe(mixed)] == [("conv", 4)]


def test_folding_batchnorm_keeps_the_float_function():
    torch.manual_seed(0)
    model = Toy().eval()
    model.bn.running_mean.uniform_(-1, 1)
    model.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(4, 3, 8, 8)
    folded = fakequant.fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert torch.allclose(folded(x), model(x), atol=1e-5)


@pytest.mark.slow
def test_simulated_w8a8_matches_torch_int8_kernels():
    """Our simulation of the x86 scheme against torch's own int8 kernels on the same weights.

    Where this CPU needs reduce_range (no VNNI), the kernels run 7-bit activations (0..127), so the simulation
    models that same scheme (activation_bits 7) rather than widening the tolerance."""
    torch.manual_seed(0)
    model = build_model("resnet18", small_input_stem=True).eval()
    calib, test = images(32, 16, 0), images(32, 16, 1)
    reduce_range = int8.reduce_range_for("auto")
    simulated = fakequant.calibrate(fakequant.quantize_model(
        model, QuantSchemeParams(observer="minmax", activation_bits=7 if reduce_range else 8)), calib)
    _, reference, check = int8.quantize_int8(model, calib, 16, 16, "minmax", 1.0, reduce_range, 5.0)
    compiled = int8.compile_for_cpu(reference)
    fp32 = int8.run_fixed_batches(model, test, 16)
    sim = int8.run_fixed_batches(simulated, test, 16)
    real = int8.run_fixed_batches(compiled, test, 16)
    # The graphs quantize at slightly different points (x86 also quantizes residual adds), so each carries its
    # own quantization error: they may differ by up to the two errors together, and no more. Measured on an
    # AVX2 machine: 0.034 against a bound of 0.055, correlation 0.983.
    bound = (sim - fp32).abs().mean() + (real - fp32).abs().mean()
    assert (sim - real).abs().mean() < bound
    assert np.corrcoef(sim.numpy(), real.numpy())[0, 1] > 0.97


def test_w8a8_size_is_counted_alike_on_the_int8_and_simulated_paths():
    torch.manual_seed(0)
    model = Toy().eval()
    state = int8.calibrate_int8(model, images(8, 8), 4, 8, "minmax")
    int8_bytes = int8.stored_size_bytes(int8.convert_int8(model, state, 4, 8, "minmax"))
    simulated = fakequant.calibrate(fakequant.quantize_model(model, QuantSchemeParams(observer="minmax")), images(8, 8))
    # conv: 108 int8 weights, 4 fp32 scales, no zero points (symmetric), 4 fp32 folded biases, 8 B input qparams;
    # fc: 4 weights, 1 scale, 1 bias, 8 B input qparams
    assert int8_bytes == fakequant.quantized_size_bytes(simulated) == (108 + 16 + 16 + 8) + (4 + 4 + 4 + 8)
    # ResNet-18: x86 also quantizes 3 tensors that are no layer's input, 8 bytes each, and nothing else differs
    resnet = build_model("resnet18", small_input_stem=True).eval()
    state = int8.calibrate_int8(resnet, images(8, 16), 8, 16, "minmax")
    converted = int8.convert_int8(resnet, state, 8, 16, "minmax")
    simulated = fakequant.calibrate(fakequant.quantize_model(resnet, QuantSchemeParams(observer="minmax")),
                                    images(8, 16))
    quantize_nodes = sum(1 for n in converted.graph.nodes
                         if n.target == torch.ops.quantized_decomposed.quantize_per_tensor.default)
    extra = quantize_nodes - len(fakequant.activation_quantizers(simulated))
    assert extra == 3
    assert int8.stored_size_bytes(converted) - fakequant.quantized_size_bytes(simulated) == 8 * extra


def test_histogram_range_search_uses_the_real_number_of_levels():
    """A ReLU-like activation (half-normal, one outlier): fewer levels should clip harder."""
    from torchao.quantization.pt2e.observer import HistogramObserver

    torch.manual_seed(0)
    x = torch.cat([torch.randn(100_000).abs(), torch.tensor([8.0])])

    def mse(top: float, bits: int) -> float:  # the error of the unsigned grid [0, top] (zero point 0: x >= 0)
        levels = 2 ** bits - 1
        return float(((torch.fake_quantize_per_tensor_affine(x, top / levels, 0, 0, levels) - x) ** 2).mean())

    tops = {}
    for bits in (2, 4, 8):
        chosen = fakequant.make_observer("histogram", bits, symmetric=False)
        chosen(x)
        scale, zero_point = chosen.calculate_qparams()
        assert int(zero_point) == 0
        tops[bits] = float(scale) * (2 ** bits - 1)
        assert mse(tops[bits], bits) <= mse(8.0, bits)  # no worse than min-max's range [0, 8]
        brute = min(mse(top, bits) for top in torch.linspace(0.05, 8.0, 400).tolist())
        if bits < 8:  # measured: 1.16x (2 bits), 1.01x (4 bits); at 8 bits it keeps min-max's range, 1.26x
            assert mse(tops[bits], bits) < 1.2 * brute
    assert tops[2] < tops[4] < tops[8]
    stock = HistogramObserver(dtype=torch.uint8, quant_min=0, quant_max=3, qscheme=torch.per_tensor_affine)
    stock(x)  # torchao's own search assumes 256 levels: at 2 bits it keeps a range twice as wide
    assert tops[2] < 0.6 * float(stock.calculate_qparams()[0]) * 3


def test_layers_map_with_unknown_name_lists_close_names():
    model = build_model("resnet18", small_input_stem=True)
    with pytest.raises(FairquantError, match=r"names 'layer5'.*close names: layer4"):
        fakequant.quantize_model(model, QuantSchemeParams(layers={"layer5": 4}))
    bits = fakequant.layer_bits(["conv1", "layer4.0.conv1", "layer4.0.downsample.0", "fc"],
                                QuantSchemeParams(bits=4, layers={"layer4": 8, "layer4.0.downsample": None, "fc": None}))
    assert bits == {"conv1": (4, 8), "layer4.0.conv1": (8, 8), "layer4.0.downsample.0": (None, None), "fc": (None, None)}


def test_qat_gradients_pass_straight_through_and_keep_the_grid():
    torch.manual_seed(0)
    model = fakequant.calibrate(fakequant.quantize_model(Toy(), QuantSchemeParams(bits=3, activation_bits=4)), images())
    model.train()
    x = torch.randn(8, 3, 8, 8)
    before = model.conv.layer.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model(x).pow(2).mean()
    loss.backward()
    assert model.conv.layer.weight.grad is not None and model.conv.layer.weight.grad.abs().sum() > 0
    optimizer.step()
    assert not torch.equal(before, model.conv.layer.weight)
    model.eval()
    q = model.conv.weight_quant
    codes = q(model.conv.layer.weight) / q.scale.reshape(-1, 1, 1, 1)
    assert torch.allclose(codes, codes.round(), atol=1e-4) and codes.abs().max() <= 4


@pytest.mark.parametrize("bits, symmetric", [(2, True), (4, False), (7, False), (8, True), (8, False), (16, True)])
def test_inference_fake_quantize_is_bit_identical_to_torchs_op(bits, symmetric):
    """The no-gradient path (plain tensor ops) must give exactly torch's kernels' values, ties included."""
    qmin, qmax = fakequant.quant_range(bits, symmetric)
    gen = torch.Generator().manual_seed(bits)
    x = torch.randn(64, 8, 9, 9, generator=gen) * 3
    scale = torch.tensor(0.0371)
    x[0] = (torch.arange(8 * 81).reshape(8, 9, 9) - 300 + 0.5) * scale  # exact half-steps: round half to even
    x[1, 0, 0, :3] = torch.tensor([1e30, -1e30, 0.0])
    zero = torch.tensor(0 if symmetric else (qmax + 1) // 3, dtype=torch.int32)
    expected = torch.fake_quantize_per_tensor_affine(x, scale, zero, qmin, qmax)
    with torch.no_grad():
        assert torch.equal(fakequant.fake_quantize(x, scale, zero, qmin, qmax), expected)
    scales = torch.rand(8, generator=gen) * 0.1 + 1e-3
    zeros = torch.zeros(8, dtype=torch.int32) if symmetric else torch.randint(0, qmax, (8,), generator=gen,
                                                                              dtype=torch.int32)
    out = fakequant.fake_quantize(x, scales, zeros, qmin, qmax, axis=1)
    assert out[1, 0, 0, 0] == (qmax - zeros[0]) * scales[0] and out[1, 0, 0, 1] == (qmin - zeros[0]) * scales[0]
    x[1, 0, 0, :2] = 0.0  # past int64 torch's per-channel kernel wraps around (an overflowing cast); ours saturates
    for axis in (0, 1):
        y = x.transpose(0, 1).contiguous() if axis == 0 else x
        expected = torch.fake_quantize_per_channel_affine(y, scales, zeros, axis, qmin, qmax)
        assert torch.equal(fakequant.fake_quantize(y, scales, zeros, qmin, qmax, axis=axis), expected)
    w = x.clone().requires_grad_(True)  # with a gradient: torch's op, straight-through
    fakequant.fake_quantize(w, scale, zero, qmin, qmax).sum().backward()
    assert w.grad is not None and set(w.grad.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("k", [2, 16, 256])
def test_kmeans_codebook_and_packed_size(k):
    torch.manual_seed(0)
    model = Toy().eval()
    clustered = kmeans.cluster_model(model, k, 30)
    layers = kmeans.shared_layers(clustered)
    assert len(layers) == 2
    for layer in layers:
        assert layer.codebook.shape == (k,) and int(layer.indices.max()) < k
        assert len(torch.unique(layer.weight())) <= k
    bits = math.ceil(math.log2(k))
    # conv 108 indices + fc 4 indices, bit-packed per layer, + two fp32 codebooks; BN (4 x 4 tensors) and fc bias float
    expected = math.ceil(108 * bits / 8) + math.ceil(4 * bits / 8) + 2 * 4 * k + 4 * 4 * 4 + 4
    assert kmeans.clustered_size_bytes(clustered, k) == expected


def test_lloyd_finds_obvious_clusters():
    values = torch.tensor([0.0, 0.1, 0.05, 5.0, 5.1, 4.9, -3.0, -3.1])
    codebook, indices = kmeans.lloyd_1d(values, 3, 30)
    assert torch.allclose(codebook, torch.tensor([-3.05, 0.05, 5.0]), atol=1e-5)
    assert indices.tolist() == [1, 1, 1, 2, 2, 2, 0, 0]


def test_centroid_finetuning_trains_the_codebooks_only():
    """With the real trainer (weight decay on, BN frozen): biases, BN affine and statistics stay as they were."""
    from fairquant.params import TrainingParams
    from fairquant.training import train_classifier

    torch.manual_seed(0)
    model = kmeans.train_codebooks_only(kmeans.cluster_model(Toy().eval(), 4, 30))
    frozen = {name: t.detach().clone() for name, t in model.state_dict().items() if "codebook" not in name}
    codebooks = [layer.codebook.detach().clone() for layer in kmeans.shared_layers(model)]
    data, labels = images(16, 8), np.arange(16) % 2
    train_classifier(model, data, labels, data[:4], labels[:4], np.zeros(4),
                     TrainingParams(epochs=1, batch_size=8, lr=0.5, weight_decay=0.1), torch.device("cpu"), freeze_bn=True)
    assert {"fc.layer.bias", "bn.weight", "bn.bias", "bn.running_mean", "conv.indices"} <= set(frozen)
    for name, before in frozen.items():
        assert torch.equal(model.state_dict()[name], before), name
    for layer, before in zip(kmeans.shared_layers(model), codebooks):
        assert not torch.equal(layer.codebook, before)
        assert len(torch.unique(layer.weight())) <= 4


def test_global_pruning_reaches_the_target_and_sparse_size_by_hand():
    torch.manual_seed(0)
    model = Toy().eval()
    magnitudes = torch.cat([model.conv.weight.detach().flatten(), model.fc.weight.detach().flatten()]).abs()
    pruned = pruning.prune_model(model, 0.5, "one_shot", 1, None)
    assert pruning.weight_sparsity(pruned) == pytest.approx(56 / 112)
    conv_nonzero, fc_nonzero = int((pruned.conv.weight != 0).sum()), int((pruned.fc.weight != 0).sum())
    # bitmap (1 bit per position) + fp32 non-zeros, or dense where smaller; BN and bias dense
    expected = (min(14 + 4 * conv_nonzero, 432) + min(1 + 4 * fc_nonzero, 16) + 4 * 4 * 4 + 4)
    assert pruning.sparse_size_bytes(pruned) == expected
    # global: exactly the 56 smallest magnitudes across both layers were removed
    kept = torch.cat([pruned.conv.weight.flatten(), pruned.fc.weight.flatten()]) != 0
    assert torch.equal(kept, magnitudes > magnitudes.sort().values[55])


def test_iterative_pruning_keeps_masks_through_finetuning():
    torch.manual_seed(0)
    model = Toy().eval()
    rounds = []

    def finetune(m, k):
        m.train()
        optimizer = torch.optim.SGD(m.parameters(), lr=0.5)
        m(torch.randn(4, 3, 8, 8)).pow(2).sum().backward()
        optimizer.step()  # masked weights get gradients on weight_orig, yet stay zero through the mask
        rounds.append(pruning.weight_sparsity(m))
        return m

    pruned = pruning.prune_model(model, 0.5, "iterative", 3, finetune)
    assert rounds == pytest.approx(pruning.sparsity_schedule(0.5, 3), abs=1 / 112)
    assert pruning.weight_sparsity(pruned) == pytest.approx(0.5, abs=1 / 112)
    assert pruning.sparsity_schedule(0.9, 3)[-1] == pytest.approx(0.9)


@pytest.mark.parametrize("observer", ["minmax", "percentile"])
def test_int8_kernels_accept_every_activation_observer(observer):
    torch.manual_seed(0)
    model = Toy().eval()
    calib = images(16, 8)
    state = int8.calibrate_int8(model, calib, 8, 8, observer, 0.999)
    reference = int8.convert_int8(model, state, 8, 8, observer, 0.999)
    fp32 = int8.run_fixed_batches(model, calib, 8)
    quantized = int8.run_fixed_batches(reference, calib, 8)
    assert (quantized - fp32).abs().max() < 0.1 * fp32.abs().max() + 1e-3


def test_fractional_epochs_train_that_share_of_the_steps():
    from fairquant.params import TrainingParams
    from fairquant.training import train_classifier

    torch.manual_seed(0)
    data, labels = images(40, 8), np.arange(40) % 2
    steps = []
    train_classifier(Toy(), data, labels, data[:4], labels[:4], np.zeros(4), TrainingParams(epochs=0.5, batch_size=8),
                     torch.device("cpu"), on_batch=steps.append)
    assert len(steps) == 3  # ceil(0.5 x 5 steps per epoch)
    steps.clear()
    train_classifier(Toy(), data, labels, data[:4], labels[:4], np.zeros(4), TrainingParams(epochs=2, batch_size=8),
                     torch.device("cpu"), on_batch=steps.append)
    assert len(steps) == 10


def test_iterative_pruning_with_the_real_trainer():
    """Rounds after channels-last fine-tuning (the trainer's layout) must still prune to the target."""
    from fairquant.params import TrainingParams
    from fairquant.training import train_classifier

    torch.manual_seed(0)
    data, labels = images(16, 8), np.arange(16) % 2
    params = TrainingParams(epochs=0.5, batch_size=8)
    pruned = pruning.prune_model(Toy(), 0.6, "iterative", 2, lambda m, k: train_classifier(
        m, data, labels, data[:4], labels[:4], np.zeros(4), params, torch.device("cpu")))
    assert pruning.weight_sparsity(pruned) == pytest.approx(0.6, abs=1 / 112)


# --- the variant-kind registry and variant names -------------------------------------------------------------

def test_every_stored_kind_is_registered_by_its_module_and_read_by_the_loader():
    from fairquant.compress import checkpoints, registry, variants

    assert {kind.name for kind in variants.KINDS} == {"fp32", "pruned", "fakequant", "kmeans", "ptq-int8"}
    assert set(registry.registered()) == {kind.name for kind in variants.KINDS}
    assert registry.lookup("fp32") is checkpoints.FP32 and registry.lookup("pruned") is pruning.PRUNED
    assert registry.lookup("fakequant") is fakequant.FAKEQUANT and registry.lookup("kmeans") is kmeans.KMEANS
    assert registry.lookup("ptq-int8") is int8.PTQ_INT8


def test_an_unknown_kind_is_an_error_and_a_kind_registers_once():
    from fairquant.compress import registry

    with pytest.raises(FairquantError, match=r"unknown variant kind 'sparse-int4'; the model folder was written by "
                                             r"another fairquant version"):
        registry.lookup("sparse-int4")
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(registry.VariantKind("kmeans", kmeans.KMEANS.rebuild, kmeans.KMEANS.size_bytes, "x"))


@pytest.mark.parametrize("section, name", [
    ({"quantize_ptq": {"bits": 4, "calibration": "balanced"}}, "ptq-w4a8-balanced"),
    ({"quantize_ptq": {"activation_bits": None, "granularity": "per_tensor", "layers": {"fc": 8}}},
     "ptq-w8af-pt-mixed-train"),
    ({"quantize_qat": {}}, "qat-w4a4"),
    ({"quantize_kmeans": {"clusters": 16, "epochs": 1}}, "kmeans-k16-ft"),
    ({"quantize_kmeans": {"clusters": 8}}, "kmeans-k8"),
    ({"prune": {"sparsity": 0.9}}, "prune-s90"),
    ({"prune": {"sparsity": 0.5, "schedule": "iterative"}}, "prune-s50-iter"),
])
def test_each_compressor_names_its_variants_from_its_section(section, name):
    from fairquant.params import parse_params

    [(key, _)] = section.items()
    params = getattr(parse_params(section), key)
    assert params.variant_name() == name and params.params_section == key
    assert parse_params({}).compressors()[params.compressor] == getattr(parse_params({}), key)


def test_a_pruned_variant_that_misses_its_target_sparsity_is_not_made():
    """Found in review: a fine-tune that diverged to NaN (NaN x mask 0 = NaN: no zero left) was saved as prune-s50 and
    refused later, in every stage that read it, as an edited config."""
    import torch

    from fairquant.compress import pruning
    from fairquant.errors import FairquantError
    from fairquant.models import build_model
    from fairquant.params import PruneParams

    def diverge(model, round_index):
        with torch.no_grad():
            for name, tensor in model.named_parameters():
                if name.endswith("weight_orig"):
                    tensor.fill_(float("nan"))
        return model

    params = PruneParams(sparsity=0.5, schedule="one_shot")
    with pytest.raises(FairquantError, match=r"pruning to prune-s50 left 0.000 of the weights zero, not 0.5"):
        pruning.pruned_variant(build_model("face_resnet10", small_input_stem=True), params, diverge)
    model, record = pruning.pruned_variant(build_model("face_resnet10", small_input_stem=True), params, None)
    assert abs(record["sparsity"] - 0.5) < 1e-6


def test_weights_already_zero_but_unmasked_do_not_leave_pruning_short_of_its_target():
    """Found in review: each round counted every zero weight as removed, but L1 pruning then picks the unmasked
    exact zeros first (they are the smallest), so a model holding exact zeros ended below its target sparsity."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
    with torch.no_grad():
        model[0].weight[:4] = 0.0  # half the conv's filters exactly zero, unmasked
    layers = [model[0], model[2]]
    total = sum(layer.weight.numel() for layer in layers)
    for schedule in ("one_shot", "iterative"):
        pruned = pruning.prune_model(copy.deepcopy(model), 0.8, schedule, steps=3, finetune=None)
        assert pruning.weight_sparsity(pruned) == round(0.8 * total) / total, schedule
