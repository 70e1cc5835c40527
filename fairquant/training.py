"""Fine-tuning of the fp32 model: seeded, deterministic on CPU, logged per epoch."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import copy
import math

import numpy as np
import torch
from torch import nn

from fairquant import distributed
from fairquant.errors import FairquantError
from fairquant.io import ImageRows, read_rows
from fairquant.models import to_input
from fairquant.params import DistributedParams, FinetuneParams, TrainingParams


def derived_seed(training_seed: int, own_seed: int) -> int:
    """The seed a stage of one training seed's chain uses: its own params seed mixed with the training seed, so
    that every seed's compression fine-tuning is as independent as its fp32 training."""
    return int(np.random.SeedSequence([training_seed, own_seed]).generate_state(1)[0] % 2 ** 31)


def seed_everything(seed: int, threads: int = 0) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    if threads:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)


def augment(batch: torch.Tensor, generator: torch.Generator, *, drawn: int | None = None,
            part: slice = slice(None)) -> torch.Tensor:
    """Random horizontal flip and a random shift of up to 1/16 of the side (reflect padding).

    With ``drawn``, the randomness is drawn for a global batch of ``drawn`` rows (as one process would) and
    ``batch`` is its rows ``part`` (one rank's slice): N processes then augment exactly as one does."""
    n, _, h, w = batch.shape
    flip = (torch.rand(n if drawn is None else drawn, generator=generator) < 0.5)[part]
    batch = torch.where(flip[:, None, None, None], batch.flip(3), batch)
    pad = max(1, h // 16)
    padded = nn.functional.pad(batch, (pad, pad, pad, pad), mode="reflect")
    dx, dy = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=generator))
    return padded[:, :, dy:dy + h, dx:dx + w]


def logits_of(output: torch.Tensor) -> torch.Tensor:
    """A model's output as logits: (N,) for a binary head (one logit), (N, K) for a multi-class one."""
    output = output.reshape(len(output), -1)
    return output[:, 0] if output.shape[1] == 1 else output


def per_sample_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each row: binary on one logit per row, softmax over K logits per row (``targets`` hold
    0/1, or class indices, as floats)."""
    if logits.ndim == 1:
        return nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return nn.functional.cross_entropy(logits, targets.long(), reduction="none")


def mean_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The batch's mean cross-entropy, by torch's own mean reduction (a binary head then trains bit for bit as it
    did before multi-class heads existed)."""
    if logits.ndim == 1:
        return nn.functional.binary_cross_entropy_with_logits(logits, targets)
    return nn.functional.cross_entropy(logits, targets.long())


def predicted_labels(logits: torch.Tensor) -> torch.Tensor:
    """The label each row's logits choose: positive when the one logit is > 0, else the largest logit."""
    return (logits > 0).long() if logits.ndim == 1 else logits.argmax(dim=1)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """The positive class's probability (N,), or every class's (N, K)."""
    return torch.sigmoid(logits) if logits.ndim == 1 else torch.softmax(logits, dim=1)


def labels_from_scores(scores: np.ndarray) -> np.ndarray:
    """Predicted labels from :func:`predict_scores`' output: score > 0.5 (binary) or the most probable class."""
    return (scores > 0.5).astype(np.int8) if scores.ndim == 1 else scores.argmax(axis=1).astype(np.int16)


@torch.no_grad()
def predict_scores(model: nn.Module, images: np.ndarray, batch_size: int, device: torch.device | str = "cpu", *,
                   rows: np.ndarray | None = None) -> np.ndarray:
    """Positive-class probability (N,) for every image of ``images`` in order, or every class's (N, K) for a
    multi-class head; for ``images[rows]`` when given (read batch by batch, never copied out as a whole)."""
    model.eval()
    if rows is not None:
        images = ImageRows(images, rows)
    scores = []
    for start in range(0, len(images), batch_size):
        batch = to_input(images[start:start + batch_size]).to(device)
        scores.append(probabilities(logits_of(model(batch)).float()).cpu())
    return torch.cat(scores).numpy() if scores else np.zeros(0, np.float32)


