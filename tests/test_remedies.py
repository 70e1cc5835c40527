"""In-processing remedies (FairALM, DP regulariser, CEAG, equalized loss), slots, the test-split constraint and
the report's remedy tables."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from fairquant.errors import FairquantError
from fairquant.fairness.metrics import excess_drops
from fairquant.mitigate.constrained import Reference, constrained_objective, require_tolerance
from fairquant.mitigate.inprocess import DPRegularizer, FairALM, group_means
from fairquant.mitigate.slots import study_slots
from fairquant.params import (CEAGParams, DPRegularizerParams, EqualizedLossParams, FairALMParams, MitigateParams,
                              TrainingParams, parse_params)
from fairquant.training import train_classifier


def test_group_means_leave_out_groups_without_rows():
    values = torch.tensor([1.0, 3.0, 5.0, 7.0])
    groups = torch.tensor([0, 0, 2, 2])
    means, present = group_means(values, groups, 3, rows=torch.tensor([True, True, False, True]))
    assert means.tolist() == [2.0, 0.0, 7.0] and present.tolist() == [True, False, True]


def test_fairalm_step_is_algorithm_2_for_two_groups():
    """Primal: loss + sum_g lambda_g (mu_g - mean mu) + eta sum_g mu_g on the positives; dual: lambda_g += eta
    K/(K-1) (mu_g - mean mu), so that with two groups lambda = (lambda_0 - lambda_1)/2 follows the paper's
    lambda += eta (mu_0 - mu_1) exactly (found in review: it moved at half that rate). With the sigmoid surrogate
    mu_g is the group's mean miss probability on positives."""
    params = FairALMParams(eta=0.5, surrogate="sigmoid")
    objective = FairALM(params, ["A", "B"])
    objective.multipliers = torch.tensor([0.2, -0.2])
    logits = torch.tensor([2.0, 0.0, -1.0, 1.0, 3.0], requires_grad=True)
    targets = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0])
    groups = torch.tensor([0, 0, 1, 1, 1])
    loss = objective.loss(logits, targets, groups)
    miss = 1 - torch.sigmoid(logits.detach())
    mu = torch.stack([miss[:2].mean(), torch.stack([miss[2], miss[4]]).mean()])
    expected = (nn.functional.binary_cross_entropy_with_logits(logits.detach(), targets)
                + (torch.tensor([0.2, -0.2]) * (mu - mu.mean())).sum() + 0.5 * mu.sum())
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    logs = objective.after_step(1, 10)
    assert objective.multipliers.tolist() == pytest.approx((torch.tensor([0.2, -0.2]) + 2 * 0.5 * (mu - mu.mean())).tolist())
    paper_lambda_step = 0.5 * float(mu[0] - mu[1])
    assert float(objective.multipliers[0] - objective.multipliers[1]) / 2 == pytest.approx(0.2 + paper_lambda_step, rel=1e-5)
    # the group that misses more positives (B) gains weight
    assert objective.multipliers[1] > -0.2 and logs["fairalm/eta"] == 0.5
    objective.after_epoch(0)
    assert objective.eta == 0.5  # eta_growth 1: the paper's fixed eta


def test_fairalm_dual_step_scales_by_k_over_k_minus_1_for_three_groups():
    """K = 3: lambda_g += eta 3/2 (mu_g - mean mu), the step the module docstring and the README state."""
    objective = FairALM(FairALMParams(eta=0.4, surrogate="sigmoid"), ["A", "B", "C"])
    logits = torch.tensor([2.0, -0.5, 0.3, -1.0, 1.5, 0.0])
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    objective.loss(logits, torch.ones(6), groups)
    miss = 1 - torch.sigmoid(logits)
    mu = torch.stack([miss[groups == g].mean() for g in range(3)])
    objective.after_step(1, 10)
    assert objective.multipliers.tolist() == pytest.approx((0.4 * 3 / 2 * (mu - mu.mean())).tolist(), rel=1e-6)
    assert float(mu.max() - mu.min()) > 0.2  # a real spread: the step is not zero


