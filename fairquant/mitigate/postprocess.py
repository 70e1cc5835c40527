"""Post-processing remedies: fitted on a variant's validation predictions, applied to its test predictions.

Both methods leave the model alone and change only its outputs per group, so they can fix any variant (fp32,
PTQ, ...) after the fact. Each public function takes the validation and test prediction frames and returns
new frames with the same columns and dtypes, ``y_score`` and ``y_pred`` replaced, plus a JSON-ready dict of
what was fitted.

- :func:`calibrated_equalized_odds`: Pleiss et al. (2017). Each group's calibrated score is, with
  probability ``mix_g``, replaced by the group's base rate (the trivial classifier, still calibrated), which
  raises that group's cost until it meets the costliest group's. Written in numpy for any number of groups;
  with two groups it is AIF360 0.6.1's ``CalibratedEqOddsPostprocessing`` exactly (same costs, same mix rates,
  same ``u <= mix`` draw, labels ``score >= 0.5``). Every group follows AIF360's rule: where the rule's mix
  rate reaches 1 every row takes the base rate, the group becomes a constant classifier and is listed under
  ``collapsed``; where the group's trivial classifier costs less than its own (miscalibrated) scores the rule's
  rate is negative, the group is left untouched and listed under ``untouched``: never silently.
- :func:`threshold_optimizer`: fairlearn's ``ThresholdOptimizer`` (Hardt et al. 2016) on the precomputed
  scores, through a prefit stand-in estimator whose ``predict`` returns the score column. Its new score is
  the per-row probability of a positive label (``_pmf_predict``); labels are drawn from it with the seed.

Both predictions are randomised. Each split draws its own uniforms from a generator seeded with
``params.seed`` (as AIF360 reseeds on every ``predict`` and fairlearn takes ``random_state``), so the test
labels do not depend on the size of the validation split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from pydantic import BaseModel, ValidationError
from sklearn.base import BaseEstimator

from fairquant.errors import FairquantError
from fairquant.fairness.metrics import group_labels
from fairquant.params import CalEqOddsParams, ThresholdParams

Postprocessor = Callable[[pd.DataFrame, pd.DataFrame, list[str], BaseModel], tuple[pd.DataFrame, pd.DataFrame, dict]]
POSTPROCESSORS: dict[str, tuple[type[BaseModel], Postprocessor]] = {}  # method -> (its params class, the function)


def postprocessor(params_type: type[BaseModel]):
    """Register the decorated function as the post-processor of ``params_type`` (under its ``method``)."""
    def register(function: Postprocessor) -> Postprocessor:
        POSTPROCESSORS[params_type.method] = (params_type, function)
        return function
    return register


THRESHOLD = 0.5  # AIF360's default: label 1 where the (mixed) score is >= 0.5
COST_NEEDS = {"fpr": ("negative",), "fnr": ("positive",), "weighted": ("positive", "negative")}


# --------------------------------------------------------------------------------------------------------------
# Shared checks


def _arrays(frame: pd.DataFrame, protected: list[str], split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores (float64), labels (int) and group labels of one prediction frame."""
    missing = [c for c in ("y_true", "y_score", "y_pred", *protected) if c not in frame.columns]
    if missing:
        raise FairquantError(f"{split} predictions lack columns {missing}; re-run predict for this variant")
    return (frame["y_score"].to_numpy(dtype=np.float64), frame["y_true"].to_numpy(dtype=np.int64),
            group_labels(frame, protected))


def _check_validation_groups(method: str, y_true: np.ndarray, groups: np.ndarray, needs: tuple[str, ...],
                             why: str) -> list[str]:
    """The sorted validation groups; every one must hold the labels its rates need."""
    names = sorted(set(groups.tolist()))
    if len(names) < 2:
        raise FairquantError(f"{method}: the validation split holds {len(names)} group(s) {names}; post-processing "
                             "needs at least two groups: check data.protected or use a split that holds several")
    for name in names:
        labels = y_true[groups == name]
        for kind, value in (("positive", 1), ("negative", 0)):
            if kind in needs and not np.any(labels == value):
                raise FairquantError(f"{method}: group '{name}' has no {kind} examples in the validation split, so "
                                     f"{why}; choose protected attributes whose groups all have {kind} examples "
                                     "or enlarge the validation split")
    return names


def _check_seen(method: str, fitted: list[str], groups: np.ndarray, split: str) -> None:
    unseen = sorted(set(groups.tolist()) - set(fitted))
    if unseen:
        raise FairquantError(f"{method}: {split} groups {unseen} never occur in the validation split the remedy was "
                             f"fitted on (it knows {fitted}); use splits drawn from the same population")