class Objective:
    """What a training step minimises: plain cross-entropy here (binary, or softmax for a multi-class head); remedies (FairALM, the DP regulariser,
    cooper's constrained problems) subclass it. ``loss`` gets the batch's logits (:func:`logits_of`), targets
    (0/1 or class indices, as floats) and group indices
    and returns what the primal optimiser descends; ``after_step`` runs after the primal step (dual updates,
    validation checks) and returns per-step values to log; ``after_epoch`` runs at every epoch's end.

    Under several processes every rank holds its own copy and calls ``loss`` on the whole global batch (the other
    ranks' logits gathered, :func:`fairquant.distributed.global_rows`), so every copy steps identically;
    ``train_state`` / ``load_train_state`` carry what training changed (multipliers, checks, the kept weights) from
    a spawned rank back to the stage's copy, in plain types (``torch.load(weights_only=True)``)."""

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        return mean_loss(logits, targets)

    def after_step(self, step: int, total_steps: int) -> dict[str, float]:
        return {}

    def after_epoch(self, epoch: int) -> None:
        return None

    def finish(self, model: nn.Module) -> nn.Module:
        """The model to keep once training ends (a remedy may restore its best validated checkpoint)."""
        return model

    def train_state(self) -> dict:
        """What training changed in this objective (tensors, numbers, lists and dicts of them)."""
        return {}

    def load_train_state(self, state: dict) -> None:
        """Take over ``state`` (:meth:`train_state` of a copy that trained in another process)."""
        return None


def set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    """Training mode; with ``freeze_bn`` BatchNorm keeps its running statistics (compressed-model fine-tuning)."""
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


@dataclass(frozen=True)
class EpochLog:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_accuracy: float
    val_group_accuracy: dict[str, float]