def test_readme_states_the_dual_step_the_code_takes():
    """Found in review: the README gave lambda_g += eta (mu_g - mean mu), without the K/(K-1) the code applies."""
    import fairquant.mitigate.inprocess as inprocess

    stated = "lambda_g += eta K/(K-1) (mu_g - mean_h mu_h)"
    assert stated in " ".join(inprocess.__doc__.split())
    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8").split())
    in_readme = stated.replace("lambda", "λ").replace("eta", "η").replace("mean_h mu_h", "mean μ").replace("mu", "μ")
    assert f"dual `{in_readme}`" in readme
    assert "dual `λ_g += η (μ_g - mean μ)`" not in readme


def test_fairalm_fpr_constraint_uses_negatives_and_eta_grows_per_epoch():
    objective = FairALM(FairALMParams(constraint="fpr", surrogate="sigmoid", eta=0.1, eta_growth=1.01), ["A", "B"])
    logits = torch.tensor([3.0, -3.0, 1.0, 0.5])
    objective.loss(logits, torch.tensor([0.0, 0.0, 1.0, 0.0]), torch.tensor([0, 0, 1, 1]))
    scores = torch.sigmoid(logits)
    mu = torch.stack([scores[:2].mean(), scores[3]])  # negatives only: row 2 is a positive
    assert objective._step_gap.tolist() == pytest.approx((mu - mu.mean()).tolist())
    objective.after_epoch(0)
    assert objective.eta == pytest.approx(0.101)


def test_fairalm_skips_a_batch_with_one_group():
    objective = FairALM(FairALMParams(), ["A", "B"])
    logits, targets = torch.tensor([1.0, -1.0]), torch.tensor([1.0, 1.0])
    loss = objective.loss(logits, targets, torch.tensor([0, 0]))
    assert float(loss) == pytest.approx(float(nn.functional.binary_cross_entropy_with_logits(logits, targets)))
    objective.after_step(1, 2)
    assert objective.multipliers.tolist() == [0.0, 0.0]


def test_dp_regulariser_is_differentiable_through_scores():
    """The penalty is the spread of the groups' mean sigmoid scores, so it has a gradient (an argmax would not)."""
    objective = DPRegularizer(DPRegularizerParams(weight=2.0), ["A", "B"])
    logits = torch.tensor([2.0, 1.0, -1.0, -2.0], requires_grad=True)
    targets = torch.tensor([1.0, 0.0, 1.0, 0.0])
    loss = objective.loss(logits, targets, torch.tensor([0, 0, 1, 1]))
    scores = torch.sigmoid(logits.detach())
    spread = scores[:2].mean() - scores[2:].mean()
    plain = nn.functional.binary_cross_entropy_with_logits(logits.detach(), targets)
    assert float(loss) == pytest.approx(float(plain + 2.0 * spread), rel=1e-6)
    loss.backward()
    plain_logits = logits.detach().clone().requires_grad_(True)
    nn.functional.binary_cross_entropy_with_logits(plain_logits, targets).backward()
    difference = logits.grad - plain_logits.grad
    assert (difference[:2] > 0).all() and (difference[2:] < 0).all()  # pushes A's scores down, B's up


class _Features(nn.Module):
    """A linear model on the image's mean colour: enough to learn, fast to train."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 1)

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3)))


def _gap_data(seed=0, n=1200):
    """Group B's positives carry a weaker signal: a plain model has a lower TPR for B."""
    rng = np.random.default_rng(seed)
    groups = (rng.random(n) < 0.3).astype(int)
    labels = rng.integers(0, 2, n)
    signal = np.where(groups == 1, 0.25, 1.0) * (2 * labels - 1)
    red = np.clip(128 + 40 * signal + rng.normal(0, 30, n) + np.where(groups == 1, -20, 0), 0, 255)
    images = np.zeros((n, 4, 4, 3), np.uint8)
    images[..., 0] = red[:, None, None].astype(np.uint8)
    images[..., 1] = (groups * 60)[:, None, None]
    return images, labels, groups


