"""In-processing during compression: fine-tune a compressed model under per-group constraints (cooper-optim).

CEAG (Hashemizadeh et al. 2024, "Balancing Act"): for every group g,

    (acc_ref,g - acc_c,g) - (acc_ref - acc_c) <= tolerance

where ref is the fp32 model and c the compressed one being fine-tuned: no group may lose more than the
overall loss plus the tolerance. The primal step uses the same expression with cross-entropy in place of
accuracy (the fp32 terms are constants); the dual step uses true accuracies from per-group replay buffers of
the latest ``buffer`` correctness values of the compressed model (only when every buffer is full; the overall
accuracy is their training-share-weighted mean, as the fp32 one is). Indexed multipliers, from 0, one per
group (intersectional groups when several protected attributes are listed); plain Lagrangian; dual SGD
(cooper's IndexedMultiplier gives sparse gradients, which Adam refuses). ``rate`` tpr / fpr restricts every
term to positives / negatives.

Equalized loss, its baseline: each group's loss equal to the overall loss (equality constraints, same dual).

Every ``total_steps / checks`` steps the model is validated; the best validation accuracy among checks whose
constraint holds on validation is kept (CEAG), or the last one (equalized loss, which has no tolerance).

Under several processes every rank holds a copy and computes the Lagrangian on the whole global batch (the other
ranks' logits gathered, ``fairquant.training.train_classifier``): the replay buffers, the dual steps and the
validation checks (the same weights on every rank) are the one-process ones on every rank.
"""

from __future__ import annotations

import collections

import cooper
import numpy as np
import torch
from torch import nn

from fairquant.errors import FairquantError
from fairquant.fairness.metrics import excess_drops, rate_rows
from fairquant.mitigate.inprocess import group_means
from fairquant.params import CEAGParams, ConstrainedParams, EqualizedLossParams
from fairquant.training import (Objective, labels_from_scores, mean_loss, per_sample_loss, predict_scores,
                                predicted_labels)


class _GroupProblem(cooper.ConstrainedMinimizationProblem):
    def __init__(self, n_groups: int, equality: bool):
        super().__init__()
        kind = cooper.ConstraintType.EQUALITY if equality else cooper.ConstraintType.INEQUALITY
        self.constraint = cooper.Constraint(constraint_type=kind, formulation_type=cooper.formulations.Lagrangian,
                                            multiplier=cooper.multipliers.IndexedMultiplier(num_constraints=n_groups))

    def compute_cmp_state(self, loss, violation, features, strict_violation=None, strict_features=None,
                          dual: bool = True):
        state = cooper.ConstraintState(violation=violation, constraint_features=features,
                                       strict_violation=strict_violation, strict_constraint_features=strict_features,
                                       contributes_to_dual_update=dual)
        return cooper.CMPState(loss=loss, observed_constraints={self.constraint: state})

    def __setstate__(self, state):  # unpickled (a spawned rank) or copied: cooper's __getattr__ would recurse
        self.__dict__.update(state)  # looking up _constraints before it exists


class Reference:
    """What the fp32 model scored, per group, on the rows the constraint is measured on."""

    def __init__(self, fp32_correct: np.ndarray, fp32_loss: np.ndarray, groups: np.ndarray, n_groups: int):
        self.accuracy = np.array([fp32_correct[groups == g].mean() for g in range(n_groups)])
        self.loss = np.array([fp32_loss[groups == g].mean() for g in range(n_groups)])
        self.shares = np.bincount(groups, minlength=n_groups) / len(groups)