def train_classifier(model: nn.Module, images: np.ndarray, labels: np.ndarray, val_images: np.ndarray,
                     val_labels: np.ndarray, val_groups: np.ndarray, params: FinetuneParams | TrainingParams, device: torch.device,
                     on_epoch: Callable[[EpochLog], None] | None = None,
                     on_batch: Callable[[int], None] | None = None, freeze_bn: bool = False, *,
                     rows: np.ndarray | None = None, val_rows: np.ndarray | None = None,
                     seed: int | None = None, groups: np.ndarray | None = None, objective: Objective | None = None,
                     on_step: Callable[[dict[str, float]], None] | None = None, parallel: bool = False
                     ) -> nn.Module:
    """SGD with Nesterov momentum and a one-cycle schedule on cross-entropy (binary or softmax, by the head).

    ``params`` is a FinetuneParams or a TrainingParams (compression fine-tuning). ``freeze_bn`` keeps
    BatchNorm statistics fixed, as fine-tuning a compressed model (QAT, pruning, shared weights) needs.
    ``seed`` seeds the data order and augmentation (``params.seed`` when None).
    ``rows`` (``val_rows``) are the rows of ``images`` (``val_images``) to train (validate) on, with ``labels``
    (``val_labels``, ``val_groups``) in the same order; None means every image. Each batch is read from the
    store by its rows, so a memory-mapped store is never copied whole.
    ``objective`` replaces plain cross-entropy (remedies); ``groups`` are the training rows' group indices, in
    the order of ``labels``, which it receives per batch; ``on_step`` gets what its ``after_step`` returns.

    ``parallel``: this process is one rank of a torch.distributed group (:mod:`fairquant.distributed`): every
    rank draws the same order and augmentation, trains on its slice of each global batch (``batch_size`` rows)
    under DistributedDataParallel, BatchNorm over the global batch; rank 0 alone validates and calls
    ``on_epoch`` and ``on_step``. A remedy's ``objective`` gets the whole global batch's logits on every rank
    (:func:`fairquant.distributed.global_rows`): its group statistics, multipliers and validation checks are the
    one-process ones on every rank, and its loss, times the world size, backpropagates into this rank's rows."""
    rows = np.arange(len(images)) if rows is None else np.asarray(rows, dtype=np.int64)
    if len(labels) != len(rows):
        raise ValueError(f"{len(labels)} labels for {len(rows)} training images; pass one label per row")
    seed = getattr(params, "seed", None) if seed is None else seed
    if seed is None:
        raise ValueError("train_classifier needs a seed: pass seed= (fp32 training takes it from params.yaml's seeds)")
    generator = torch.Generator().manual_seed(seed)
    # channels-last: oneDNN's convolutions train ~20-30% faster in it on CPU (measured, ResNet-18 at 32 px)
    model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=params.lr, momentum=0.9, nesterov=True,
                                weight_decay=params.weight_decay)
    steps_per_epoch = (len(rows) + params.batch_size - 1) // params.batch_size
    # epochs may be fractional for compression fine-tuning (0.5 = half an epoch of steps)
    total_steps = max(1, math.ceil(params.epochs * steps_per_epoch))
    if 0.25 * total_steps > 1:  # OneCycleLR divides by its warm-up length, 0.25 * total_steps - 1
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=params.lr, total_steps=total_steps,
                                                       pct_start=0.25)
    else:  # too few steps for a warm-up phase (OneCycleLR divides by its length): a constant rate
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    targets = torch.tensor(np.asarray(labels, dtype=np.float32))
    group_index = torch.zeros(len(rows), dtype=torch.long) if groups is None else torch.as_tensor(
        np.asarray(groups, dtype=np.int64))
    if len(group_index) != len(rows):
        raise ValueError(f"{len(group_index)} group indices for {len(rows)} training images; pass one per row")
    plain = objective is None or type(objective) is Objective  # cross-entropy: summed per rank, no gathering
    objective = objective or Objective()
    ranks, net, changed = None, model, []
    if parallel:
        ranks = distributed.context()
        if ranks is None:
            raise ValueError("parallel=True needs an initialised torch.distributed group of more than one process")
        changed = distributed.global_batch_norm(model)
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    step = 0
    for epoch in range(math.ceil(params.epochs)):
        set_train_mode(net, freeze_bn)
        order = torch.randperm(len(rows), generator=generator).numpy()
        total_loss, correct, seen = 0.0, 0, 0
        for start in range(0, len(order), params.batch_size):
            idx = np.sort(order[start:start + params.batch_size])  # ascending rows: sequential reads of the store
            part = slice(None) if ranks is None else distributed.rank_slice(len(idx), *ranks)
            if ranks is not None and len(idx) < ranks[1]:  # a rank would get no row: every rank skips the tail
                if params.augment:  # its randomness still drawn, so later epochs match one process
                    augment(to_input(read_rows(images, rows[idx])), generator)
                continue
            mine = idx[part]
            batch = to_input(read_rows(images, rows[mine]))
            if params.augment:
                batch = augment(batch, generator, drawn=len(idx), part=part)
            y = targets[mine].to(device)
            logits = logits_of(net(batch.to(device).contiguous(memory_format=torch.channels_last)))
            if ranks is None:
                loss = objective.loss(logits, y, group_index[mine].to(device))
            elif plain:  # DDP averages the ranks' gradients: world * (this slice's sum / global rows) averages to the mean
                summed = per_sample_loss(logits, y).sum()
                loss = summed * (ranks[1] / len(idx))
            else:  # the objective of the whole batch on every rank; world * it: DDP's average is its gradient
                whole = objective.loss(distributed.global_rows(logits, len(idx), ranks), targets[idx].to(device),
                                       group_index[idx].to(device))
                summed = whole.detach() * len(idx) if ranks[0] == 0 else torch.zeros(())  # the batch's once
                loss = whole * ranks[1]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            logs = objective.after_step(step, total_steps)
            set_train_mode(net, freeze_bn)  # after_step may have validated in eval mode
            if on_step and (ranks is None or ranks[0] == 0):
                on_step(logs)
            total_loss += loss.item() * len(idx) if ranks is None else summed.item()
            correct += int((predicted_labels(logits) == y.long()).sum())
            seen += len(mine)
            if on_batch:
                on_batch(len(mine))
            if step == total_steps:
                break
        if ranks is not None:
            total_loss, correct, seen = distributed.sum_across([total_loss, correct, seen], device)
            if ranks[0] != 0:  # rank 0 alone validates and logs
                objective.after_epoch(epoch)
                continue
        # validated in training-size batches: a fixed 512 would add ~1 GB of activations at 64 px
        val_pred = labels_from_scores(predict_scores(model, val_images, params.batch_size, device, rows=val_rows))
        hits = val_pred == np.asarray(val_labels)
        log = EpochLog(epoch, total_loss / seen, correct / seen, float(hits.mean()),
                       {str(g): float(hits[val_groups == g].mean()) for g in np.unique(val_groups)})
        if on_epoch:
            on_epoch(log)
        objective.after_epoch(epoch)
    distributed.plain_batch_norm(changed)
    return model.cpu().to(memory_format=torch.contiguous_format).eval()