def _tpr_gap(model, images, labels, groups):
    from fairquant.training import predict_scores

    pred = predict_scores(model, images, 256) > 0.5
    tpr = [pred[(groups == g) & (labels == 1)].mean() for g in (0, 1)]
    return abs(tpr[0] - tpr[1])


def test_fairalm_narrows_the_tpr_gap_that_plain_training_leaves():
    images, labels, groups = _gap_data()
    params = TrainingParams(epochs=6, batch_size=64, lr=0.2, augment=False)
    torch.manual_seed(0)
    plain = train_classifier(_Features(), images, labels, images[:8], labels[:8], groups[:8], params, "cpu", seed=0)
    torch.manual_seed(0)
    fair_params = FairALMParams(epochs=6, batch_size=64, lr=0.2, augment=False, eta=0.5, surrogate="sigmoid")
    objective = FairALM(fair_params, ["A", "B"])
    fair = train_classifier(_Features(), images, labels, images[:8], labels[:8], groups[:8], fair_params, "cpu",
                            seed=0, groups=groups, objective=objective)
    plain_gap, fair_gap = _tpr_gap(plain, images, labels, groups), _tpr_gap(fair, images, labels, groups)
    assert plain_gap > 0.15
    assert fair_gap < plain_gap - 0.1, (plain_gap, fair_gap)
    # each group against the mean: with two groups the multipliers are opposite (the paper's single lambda)
    assert float(objective.multipliers.sum()) == pytest.approx(0.0, abs=1e-5) and float(objective.multipliers.abs().max()) > 0


def _reference():
    # group 0: fp32 accuracy 1.0, group 1: 1/3; equal shares
    return Reference(np.array([1, 1, 1, 1, 0, 0] * 10, bool), np.ones(60), np.array([0, 0, 0, 1, 1, 1] * 10), 2)


def test_ceag_dual_step_uses_full_buffers_of_true_accuracy():
    """(acc_ref,g - acc_g) - (acc_ref - acc) - tolerance from the replay buffers; no dual step until every group's
    buffer is full; the multiplier of the group that loses more than the rest rises, the other stays at 0."""
    objective = constrained_objective(CEAGParams(tolerance=0.01, buffer=4, dual_lr=1.0), ["a", "b"],
                                      _reference(), nn.Linear(1, 1), lambda m: {"accuracy": 0.5, "max_excess_drop": 0})
    logits = torch.tensor([5.0, 5.0, -5.0, -5.0, 5.0, 5.0], requires_grad=True)
    targets, groups = torch.ones(6), torch.tensor([0, 0, 0, 1, 1, 1])
    objective.loss(logits, targets, groups).backward()
    assert objective.after_step(1, 100)["ceag/multiplier/a"] == 0.0  # buffers of 3: not full yet
    objective.loss(logits, targets, groups)
    logs = objective.after_step(2, 100)
    # buffers now: a = [T, T, F, F] (acc 0.5), b = [T, F, T, T] (acc 0.75); overall 0.625 vs fp32 2/3
    expected = (1.0 - 0.5) - (2 / 3 - 0.625) - 0.01
    assert logs["ceag/multiplier/a"] == pytest.approx(expected, rel=1e-5)
    assert logs["ceag/multiplier/b"] == 0.0  # its strict violation is negative: projected to 0