class ConstrainedObjective(Objective):
    """Fine-tuning under one constraint per group (cooper's plain Lagrangian, dual SGD): what CEAG and equalized
    loss share. A subclass says what each group's violation is, what drives the dual step, and which validation
    check is kept."""

    equality = False  # equality constraints (multipliers of any sign) rather than inequalities

    def __init__(self, params: ConstrainedParams, group_names: list[str], reference: Reference, model: nn.Module,
                 validate):
        self.method, self.params, self.names, self.reference = params.method, params, group_names, reference
        self.model, self.validate = model, validate
        n = len(group_names)
        self.problem = _GroupProblem(n, equality=self.equality)
        self.dual = torch.optim.SGD(self.problem.dual_parameters(), lr=params.dual_lr, maximize=True)
        self.buffers = [collections.deque(maxlen=params.buffer) for _ in range(n)]
        self.state = None
        self.checks: list[dict] = []
        self._best: tuple[float, dict] | None = None

    def violation(self, group_loss: torch.Tensor, rate_loss: torch.Tensor) -> torch.Tensor:
        """Per group, the (differentiable) constraint violation of this batch."""
        raise NotImplementedError

    def dual_signal(self) -> tuple[torch.Tensor | None, torch.Tensor | None, bool]:
        """The strict (non-differentiable) violation and its features, and whether this step updates the duals."""
        raise NotImplementedError

    def feasible(self, check: dict) -> bool | None:
        raise NotImplementedError

    def check_rank(self, check: dict) -> tuple:
        """Which validation check to keep: the highest rank."""
        raise NotImplementedError

    def loss(self, logits, targets, groups):
        rows = torch.as_tensor(rate_rows(targets.cpu().numpy() > 0.5, self.params.rate), device=logits.device)
        ce = per_sample_loss(logits, targets)  # binary or softmax cross-entropy, by the head's width
        overall_loss = mean_loss(logits, targets)
        if not bool(rows.any()):
            self.state = None
            return overall_loss
        group_loss, present = group_means(ce, groups, len(self.names), rows)
        rate_loss = ce[rows].mean()
        features = torch.nonzero(present).flatten()
        violation = self.violation(group_loss, rate_loss)
        correct = (predicted_labels(logits.detach()) == targets.long())[rows].cpu().numpy()
        for g, ok in zip(groups[rows].cpu().numpy(), correct):
            self.buffers[g].append(bool(ok))
        strict, strict_features, dual = self.dual_signal()
        self.state = self.problem.compute_cmp_state(overall_loss.cpu(), violation[features].cpu(), features.cpu(),
                                                    strict, strict_features, dual)
        return self.state.compute_primal_lagrangian().lagrangian

    def after_step(self, step, total_steps):
        logs = {}
        if self.state is not None and self.state.observed_constraints[self.problem.constraint].contributes_to_dual_update:
            self.dual.zero_grad()
            self.state.compute_dual_lagrangian().backward()
            self.dual.step()
            self.problem.constraint.multiplier.post_step_()
        weights = self.problem.constraint.multiplier.weight.detach().flatten()
        for k, name in enumerate(self.names):
            logs[f"{self.method}/multiplier/{name}"] = float(weights[k])
        every = max(1, -(-total_steps // self.params.checks))  # ceil: at most `checks` checks
        if step % every == 0 or step == total_steps:
            check = self.validate(self.model)
            check["step"] = step
            self.checks.append(check)
            logs[f"{self.method}/val/accuracy"] = check["accuracy"]
            logs[f"{self.method}/val/max_excess_drop"] = check["max_excess_drop"]
            self._consider(check)
        return logs

    def _consider(self, check: dict) -> None:
        key = self.check_rank(check)
        check["feasible"] = self.feasible(check)
        if self._best is None or key > self._best[0]:
            state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            self._best = (key, state)
            self.kept_step = check["step"]

    def train_state(self) -> dict:
        plain = lambda v: v.item() if isinstance(v, np.generic) else v  # noqa: E731 (weights_only takes no numpy)
        return {"multipliers": self.problem.constraint.multiplier.weight.detach().cpu().clone(),
                "buffers": [[bool(v) for v in b] for b in self.buffers],
                "checks": [{k: plain(v) for k, v in c.items()} for c in self.checks],
                "best": None if self._best is None else (tuple(plain(v) for v in self._best[0]), self._best[1]),
                "kept_step": getattr(self, "kept_step", None)}

    def load_train_state(self, state: dict) -> None:
        with torch.no_grad():
            self.problem.constraint.multiplier.weight.copy_(state["multipliers"])
        self.buffers = [collections.deque(b, maxlen=self.params.buffer) for b in state["buffers"]]
        self.checks = [dict(c) for c in state["checks"]]
        self._best = None if state["best"] is None else (tuple(state["best"][0]), state["best"][1])
        if state["kept_step"] is not None:
            self.kept_step = state["kept_step"]

    def finish(self, model):
        if self._best is not None:
            model.load_state_dict(self._best[1])
        return model.eval()

    def summary(self) -> dict:
        weights = self.problem.constraint.multiplier.weight.detach().flatten()
        kept = next((c for c in self.checks if c["step"] == getattr(self, "kept_step", None)), None)
        return {"multipliers": {n: float(w) for n, w in zip(self.names, weights)},
                "checks": [{k: c[k] for k in ("step", "accuracy", "max_excess_drop", "feasible")} for c in self.checks],
                "kept_step": getattr(self, "kept_step", None),
                "feasible_on_validation": kept["feasible"] if kept else None}


DURING_COMPRESSION: dict[type, type[ConstrainedObjective]] = {}  # params class -> its objective


def _during_compression(params_type: type):
    def register(objective: type[ConstrainedObjective]) -> type[ConstrainedObjective]:
        DURING_COMPRESSION[params_type] = objective
        return objective
    return register


@_during_compression(CEAGParams)
class CEAG(ConstrainedObjective):
    """No group may lose more than the overall loss plus ``tolerance``; the duals follow true accuracies from the
    replay buffers; the best feasible validation check is kept."""

    def __init__(self, params: CEAGParams, *args, **kwargs):
        super().__init__(params, *args, **kwargs)
        self.tolerance = params.tolerance

    def violation(self, group_loss, rate_loss):
        ref = torch.as_tensor(self.reference.loss - float((self.reference.loss * self.reference.shares).sum()),
                              dtype=group_loss.dtype, device=group_loss.device)
        return (group_loss - rate_loss) - ref - self.tolerance

    def dual_signal(self):
        strict, strict_features = self._strict_violation()
        return strict, strict_features, strict is not None

    def _strict_violation(self):
        """CEAG's dual signal from the replay buffers, once every group's buffer is full."""
        if any(len(b) < self.params.buffer for b in self.buffers):
            return None, None
        accuracy = np.array([np.mean(b) for b in self.buffers])
        overall = float((accuracy * self.reference.shares).sum())
        ref_overall = float((self.reference.accuracy * self.reference.shares).sum())
        strict = (self.reference.accuracy - accuracy) - (ref_overall - overall) - self.tolerance
        return torch.tensor(strict, dtype=torch.float32), torch.arange(len(self.names))

    def feasible(self, check):
        return bool(check["max_excess_drop"] <= self.tolerance)

    def check_rank(self, check):
        return (1, check["accuracy"]) if self.feasible(check) else (0, -check["max_excess_drop"])


@_during_compression(EqualizedLossParams)
class EqualizedLoss(ConstrainedObjective):
    """Each group's loss equal to the overall loss; its loss violations drive the dual step too; the last
    validation check is kept (without a tolerance, feasibility is not defined for it)."""

    equality = True

    def violation(self, group_loss, rate_loss):
        return group_loss - rate_loss

    def dual_signal(self):
        return None, None, True

    def feasible(self, check):
        return None

    def check_rank(self, check):
        return (1, check["step"])


def constrained_objective(params: ConstrainedParams, group_names: list[str], reference: Reference, model: nn.Module,
                          validate) -> ConstrainedObjective:
    """The constrained objective registered for this config type."""
    return DURING_COMPRESSION[type(params)](params, group_names, reference, model, validate)


def require_tolerance(params) -> None:
    if isinstance(params, CEAGParams) and params.tolerance is None:
        raise FairquantError("mitigate.ceag.tolerance is not set; CEAG needs the excess accuracy drop it allows "
                             "each group, e.g. 0.02")


def reference_for(model: nn.Module, images, rows: np.ndarray, labels: np.ndarray, groups: np.ndarray, n_groups: int,
                  rate: str, batch_size: int, device: torch.device | str = "cpu") -> tuple[Reference, np.ndarray]:
    """The fp32 model's per-group accuracy and loss on ``rows`` (restricted to ``rate``'s rows), and its scores
    (computed on ``device``, where ``model`` is)."""
    scores = predict_scores(model, images, batch_size, device, rows=rows)
    measured = rate_rows(labels, rate)  # every group has such rows: compress_during checked
    labels = np.asarray(labels, dtype=np.int64)
    if scores.ndim == 1:
        p = np.clip(scores.astype(np.float64), 1e-7, 1 - 1e-7)
        loss = -(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    else:  # softmax: minus the log probability of the true class
        loss = -np.log(np.clip(scores[np.arange(len(labels)), labels].astype(np.float64), 1e-7, 1))
    correct = labels_from_scores(scores) == labels
    return Reference(correct[measured], loss[measured], groups[measured], n_groups), scores


def constraint_report(labels, reference_scores, variant_scores, groups_named, rate: str, tolerance) -> dict:
    """Whether the constraint holds on one split: excess drops per group and their maximum vs the tolerance."""
    drops = excess_drops(labels, labels_from_scores(reference_scores), labels_from_scores(variant_scores),
                         groups_named, rate)
    drops["tolerance"] = tolerance
    drops["holds"] = None if tolerance is None else bool(drops["max_excess_drop"] <= tolerance)
    return drops