def group_index(frame, protected: list[str], names: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Group names (sorted, or ``names`` when given) and each row's index into them."""
    from fairquant.fairness.metrics import group_labels

    labels = group_labels(frame, protected)
    names = sorted(set(labels.tolist())) if names is None else list(names)
    lookup = {name: k for k, name in enumerate(names)}
    missing = sorted(set(labels.tolist()) - set(lookup))
    if missing:
        raise ValueError(f"groups {missing} are not among {names}")
    return names, np.array([lookup[label] for label in labels], dtype=np.int64)


def fit_logged(model, table, images, protected: list[str], params, live_dir, label: str, freeze_bn: bool = False,
               resume: bool = False, *, seed: int, section: str, objective: Objective | None = None,
               processes: DistributedParams | None = None):
    """Train ``model`` on the training split with per-epoch curves in dvclive and a rich progress bar.

    ``seed`` seeds data order and augmentation; ``section`` is the params section of ``params`` (for messages).
    ``resume`` continues the curves of an earlier call (iterative pruning's rounds) instead of replacing them.
    With an ``objective`` (a remedy), what its steps return (multipliers, eta, constraint values) is logged per
    step, and the epoch curves are logged at the step where each epoch ends.
    ``processes`` (params.yaml's ``distributed``) spreads the training over several processes; under torchrun
    every rank calls this, and rank 0's curves are the ones kept."""
    from dvclive import Live
    from rich.progress import Progress

    from fairquant.fairness.metrics import group_labels
    from fairquant.models import pick_device

    train, val = table[table["split"] == "train"], table[table["split"] == "val"]
    device = pick_device(params.device, key=f"{section}.device")
    with Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None, resume=resume) as live, \
            Progress(transient=True) as progress:
        task = progress.add_task(f"{label} on {device}", total=int(len(train) * params.epochs))

        def log_epoch(log) -> None:
            live.log_metric("train/loss", log.train_loss)
            live.log_metric("train/accuracy", log.train_accuracy)
            live.log_metric("val/accuracy", log.val_accuracy)
            for group, accuracy in log.val_group_accuracy.items():
                live.log_metric(f"val/group_accuracy/{group}", accuracy)
            if objective is None:
                live.next_step()
            progress.console.print(f"{label} epoch {log.epoch + 1}: loss {log.train_loss:.3f}, "
                                   f"val accuracy {log.val_accuracy:.3f}")

        def log_step(values: dict[str, float]) -> None:
            for name, value in values.items():
                live.log_metric(name, value)
            live.next_step()

        _, train_groups = group_index(train, protected, sorted(set(group_labels(table, protected).tolist())))
        arguments = dict(images=images, labels=train["y_true"].to_numpy(), val_images=images,
                         val_labels=val["y_true"].to_numpy(), val_groups=group_labels(val, protected), params=params,
                         freeze_bn=freeze_bn, rows=train["row"].to_numpy(), val_rows=val["row"].to_numpy(), seed=seed,
                         groups=train_groups)
        run = distributed.plan(processes, device) if processes is not None else None
        if run is not None and params.batch_size < run.world_size:  # every batch would be skipped: nothing trains
            raise FairquantError(f"{section}.batch_size is {params.batch_size} but training runs on {run.world_size} "
                                 f"processes, each needing a row of every batch; raise {section}.batch_size to at "
                                 f"least {run.world_size} or lower distributed.nproc")
        if run is not None and run.spawn:
            progress.console.print(f"{label}: {run.world_size} processes ({run.backend})")
            store = distributed.portable(images)  # the memory map's file, never the images through a pipe
            payload = dict(arguments, images=store, val_images=store, model=distributed.sendable(model), device=device,
                           objective=objective)
            result = distributed.launch(_parallel_worker, payload, run, threads=params.threads)
            model.load_state_dict(result["state"])
            if objective is not None:
                objective.load_train_state(result["objective"])
            for kind, values in result["events"]:  # in the order rank 0 saw them
                log_step(values) if kind == "step" else log_epoch(EpochLog(**values))
            progress.advance(task, int(len(train) * params.epochs))
            return model.cpu().eval()
        if run is not None:  # a torchrun rank
            distributed.join(run.backend)
            if device.type == "cuda":
                device = torch.device("cuda", torch.cuda.current_device())
        return train_classifier(
            model, device=device, on_epoch=log_epoch, on_batch=lambda n: progress.advance(task, n),
            objective=objective, on_step=log_step if objective is not None else None, parallel=run is not None,
            **arguments)