def test_equalized_loss_multipliers_take_either_sign():
    objective = constrained_objective(EqualizedLossParams(dual_lr=1.0), ["a", "b"], _reference(),
                                      nn.Linear(1, 1), lambda m: {"accuracy": 0.5, "max_excess_drop": 0})
    logits = torch.tensor([3.0, 3.0, -3.0, -3.0], requires_grad=True)
    objective.loss(logits, torch.ones(4), torch.tensor([0, 0, 1, 1])).backward()
    logs = objective.after_step(1, 100)
    assert logs["equalized_loss/multiplier/a"] < 0 < logs["equalized_loss/multiplier/b"]


def test_ceag_keeps_the_best_feasible_checkpoint():
    model = nn.Linear(1, 1)
    checks = iter([{"accuracy": 0.9, "max_excess_drop": 0.2},   # infeasible, most accurate
                   {"accuracy": 0.8, "max_excess_drop": 0.01},  # feasible
                   {"accuracy": 0.7, "max_excess_drop": 0.0}])  # feasible, less accurate
    objective = constrained_objective(CEAGParams(tolerance=0.02, checks=3), ["a", "b"], _reference(), model,
                                      lambda m: next(checks))
    for step, bias in zip((1, 2, 3), (1.0, 2.0, 3.0)):
        model.bias.data.fill_(bias)
        objective.after_step(step, 3)
    kept = objective.finish(model)
    assert float(kept.bias) == 2.0 and objective.summary()["kept_step"] == 2
    assert objective.summary()["feasible_on_validation"] is True


def test_ceag_without_a_feasible_check_keeps_the_least_violating_and_says_so():
    model = nn.Linear(1, 1)
    checks = iter([{"accuracy": 0.9, "max_excess_drop": 0.2}, {"accuracy": 0.8, "max_excess_drop": 0.1}])
    objective = constrained_objective(CEAGParams(tolerance=0.02, checks=2), ["a", "b"], _reference(), model,
                                      lambda m: next(checks))
    for step in (1, 2):
        model.bias.data.fill_(float(step))
        objective.after_step(step, 2)
    assert float(objective.finish(model).bias) == 2.0 and objective.summary()["feasible_on_validation"] is False


def test_ceag_tolerance_is_required_and_bounded():
    with pytest.raises(FairquantError, match="mitigate.ceag.tolerance is not set"):
        require_tolerance(CEAGParams(tolerance=None))
    with pytest.raises(FairquantError, match="mitigate.ceag.tolerance"):
        parse_params({"mitigate": {"ceag": {"tolerance": 1.5}}})
    with pytest.raises(FairquantError, match="mitigate.dp_regularizer.weight"):
        parse_params({"mitigate": {"dp_regularizer": {"weight": -1}}})
    with pytest.raises(FairquantError, match="mitigate.before_compression"):
        parse_params({"mitigate": {"before_compression": ["fairalmm"]}})


def test_excess_drops_by_hand():
    y = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    ref = np.array([1, 1, 0, 0, 1, 1, 0, 0])   # perfect
    var = np.array([1, 1, 0, 0, 0, 1, 1, 0])   # group b loses 2 of 4
    groups = np.array(["a"] * 4 + ["b"] * 4)
    drops = excess_drops(y, ref, var, groups)
    assert drops["overall_drop"] == pytest.approx(0.25)
    assert drops["groups"]["b"]["excess_drop"] == pytest.approx(0.5 - 0.25)
    assert drops["groups"]["a"]["excess_drop"] == pytest.approx(-0.25)
    tpr = excess_drops(y, ref, var, groups, "tpr")  # positives only: b keeps 1 of 2
    assert tpr["groups"]["b"]["excess_drop"] == pytest.approx(0.5 - 0.25) and tpr["max_excess_drop"] == pytest.approx(0.25)


