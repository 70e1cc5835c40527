"""Layer sensitivity and the mixed-precision plan: rows against quantizing each layer by hand, sizes against
the quantized model, the greedy choice under a budget."""

import numpy as np
import pytest
import torch
from torch import nn

from fairquant.compress import fakequant
from fairquant.errors import FairquantError
from fairquant.mitigate import sensitivity
from fairquant.mitigate.sensitivity import layer_sensitivity, precision_plan
from fairquant.params import QuantSchemeParams
from fairquant.training import predict_scores

SCHEME = QuantSchemeParams(observer="histogram")  # bits, activation_bits and layers are set by the maps


class SmallResNet(nn.Module):
    """Stem, one residual block with a strided 1x1 shortcut, head: five quantizable layers, BatchNorm to fold and
    a skip connection (a layer's change reaches the output by two paths). The shortcut reads the stem's output
    before an in-place ReLU overwrites it: a kept intermediate value must not be the overwritten one."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(16)
        self.shortcut = nn.Conv2d(8, 16, 1, stride=2, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 1)

    def forward(self, x):
        x = self.bn1(self.conv1(x))
        skip = self.shortcut(x)
        out = self.relu(self.bn2(self.conv2(self.relu(x))))
        out = self.bn3(self.conv3(out)) + skip
        return self.fc(torch.flatten(self.pool(self.relu(out)), 1))


LAYERS = ["conv1", "conv2", "conv3", "shortcut", "fc"]


@pytest.fixture(scope="module")
def setup():
    """A seeded random model whose logits are centred on the validation images, labels equal to its own
    predictions except for 15% flipped in group B: fp32 is far from perfect in B, and any flip quantization
    causes shows up as a change of accuracy."""
    torch.manual_seed(0)
    model = SmallResNet().eval()
    for bn in (model.bn1, model.bn2, model.bn3):
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
    rng = np.random.default_rng(0)
    calibration = rng.integers(0, 256, (300, 8, 8, 3), dtype=np.uint8)  # several calibration batches
    val = rng.integers(0, 256, (160, 8, 8, 3), dtype=np.uint8)
    with torch.no_grad():
        from fairquant.models import to_input
        logits = model(to_input(val)).flatten()
        model.fc.bias -= logits.median() + 1e-3  # about half positive; no logit at exactly 0
    predicted = predict_scores(model, val, 64) > 0.5
    groups = np.where(rng.random(len(val)) < 0.4, "B", "A")
    flip = (groups == "B") & (rng.random(len(val)) < 0.15)
    labels = (predicted ^ flip).astype(np.int64)
    return model, calibration, val, labels, groups


@pytest.fixture(scope="module")
def at_2_bits(setup):
    model, calibration, val, labels, groups = setup
    return layer_sensitivity(model, calibration, val, labels, groups, SCHEME, bits=2, batch_size=64)


def hand_accuracy(scores, labels, groups):
    hits = (scores > 0.5) == labels.astype(bool)
    return float(hits.mean()), {g: float(hits[groups == g].mean()) for g in ("A", "B")}


def test_one_consistent_row_per_quantizable_layer(setup, at_2_bits):
    model, _, val, labels, groups = setup
    result = at_2_bits
    assert sorted(row["layer"] for row in result["layers"]) == sorted(LAYERS)
    assert result["bits"] == 2 and result["group_sizes"] == {g: int((groups == g).sum()) for g in ("A", "B")}
    fp32 = result["fp32"]
    assert (fp32["accuracy"], fp32["group_accuracy"]) == hand_accuracy(predict_scores(model, val, 64), labels, groups)
    assert fp32["group_accuracy"]["A"] == 1.0 and fp32["worst_group"] == "B" and fp32["worst_group_accuracy"] < 0.95
    for row in result["layers"] + [result["all_layers"]]:
        assert set(row["group_accuracy"]) == {"A", "B"}
        assert row["worst_group_accuracy"] == min(row["group_accuracy"].values())
        assert row["group_accuracy"][row["worst_group"]] == row["worst_group_accuracy"]
        assert row["damage"] == fp32["worst_group_accuracy"] - row["worst_group_accuracy"]
        assert row["group_drop"] == {g: fp32["group_accuracy"][g] - row["group_accuracy"][g] for g in ("A", "B")}
    keys = [(-row["damage"], row["index"]) for row in result["layers"]]
    assert keys == sorted(keys)
    assert [LAYERS[row["index"]] for row in result["layers"]] == [row["layer"] for row in result["layers"]]
    assert result["layers"][0]["damage"] > 0  # 2 bits on one layer does flip predictions
    assert result["all_layers"]["damage"] > result["layers"][-1]["damage"]


def test_rows_equal_quantizing_each_layer_alone_with_fakequant(setup, at_2_bits):
    """The shared-pass shortcut gives exactly what quantize_model + calibrate give layer by layer."""
    model, calibration, val, labels, groups = setup
    graph = sensitivity._float_graph(model, SCHEME, LAYERS)
    shared = sensitivity._calibrated_layers(graph, LAYERS, SCHEME, 2, calibration)
    expected = {}
    for name in LAYERS:
        scheme = QuantSchemeParams(**{**SCHEME.model_dump(), "layers": {n: 2 if n == name else None for n in LAYERS}})
        quantized = fakequant.calibrate(fakequant.quantize_model(model, scheme), calibration)
        assert [d["layer"] for d in fakequant.describe(quantized)] == [name]
        alone = quantized.get_submodule(name)
        for part in ("input_quant", "weight_quant"):  # the same ranges, from one shared calibration pass
            for buffer in ("scale", "zero_point"):
                assert torch.equal(getattr(getattr(shared[name], part), buffer), getattr(getattr(alone, part), buffer))
        expected[name] = hand_accuracy(predict_scores(quantized, val, 64), labels, groups)
    assert {row["layer"]: (row["accuracy"], row["group_accuracy"]) for row in at_2_bits["layers"]} == expected
    scheme = QuantSchemeParams(**{**SCHEME.model_dump(), "layers": {n: 2 for n in LAYERS}})
    full = fakequant.calibrate(fakequant.quantize_model(model, scheme), calibration)
    all_layers = at_2_bits["all_layers"]
    assert (all_layers["accuracy"], all_layers["group_accuracy"]) == hand_accuracy(
        predict_scores(full, val, 64), labels, groups)


def test_sixteen_bits_do_no_damage(setup, at_2_bits):
    model, calibration, val, labels, groups = setup
    result = layer_sensitivity(model, calibration, val, labels, groups, SCHEME, bits=16, batch_size=64)
    assert [row["damage"] for row in result["layers"]] == [0.0] * len(LAYERS)
    assert [row["layer"] for row in result["layers"]] == LAYERS  # all tied: layer order
    assert result["all_layers"]["damage"] == 0.0
    assert result["fp32"] == at_2_bits["fp32"]


def quantized_size(model, layers):
    scheme = QuantSchemeParams(**{**SCHEME.model_dump(), "layers": layers})
    quantized = fakequant.calibrate(fakequant.quantize_model(model, scheme), np.zeros((4, 8, 8, 3), np.uint8) + 128)
    return quantized, fakequant.quantized_size_bytes(quantized)


@pytest.mark.parametrize("high_bits", [8, None])
def test_plan_keeps_the_top_damaging_layers_and_reports_its_real_size(setup, at_2_bits, high_bits):
    model = setup[0]
    damaging = [row["layer"] for row in at_2_bits["layers"] if row["damage"] > 0]
    assert len(damaging) >= 2
    plan = precision_plan(at_2_bits, model, SCHEME, 2, high_bits, keep=2, size_budget_bytes=None)
    assert plan["kept"] == damaging[:2] and plan["skipped"] == []
    assert plan["layers"] == {name: high_bits if name in damaging[:2] else 2 for name in LAYERS}
    quantized, size = quantized_size(model, plan["layers"])  # the map runs as it is
    assert plan["size_bytes"] == size
    assert {d["layer"]: d["weight_bits"] for d in fakequant.describe(quantized)} == {
        name: bits for name, bits in plan["layers"].items() if bits is not None}
    assert plan["fully_quantized_size_bytes"] == quantized_size(model, {name: 2 for name in LAYERS})[1]
    assert plan["size_bytes"] > plan["fully_quantized_size_bytes"]
    everything = precision_plan(at_2_bits, model, SCHEME, 2, high_bits, keep=len(LAYERS), size_budget_bytes=None)
    assert everything["kept"] == damaging  # layers that did no damage are never kept


def table(damages: dict[str, float]) -> dict:
    """A hand-made sensitivity table: rows in the given (damage) order, every layer named."""
    return {"layers": [{"layer": name, "damage": damage} for name, damage in damages.items()]}


def test_plan_skips_upgrades_that_break_the_budget(setup):
    model = setup[0]
    damages = table({"conv3": 0.3, "fc": 0.2, "conv2": 0.1, "conv1": 0.0, "shortcut": 0.0})
    full = quantized_size(model, {name: 2 for name in LAYERS})[1]
    cost = {name: quantized_size(model, {n: 8 if n == name else 2 for n in LAYERS})[1] - full
            for name in ("conv3", "fc", "conv2")}
    assert cost["fc"] < cost["conv2"] < cost["conv3"]  # 16, 1152 and 2304 weights
    budget = full + cost["fc"] + cost["conv2"] // 2  # room for fc's upgrade only
    plan = precision_plan(damages, model, SCHEME, 2, 8, keep=3, size_budget_bytes=budget)
    assert plan["kept"] == ["fc"] and plan["skipped"] == ["conv3", "conv2"]
    assert plan["size_bytes"] == full + cost["fc"] == quantized_size(model, plan["layers"])[1] <= budget
    assert plan["budget_bytes"] == budget and plan["fully_quantized_size_bytes"] == full
    roomy = precision_plan(damages, model, SCHEME, 2, 8, keep=2, size_budget_bytes=full + cost["conv3"] + cost["fc"])
    assert roomy["kept"] == ["conv3", "fc"] and roomy["size_bytes"] == full + cost["conv3"] + cost["fc"]


def test_plan_refuses_a_budget_below_the_fully_quantized_model(setup):
    model = setup[0]
    full = quantized_size(model, {name: 2 for name in LAYERS})[1]
    damages = table({name: 0.1 for name in LAYERS})
    assert precision_plan(damages, model, SCHEME, 2, 8, keep=0, size_budget_bytes=full)["size_bytes"] == full
    with pytest.raises(FairquantError, match=r"size budget .* MB is smaller than the fully quantized model "
                                             r"\(.* MB.*\); raise mitigate\.sensitivity\.size_budget_mb"):
        precision_plan(damages, model, SCHEME, 2, 8, keep=1, size_budget_bytes=full - 1)


def test_plan_refuses_a_foreign_table_and_high_bits_not_above_bits(setup):
    model = setup[0]
    with pytest.raises(FairquantError, match="measure the sensitivity of this model again"):
        precision_plan(table({"conv1": 0.1, "layer1.0.conv1": 0.1}), model, SCHEME, 2, 8, keep=1,
                       size_budget_bytes=None)
    with pytest.raises(FairquantError, match=r"high_bits \(4\) must be above mitigate\.sensitivity\.bits \(4\)"):
        precision_plan(table({name: 0.1 for name in LAYERS}), model, SCHEME, 4, 4, keep=1, size_budget_bytes=None)


def test_a_model_with_an_in_place_function_is_refused():
    """x.relu_() would overwrite a kept intermediate value (in-place modules are switched off, functions cannot be)."""

    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 1)

        def forward(self, x):
            return self.fc(self.conv(x).relu_().mean((2, 3)))

    images = np.zeros((4, 8, 8, 3), np.uint8)
    with pytest.raises(FairquantError, match="in-place operation 'relu_'"):
        layer_sensitivity(InPlace(), images, images, np.zeros(4), np.array(["A"] * 4), SCHEME, bits=4)