def _replace_outputs(frame: pd.DataFrame, scores: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """A copy of the frame with new scores and labels, dtypes as in the predictions schema."""
    out = frame.copy()
    out["y_score"] = scores.astype(np.float32)
    out["y_pred"] = labels.astype(np.int8)
    return out


def _uniforms(seed: int, n: int) -> np.ndarray:
    """One uniform draw per row in [0, 1): a fresh generator per split, so each split's labels stand alone."""
    return np.random.default_rng(seed).random(n)


# --------------------------------------------------------------------------------------------------------------
# Calibrated equalized odds


def group_cost(scores: np.ndarray, y_true: np.ndarray, cost_constraint: str) -> float:
    """One group's cost as AIF360 0.6.1's ``CalibratedEqOddsPostprocessing.fit`` takes it.

    Generalized FPR is the mean score on negatives, generalized FNR the mean ``1 - score`` on positives;
    ``fpr`` and ``fnr`` are those rates alone, ``weighted`` is ``(GFPR (1 - b) + GFNR b) / 2`` with ``b``
    the group's base rate.
    """
    positive = y_true == 1
    base_rate = positive.mean()
    if cost_constraint == "fpr":
        return float(scores[~positive].mean())
    if cost_constraint == "fnr":
        return float((1 - scores[positive]).mean())
    gfpr, gfnr = scores[~positive].mean(), (1 - scores[positive]).mean()
    return float((gfpr * (1 - base_rate) + gfnr * base_rate) / 2)


@dataclass(frozen=True)
class CalEqOddsFit:
    """What :func:`fit_caleqodds` learns on validation, one entry per group in ``groups`` order."""

    cost_constraint: str
    groups: list[str]
    base_rates: np.ndarray
    costs: np.ndarray
    trivial_costs: np.ndarray  # cost of scoring every row of the group with its base rate
    mix_rates: np.ndarray  # probability, in [0, 1], of replacing a row's score by its group's base rate
    target_cost: float  # the largest group cost: every group is raised toward it
    collapsed: list[str]  # groups whose every row takes the base rate: constant classifiers
    untouched: list[str]  # groups below the target whose trivial classifier costs less: left as they are


def aif360_mix_rate(cost: float, trivial_cost: float, target: float) -> float:
    """AIF360's mix rate ``(target - cost) / (trivial_cost - cost)`` for a group cheaper than ``target``.

    Negative where the trivial classifier costs less than the group's scores (no uniform is ``<=`` it: the
    group is left as it is); at least 1 where the target lies at or past the trivial cost (every row is
    replaced); ``inf`` where the two costs are equal (numpy's division, as in AIF360: every row replaced).
    """
    room = trivial_cost - cost
    return (target - cost) / room if room != 0 else np.inf


def fit_caleqodds(scores: np.ndarray, y_true: np.ndarray, groups: np.ndarray, cost_constraint: str) -> CalEqOddsFit:
    """Mix rates that raise each group's cost toward the largest group cost (Pleiss et al., multi-group form).

    Mixing a fraction ``m`` of a group's rows toward its trivial classifier moves its cost linearly from
    ``c_g`` to ``c_trivial_g``; every group cheaper than the costliest takes AIF360's
    ``m = (c_max - c_g) / (c_trivial_g - c_g)`` (with two groups, exactly AIF360's fit), the costliest keeps
    ``m = 0``. The rate applied is that rule's draw ``u <= m`` for ``u`` in [0, 1): ``m >= 1`` replaces every
    row (``mix_rates`` 1, the group in ``collapsed``), ``m < 0`` none (``mix_rates`` 0, in ``untouched``).
    """
    method = f"calibrated equalized odds (cost_constraint={cost_constraint})"
    undefined = {"fpr": "its generalized false-positive rate is undefined",
                 "fnr": "its generalized false-negative rate is undefined",
                 "weighted": "its weighted cost is undefined"}[cost_constraint]
    names = _check_validation_groups(method, y_true, groups, COST_NEEDS[cost_constraint], undefined)
    base_rates, costs, trivial_costs = [], [], []
    for name in names:
        s, y = scores[groups == name], y_true[groups == name]
        base_rates.append(y.mean())
        costs.append(group_cost(s, y, cost_constraint))
        trivial_costs.append(group_cost(np.full_like(s, y.mean()), y, cost_constraint))
    costs, trivial_costs = np.array(costs), np.array(trivial_costs)
    target = float(costs.max())
    mix_rates, collapsed, untouched = np.zeros(len(names)), [], []
    for k, name in enumerate(names):
        if costs[k] >= target:
            continue
        mix = aif360_mix_rate(costs[k], trivial_costs[k], target)
        if mix >= 1:
            collapsed.append(name)
        elif mix < 0:
            untouched.append(name)
        mix_rates[k] = min(max(mix, 0.0), 1.0)
    return CalEqOddsFit(cost_constraint, names, np.array(base_rates), costs, trivial_costs, mix_rates, target,
                        collapsed, untouched)


def apply_caleqodds(fit: CalEqOddsFit, scores: np.ndarray, groups: np.ndarray, uniforms: np.ndarray,
                    split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """New scores and labels: rows of group g whose uniform ``u <= mix_g`` take the group's base rate.

    The uniforms are an argument (one per row) so that a test can feed the draws AIF360 makes. A group
    left ``untouched`` keeps every row (AIF360's negative rate draws none, not even at ``u = 0``).
    """
    _check_seen("calibrated equalized odds", fit.groups, groups, split)
    new = scores.astype(np.float64).copy()
    for name, base_rate, mix in zip(fit.groups, fit.base_rates, fit.mix_rates):
        if name in fit.untouched:
            continue
        replace = (groups == name) & (uniforms <= mix)
        new[replace] = base_rate
    return new, (new >= THRESHOLD).astype(np.int8)


@postprocessor(CalEqOddsParams)
def calibrated_equalized_odds(val: pd.DataFrame, test: pd.DataFrame, protected: list[str],
                              params: CalEqOddsParams) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Fit calibrated equalized odds on ``val``; return transformed val and test frames and the fit's details."""
    val_scores, val_true, val_groups = _arrays(val, protected, "validation")
    test_scores, _, test_groups = _arrays(test, protected, "test")
    fit = fit_caleqodds(val_scores, val_true, val_groups, params.cost_constraint)
    _check_seen("calibrated equalized odds", fit.groups, test_groups, "test")  # before any work on test
    val_new, val_labels = apply_caleqodds(fit, val_scores, val_groups, _uniforms(params.seed, len(val)), "validation")
    test_new, test_labels = apply_caleqodds(fit, test_scores, test_groups, _uniforms(params.seed, len(test)))
    groups = {}
    for k, name in enumerate(fit.groups):
        rows = val_groups == name
        groups[name] = {
            "n_validation": int(rows.sum()),
            "base_rate": float(fit.base_rates[k]),
            "cost": float(fit.costs[k]),
            "trivial_cost": float(fit.trivial_costs[k]),
            "mix_rate": float(fit.mix_rates[k]),
            "expected_cost_after": float((1 - fit.mix_rates[k]) * fit.costs[k]
                                         + fit.mix_rates[k] * fit.trivial_costs[k]),
            "validation_cost_after": group_cost(val_new[rows], val_true[rows], params.cost_constraint),
        }
    details = {"method": params.method, "params": params.model_dump(), "protected": list(protected),
               "threshold": THRESHOLD, "target_cost": fit.target_cost, "collapsed": fit.collapsed,
               "untouched": fit.untouched, "groups": groups}
    return _replace_outputs(val, val_new, val_labels), _replace_outputs(test, test_new, test_labels), details


# --------------------------------------------------------------------------------------------------------------
# fairlearn ThresholdOptimizer


class ScoreColumn(BaseEstimator):
    """A prefit stand-in for the variant's model: ``predict`` returns the one score column it is given.

    It derives from scikit-learn's ``BaseEstimator`` because ``check_is_fitted`` (run by ``prefit=True``)
    reads the estimator's tags.
    """

    def fit(self, X, y=None, **kwargs) -> "ScoreColumn":
        return self

    def predict(self, X) -> np.ndarray:
        return np.asarray(X, dtype=np.float64)[:, 0]

    def __sklearn_is_fitted__(self) -> bool:
        return True


def _json_threshold(value: float) -> float | str:
    """Thresholds may be +-inf (always / never positive); keep them readable in JSON."""
    return float(value) if np.isfinite(value) else str(float(value))


def _expected_rates(probability: np.ndarray, y_true: np.ndarray) -> dict[str, float]:
    """Each group's expected TPR, FPR and selection rate under randomised labels drawn from ``probability``."""
    positive = y_true == 1
    return {"tpr": float(probability[positive].mean()), "fpr": float(probability[~positive].mean()),
            "selection_rate": float(probability.mean())}


@postprocessor(ThresholdParams)
def threshold_optimizer(val: pd.DataFrame, test: pd.DataFrame, protected: list[str],
                        params: ThresholdParams) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Fit fairlearn's ThresholdOptimizer on ``val``'s scores; return transformed val and test frames and details.

    fairlearn traces every group's ROC curve whatever the constraint, so every validation group needs both
    positive and negative examples (fairlearn itself raises "Degenerate labels" otherwise). A test group that
    was not in validation would silently get probability 0 from fairlearn; it is refused here instead.
    """
    from fairlearn.postprocessing import ThresholdOptimizer

    method = f"threshold optimizer ({params.constraint})"
    val_scores, val_true, val_groups = _arrays(val, protected, "validation")
    test_scores, _, test_groups = _arrays(test, protected, "test")
    names = _check_validation_groups(method, val_true, val_groups, ("positive", "negative"),
                                     "fairlearn cannot trace its ROC curve")
    _check_seen(method, names, test_groups, "test")
    optimizer = ThresholdOptimizer(estimator=ScoreColumn(), constraints=params.constraint, objective=params.objective,
                                   grid_size=params.grid_size, prefit=True, predict_method="predict")
    optimizer.fit(pd.DataFrame({"y_score": val_scores}), val_true, sensitive_features=val_groups)

    def transform(scores: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X = pd.DataFrame({"y_score": scores})
        probability = optimizer._pmf_predict(X, sensitive_features=groups)[:, 1]
        return probability, optimizer.predict(X, sensitive_features=groups, random_state=params.seed)

    val_probability, val_labels = transform(val_scores, val_groups)
    test_probability, test_labels = transform(test_scores, test_groups)
    groups = {}
    for name, rule in optimizer.interpolated_thresholder_.interpolation_dict.items():
        rows = val_groups == name
        groups[str(name)] = {
            "n_validation": int(rows.sum()),
            "base_rate": float(val_true[rows].mean()),
            "rule": [{"probability": float(rule[f"p{k}"]), "operator": rule[f"operation{k}"].operator,
                      "threshold": _json_threshold(rule[f"operation{k}"].threshold)} for k in (0, 1)],
            "validation_before": _expected_rates(val["y_pred"].to_numpy(np.float64)[rows], val_true[rows]),
            "validation_after": _expected_rates(val_probability[rows], val_true[rows]),
        }
        if "p_ignore" in rule:  # equalized odds: with this probability the label is 1 w.p. prediction_constant
            groups[str(name)].update(p_ignore=float(rule.p_ignore), prediction_constant=float(rule.prediction_constant))
    details = {"method": params.method, "params": params.model_dump(), "protected": list(protected),
               "fitted": {"x_metric": optimizer.x_metric_, "x_best": float(optimizer._x_best),
                          "y_metric": optimizer.y_metric_, "y_best": float(optimizer._y_best)},
               "collapsed": constant_groups(val_probability, val_groups), "groups": groups}
    return (_replace_outputs(val, val_probability, val_labels), _replace_outputs(test, test_probability, test_labels),
            details)


def constant_groups(probability: np.ndarray, groups: np.ndarray) -> list[str]:
    """Groups whose every validation row gets the same probability of a positive label: whatever the input, the
    group's labels are a coin of fixed bias, a constant classifier (the optimiser's rule ignores the score)."""
    return sorted(str(g) for g in np.unique(groups) if np.ptp(probability[groups == g]) == 0)


# --------------------------------------------------------------------------------------------------------------
# Registry

def postprocess(method: str, val: pd.DataFrame, test: pd.DataFrame, protected: list[str],
                params_section: BaseModel | dict) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Run the post-processor ``method`` with its section of ``mitigate`` (the params object or a mapping)."""
    if method not in POSTPROCESSORS:
        raise FairquantError(f"unknown post-processing method '{method}'; known methods: "
                             f"{', '.join(sorted(POSTPROCESSORS))}")
    params_cls, function = POSTPROCESSORS[method]
    if not isinstance(params_section, params_cls):
        try:
            params_section = params_cls.model_validate(
                params_section.model_dump() if isinstance(params_section, BaseModel) else params_section)
        except ValidationError as exc:
            error = exc.errors()[0]
            key = ".".join(str(part) for part in error["loc"])
            raise FairquantError(f"mitigate.{method}.{key}: {error['msg']}; fix params.yaml") from None
    return function(val, test, protected, params_section)