def test_study_slots_pair_each_remedy_with_what_it_fixes():
    slots = study_slots(MitigateParams(during_qat=["equalized_loss"], during_kmeans=["ceag"], precision=["sensitivity"],
                                       after=["caleqodds", "threshold"], calibration_sets=["balanced"]))
    assert slots["ceag+kmeans"] == "kmeans" and slots["balanced+ptq"] == "ptq"  # balanced calibration, side by side with quantize_ptq's own set
    # found in review: vs fp32, the remedy got the credit of its extra fine-tuning; its control has that fine-tuning
    assert slots["fairalm"] == "fairalm-control" and slots["fairalm+ptq"] == "fairalm-control+ptq"
    assert slots["fairalm-control"] is None and slots["fairalm-control+ptq"] is None and slots["ceag+prune"] == "prune"
    assert slots["equalized_loss+qat"] == "qat" and slots["sensitivity+ptq"] == "fp32"
    assert slots["ptq+threshold"] == "ptq" and slots["fp32+caleqodds"] == "fp32" and slots["qat"] is None
    with pytest.raises(FairquantError, match=r"mitigate.post_on names \['int4'\]"):
        study_slots(MitigateParams.model_construct(**{**MitigateParams().model_dump(), "post_on": ["int4"]}))
    with pytest.raises(ValueError, match=r"mitigate.post_on names 'int4', a slot this study does not make"):
        MitigateParams(post_on=["int4"])  # refused on load since issue 20


def _frame(pred, n_groups=2):
    y = np.array([1, 0] * 20)
    groups = np.where(np.arange(40) < 28, "Female", "Male")
    return pd.DataFrame({"sample_id": [str(i) for i in range(40)], "y_true": y, "y_score": pred.astype(np.float32),
                         "y_pred": pred.astype(int), "Male": groups})


def test_evaluate_compares_a_remedy_with_its_baseline_and_measures_the_constraint_on_test():
    from fairquant.fairness.evaluation import evaluate_variant
    from fairquant.params import EvaluateParams
    from fairquant.results import PredictionsInfo

    y = np.array([1, 0] * 20)
    reference = _frame(y)
    baseline = _frame(np.where(np.arange(40) >= 28, 1 - y, y))   # wrong on every Male row
    remedy = _frame(np.where(np.arange(40) >= 34, 1 - y, y))     # wrong on half of them
    info = PredictionsInfo.from_dict({
        "name": "ceag+prune-s80", "kind": "pruned", "kernels": "dense-decoded", "synthetic": True, "size_bytes": 10,
        "details": {"mitigation": {"params": {"rate": "accuracy", "tolerance": 0.05},
                                   "constraint": {"train": {}, "validation": {}}}}})
    params = EvaluateParams(privileged_group="Female", bootstrap=200)
    result = evaluate_variant(remedy, reference, info, ["Male"], params, baseline=("prune", baseline)).to_dict()
    assert result["baseline"] == "prune"
    assert result["vs_baseline"]["gaps"]["accuracy_gap"]["delta"] == pytest.approx(-0.5)
    test = result["constraint"]["test"]
    assert test["groups"]["Male"]["excess_drop"] == pytest.approx(0.5 - 6 / 40) and test["holds"] is False


def test_report_remedy_table_and_pareto():
    from fairquant.report.remedies import remedies_section
    from fairquant.report.tables import pareto_table

    def result(name, accuracy, worst, size, baseline=None, collapsed_groups=()):
        gap = {"delta": -0.1, "ci_low": -0.2, "ci_high": -0.01, "p_value": 0.01}
        r = {"variant": name, "overall": {"accuracy": accuracy}, "worst_group_accuracy": worst, "size_bytes": size,
             "collapsed": False, "details": {"mitigation": {"collapsed": list(collapsed_groups)}}}
        if baseline:
            r.update(baseline=baseline, vs_baseline={"gaps": {g: gap for g in ("tpr_gap", "fpr_gap", "eq_odds", "dp_gap")}})
        return r

    results = {"fp32": result("fp32", 0.9, 0.7, 4000), "ptq": result("ptq", 0.88, 0.68, 1000),
               "ptq+caleqodds": result("ptq+caleqodds", 0.89, 0.75, 1000, "ptq", ["Male"])}
    (section,) = remedies_section(results, None, 0.95)
    remedies = section.blocks[1]
    row = remedies.row("ptq+caleqodds")
    assert [c.words() for c in remedies.rows[0][:5]] == ["ptq+caleqodds", "ptq", "+1.00 pts", "75.00 (was 68.00)", "1.00x"]
    assert row["tpr_gap change"].note == "narrows" and row["tpr_gap change"].words() == "-0.100 [-0.200, -0.010] narrows"
    assert row["collapsed"].value == "Male constant" and row["collapsed"].emphasis
    pareto = pareto_table(results).set_index("variant")["pareto"].to_dict()
    assert pareto == {"fp32": True, "ptq": False, "ptq+caleqodds": True}  # ptq+caleqodds dominates ptq


