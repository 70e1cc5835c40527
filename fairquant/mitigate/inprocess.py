"""In-processing before compression: fine-tune the fp32 model under a fairness term, then compress it as usual.

FairALM (Lokhande et al. 2020, Algorithm 2): an augmented Lagrangian on equal group rates. With mu_g the
differentiable surrogate of group g's miss rate (1 - TPR on positives, or FPR on negatives) and a multiplier
lambda_g per group, each primal step descends

    loss + sum_g lambda_g (mu_g - mean_h mu_h) + eta * sum_g mu_g

and each dual step ascends lambda_g += eta K/(K-1) (mu_g - mean_h mu_h) for K groups. For two groups this is
exactly the paper's loss + lambda (mu_0 - mu_1) + eta (mu_0 + mu_1) and lambda += eta (mu_0 - mu_1), with
lambda = (lambda_0 - lambda_1) / 2; for more groups each group is held against the mean. The released code's two-group, DEO-only,
cross-entropy form is the default surrogate here; ``eta_growth`` reproduces its eta *= 1.01 per epoch.

The demographic-parity regulariser adds ``weight`` times the spread (largest minus smallest group) of the
groups' mean sigmoid scores: differentiable, unlike a spread of argmax predictions, which has no gradient.

Groups absent from a batch (or without rows of the constrained label) are left out of that step's terms.
Under several processes every rank computes these terms on the whole global batch (the other ranks' logits
gathered, ``fairquant.training.train_classifier``): the multipliers and eta are the one-process ones on every rank.
"""

from __future__ import annotations

import torch
from torch import nn

from fairquant.params import DPRegularizerParams, FairALMParams
from fairquant.training import Objective


def group_means(values: torch.Tensor, groups: torch.Tensor, n_groups: int,
                rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of ``values`` per group over ``rows`` (all rows when None), and which groups had any such row."""
    if rows is not None:
        values, groups = values[rows], groups[rows]
    sums = torch.zeros(n_groups, dtype=values.dtype, device=values.device).index_add(0, groups, values)
    counts = torch.bincount(groups, minlength=n_groups).to(values.dtype)
    present = counts > 0
    return sums / counts.clamp(min=1), present


BEFORE_COMPRESSION: dict[type, type[Objective]] = {}  # params class -> its objective


def _before_compression(params_type: type):
    def register(objective: type[Objective]) -> type[Objective]:
        BEFORE_COMPRESSION[params_type] = objective
        return objective
    return register


@_before_compression(FairALMParams)
class FairALM(Objective):
    def __init__(self, params: FairALMParams, group_names: list[str]):
        self.params, self.names = params, group_names
        self.multipliers = torch.zeros(len(group_names))
        self.eta = params.eta
        self._step_gap: torch.Tensor | None = None
        self._present: torch.Tensor | None = None

    def surrogate(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per row, a differentiable stand-in for missing the constrained rate (a missed positive for tpr, a false
        positive for fpr), on the rows where that rate is defined."""
        if self.params.surrogate == "cross_entropy":
            return nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        scores = torch.sigmoid(logits)
        return 1 - scores if self.params.constraint == "tpr" else scores

    def loss(self, logits, targets, groups):
        loss = nn.functional.binary_cross_entropy_with_logits(logits, targets)
        rows = targets > 0.5 if self.params.constraint == "tpr" else targets < 0.5
        mu, present = group_means(self.surrogate(logits, targets), groups, len(self.names), rows)
        self._present = present.cpu()
        if int(present.sum()) < 2:  # nothing to equalise in this batch
            self._step_gap = None
            return loss
        gap = (mu - mu[present].mean()) * present
        self._step_gap = gap.detach().cpu()
        lam = self.multipliers.to(logits.device)
        return loss + (lam * gap).sum() + self.eta * mu[present].sum()

    def after_step(self, step, total_steps):
        if self._step_gap is not None:
            k = int(self._present.sum())
            self.multipliers += self.eta * k / (k - 1) * self._step_gap
        logs = {"fairalm/eta": self.eta}
        for k, name in enumerate(self.names):
            logs[f"fairalm/multiplier/{name}"] = float(self.multipliers[k])
            if self._step_gap is not None and bool(self._present[k]):
                logs[f"fairalm/surrogate_vs_mean/{name}"] = float(self._step_gap[k])
        return logs

    def after_epoch(self, epoch):
        self.eta *= self.params.eta_growth

    def summary(self) -> dict:
        return {"multipliers": {n: float(v) for n, v in zip(self.names, self.multipliers)}, "final_eta": self.eta}

    def train_state(self) -> dict:
        return {"multipliers": self.multipliers.clone(), "eta": self.eta}

    def load_train_state(self, state: dict) -> None:
        self.multipliers, self.eta = state["multipliers"].clone(), state["eta"]


@_before_compression(DPRegularizerParams)
class DPRegularizer(Objective):
    def __init__(self, params: DPRegularizerParams, group_names: list[str]):
        self.params, self.names = params, group_names
        self._spread: float | None = None

    def loss(self, logits, targets, groups):
        loss = nn.functional.binary_cross_entropy_with_logits(logits, targets)
        means, present = group_means(torch.sigmoid(logits), groups, len(self.names))
        if int(present.sum()) < 2:
            self._spread = None
            return loss
        spread = means[present].max() - means[present].min()
        self._spread = float(spread.detach())
        return loss + self.params.weight * spread

    def after_step(self, step, total_steps):
        return {} if self._spread is None else {"dp_regularizer/score_spread": self._spread}

    def summary(self) -> dict:
        return {"weight": self.params.weight}


def objective_for(params, group_names: list[str]) -> Objective:
    """The in-processing objective registered for this config type."""
    return BEFORE_COMPRESSION[type(params)](params, group_names)