def _parallel_worker(payload: dict) -> dict:
    """One spawned rank of :func:`fit_logged`: train its slices; rank 0 returns the weights, the objective's state
    and the logs (epochs and steps, in order)."""
    rank = distributed.context()[0]
    device = payload.pop("device")
    device = torch.device("cuda", rank) if device.type == "cuda" else device
    seed_everything(payload["seed"])
    events: list[tuple[str, dict]] = []
    # spawn hands tensors over in shared memory: every rank would update the same weights (and multipliers); each
    # trains its own copy, the objective's model still the model trained (one deepcopy keeps that link)
    model, objective = copy.deepcopy((payload.pop("model"), payload.pop("objective")))
    on_step = (lambda logs: events.append(("step", {k: float(v) for k, v in logs.items()}))
               ) if objective is not None else None  # numpy scalars as floats: torch.load(weights_only) takes those
    model = train_classifier(model, device=device, parallel=True, objective=objective, on_step=on_step,
                             on_epoch=lambda log: events.append(("epoch", asdict(log))),
                             **dict(payload, images=distributed.opened(payload["images"]),
                                    val_images=distributed.opened(payload["val_images"])))
    return {"state": model.state_dict(), "events": events,
            "objective": objective.train_state() if objective is not None else {}}


def compression_finetuner(data, protected: list[str], params, live_dir, label: str, freeze_bn: bool, *,
                          seed: int, section: str, objective: Callable[[nn.Module], Objective] | None = None,
                          processes: DistributedParams | None = None):
    """``finetune(model, round_index=0) -> model`` on the training split, logged to ``live_dir``; None when
    ``params.epochs`` is 0, and then the (declared) log folder is written saying no fine-tuning ran.
    ``objective(model)`` makes each round's objective (a constrained remedy) for the model being trained;
    ``processes``: params.yaml's ``distributed`` (see :func:`fit_logged`)."""
    from fairquant.data.prepare import load_prepared
    from fairquant.io import atomic_dir, write_json

    if not params.epochs:
        with atomic_dir(live_dir) as tmp:
            write_json(tmp / "metrics.json", {"fine_tuned": False})
        return None
    table, images, _ = load_prepared(data)

    def finetune(model, round_index: int = 0):
        round_objective = objective(model) if objective is not None else None
        model = fit_logged(model, table, images, protected, params, live_dir,
                           label if round_index == 0 else f"{label} round {round_index + 1}",
                           freeze_bn=freeze_bn, resume=round_index > 0, seed=seed, section=section,
                           objective=round_objective, processes=processes)
        return round_objective.finish(model) if round_objective is not None else model

    return finetune