def test_report_shows_the_sensitivity_table_and_the_plan():
    from fairquant.report.remedies import precision_sections

    row = lambda layer, damage: {"layer": layer, "damage": damage, "accuracy": 0.8,  # noqa: E731
                                 "group_drop": {"A": 0.0, "B": damage}}
    mitigation = {"family": "precision",
                  "sensitivity": {"bits": 3, "validation_images": 400,
                                  "fp32": {"accuracy": 0.9, "group_accuracy": {"A": 0.95, "B": 0.7},
                                           "worst_group": "B", "worst_group_accuracy": 0.7},
                                  "all_layers": {"accuracy": 0.6, "damage": 0.3},
                                  "layers": [row("layer4.1.conv2", 0.12), row("fc", 0.0)]},
                  "plan": {"kept": ["layer4.1.conv2"], "size_bytes": 4.2e6, "fully_quantized_size_bytes": 4.0e6,
                           "budget_bytes": 5e6}}
    (section,) = precision_sections({"sens": {"variant": "sensitivity+ptq-w3-keep1",
                                              "details": {"mitigation": mitigation}}})
    _, layers, plan = section.blocks
    kept = layers.row("layer4.1.conv2")
    assert [c.words() for c in kept.values()] == ["layer4.1.conv2", "0.120", "80.00", "0.000", "0.120", "yes"]
    assert kept["kept"].emphasis and layers.row("fc")["damage"].words() == "0.000" and not layers.row("fc")["kept"].emphasis
    assert "4.20 MB vs 4.00 MB with every layer low (budget 5.00 MB)" in plan.spans[0].text


def test_a_constraint_over_a_group_without_its_rows_is_refused(tmp_path):
    """Found in review: a TPR constraint over a group with no validation positives was silently dropped (trivially
    feasible); FairALM's over a group with no training positives was skipped at every step."""
    from fairquant.mitigate.remedies import compress_during, finetune_before
    from fairquant.models import build_model
    from fairquant.params import PruneParams
    from tests.conftest import write_prepared

    data = write_prepared(tmp_path / "prepared", n=96, positives_of_minority_in=("train", "test"))
    model = build_model("resnet18", small_input_stem=True)
    with pytest.raises(FairquantError, match=r"ceag with rate tpr: group\(s\) \['1'\] have no positives in the validation"):
        compress_during(CEAGParams(tolerance=0.05, rate="tpr"), model=model, data=data,
                        protected=["Male"], compressor_params=PruneParams(epochs=0.1), calibration_images=None,
                        live_dir=tmp_path / "live", seed=0)
    data = write_prepared(tmp_path / "prepared2", n=96, positives_of_minority_in=("val", "test"))
    with pytest.raises(FairquantError, match=r"fairalm constrains TPR, but group\(s\) \['1'\] have no positives in the training"):
        finetune_before(FairALMParams(), model=model, data=data, protected=["Male"], live_dir=tmp_path / "live", seed=0)


def test_the_control_is_the_same_fine_tuning_without_the_remedy(tmp_path):
    from fairquant.mitigate.remedies import finetune_before
    from fairquant.models import build_model
    from tests.conftest import write_prepared

    data = write_prepared(tmp_path / "prepared", n=96)
    params = FairALMParams(epochs=1, batch_size=16, eta=1.0)
    start = build_model("resnet18", small_input_stem=True)
    state = {k: v.clone() for k, v in start.state_dict().items()}
    control, record = finetune_before(params, model=start, data=data, protected=["Male"], live_dir=tmp_path / "c",
                                      seed=3, control=True)
    again = build_model("resnet18", small_input_stem=True)
    again.load_state_dict(state)
    remedy, remedy_record = finetune_before(params, model=again, data=data, protected=["Male"],
                                            live_dir=tmp_path / "r", seed=3)
    assert record["method"] == "fairalm-control" and record["family"] == "control" and record["control_for"] == "fairalm"
    assert remedy_record["method"] == "fairalm" and "multipliers" in remedy_record
    weights = lambda m: torch.cat([p.detach().flatten() for p in m.parameters()])  # noqa: E731
    assert not torch.equal(weights(control), weights(remedy))  # same start, seed and data order: the objective differs
    assert (tmp_path / "r" / "plots" / "metrics" / "fairalm" / "eta.tsv").is_file()


def test_a_plan_budget_below_the_fully_quantized_model_is_refused_before_the_sweep(monkeypatch):
    from fairquant.mitigate import remedies, sensitivity
    from fairquant.models import build_model
    from fairquant.params import QuantSchemeParams, SensitivityParams

    monkeypatch.setattr(sensitivity, "layer_sensitivity", lambda *a, **k: pytest.fail("the sweep ran first"))
    with pytest.raises(FairquantError, match=r"size budget 0.5 MB is smaller than the fully quantized model"):
        remedies.precision_variant(SensitivityParams(size_budget_mb=0.5), model=build_model("resnet18", small_input_stem=True),
                                   scheme_base=QuantSchemeParams(), calibration_images=np.zeros((2, 8, 8, 3), np.uint8),
                                   val_images=np.zeros((2, 8, 8, 3), np.uint8), val_labels=np.zeros(2), val_groups=np.zeros(2))


def test_ceag_runs_during_kmeans_and_refuses_a_compressor_without_fine_tuning(tmp_path):
    from fairquant.mitigate.remedies import compress_during
    from fairquant.models import build_model
    from fairquant.params import PruneParams, QuantizeKmeansParams
    from tests.conftest import write_prepared

    data = write_prepared(tmp_path / "prepared", n=96)
    module, recorded = compress_during(
        CEAGParams(tolerance=0.05, checks=2), model=build_model("resnet18", small_input_stem=True),
        data=data, protected=["Male"], compressor_params=QuantizeKmeansParams(clusters=4, iterations=3, epochs=1,
                                                                                batch_size=16),
        calibration_images=None, live_dir=tmp_path / "live", seed=0)
    assert recorded["kind"] == "kmeans" and recorded["clusters"] == 4
    mitigation = recorded["mitigation"]
    assert mitigation["compressor"] == "kmeans" and set(mitigation["constraint"]) == {"train", "validation"}
    assert len(mitigation["checks"]) == 2 and mitigation["kept_step"] in (1, 2)
    with pytest.raises(FairquantError, match=r"ceag replaces prune's fine-tuning, but prune.epochs is 0; set it above 0"):
        compress_during(CEAGParams(tolerance=0.05), model=build_model("resnet18", small_input_stem=True),
                        data=data, protected=["Male"], compressor_params=PruneParams(epochs=0), calibration_images=None,
                        live_dir=tmp_path / "live2", seed=0)


# --- registration: each remedy's method registered by its params class, in its family's module -----------------

def test_every_remedy_has_its_family_method_registered_by_config_type():
    from fairquant.mitigate import constrained, inprocess, postprocess, remedies
    from fairquant.params import REMEDY_PARAMS

    of = {family: {r for r in REMEDY_PARAMS if r.family == family} for family in ("before", "during", "after")}
    assert set(inprocess.BEFORE_COMPRESSION) == of["before"]
    assert set(constrained.DURING_COMPRESSION) == of["during"]
    assert {params for params, _ in postprocess.POSTPROCESSORS.values()} == of["after"]
    assert set(postprocess.POSTPROCESSORS) == {r.method for r in of["after"]}
    assert set(remedies.REMEDIES) == set(REMEDY_PARAMS)
    assert [remedies.family(r.method) for r in REMEDY_PARAMS] == [r.family for r in REMEDY_PARAMS]


def test_ceag_and_equalized_loss_are_their_own_objectives():
    from fairquant.mitigate.constrained import CEAG, EqualizedLoss

    ceag = constrained_objective(CEAGParams(tolerance=0.02), ["a", "b"], _reference(), nn.Linear(1, 1), None)
    equal = constrained_objective(EqualizedLossParams(), ["a", "b"], _reference(), nn.Linear(1, 1), None)
    assert type(ceag) is CEAG and ceag.method == "ceag" and not ceag.equality
    assert type(equal) is EqualizedLoss and equal.method == "equalized_loss" and equal.equality
    assert equal.feasible({"max_excess_drop": 0.0}) is None and ceag.feasible({"max_excess_drop": 0.03}) is False


def test_an_unknown_remedy_or_config_is_an_error():
    from fairquant.mitigate.remedies import family, mitigate
    from fairquant.params import PruneParams

    with pytest.raises(FairquantError, match=r"^unknown remedy 'fairness'; known: fairalm, dp_regularizer, ceag, "
                                             r"equalized_loss, caleqodds, threshold, sensitivity$"):
        family("fairness")
    with pytest.raises(FairquantError, match=r"^no remedy is registered for PruneParams; known: fairalm, "):
        mitigate(PruneParams())


def test_a_remedy_during_a_compressor_without_fine_tuning_is_refused():
    from fairquant.mitigate.remedies import compress_during
    from fairquant.params import QuantizePTQParams

    with pytest.raises(FairquantError, match=r"^ceag runs during prune, qat or kmeans, not 'ptq'$"):
        compress_during(CEAGParams(tolerance=0.05), model=None, data=None, protected=["Male"],
                        compressor_params=QuantizePTQParams(), calibration_images=None, live_dir=None, seed=0)


@pytest.mark.parametrize("method", ["ceag", "equalized_loss"])
def test_the_constrained_remedies_train_a_softmax_head(method):
    """CEAG and equalized loss on a three-class head: a finite Lagrangian whose gradient reaches the head, and the
    replay buffers counting argmax correctness (a binary head's `logits > 0` would be meaningless here)."""
    import numpy as np
    import torch

    from fairquant.mitigate.constrained import Reference, constrained_objective
    from fairquant.params import CEAGParams, EqualizedLossParams

    torch.manual_seed(0)
    params = CEAGParams(tolerance=0.02, buffer=4) if method == "ceag" else EqualizedLossParams(buffer=4)
    groups = np.array([0, 1] * 8)
    reference = Reference(np.ones(16, bool), np.full(16, 0.5), groups, 2)
    head = torch.nn.Linear(5, 3)
    objective = constrained_objective(params, ["F", "M"], reference, head, lambda model: {"accuracy": 1.0,
                                                                                          "max_excess_drop": 0.0})
    features, targets = torch.randn(16, 5), torch.tensor([0, 1, 2, 0] * 4, dtype=torch.float32)
    logits = head(features)
    loss = objective.loss(logits, targets, torch.as_tensor(groups))
    loss.backward()
    assert torch.isfinite(loss) and head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    right = (logits.argmax(1) == targets.long()).numpy()
    assert [list(b) for b in objective.buffers] == [list(right[groups == 0][-4:]), list(right[groups == 1][-4:])]
