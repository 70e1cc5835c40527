"""Embedding training with a margin head, and the fine-tuning the compressors call on an embedding network.

One loop serves the fp32 model (softmax warm-up, then the margin), compression fine-tuning (QAT, k-means
centroids, pruning with fixed masks: the fp32 model's head, BatchNorm frozen where the compressor says) and
QuantFace (no labels: the fp32 model's embeddings are the targets). Curves go to dvclive, per epoch.

With params.yaml's ``distributed`` (or under torchrun) each of these trains on several processes, as the
classification fine-tunes do (:mod:`fairquant.distributed`): one global order and augmentation, each rank its
slice of every global batch, the loss scaled so that DDP's gradient average is the one-process gradient (the
margin-softmax and QuantFace's mean squared error are per-row means), BatchNorm over the global batch, the margin
head trained under DDP with the network; rank 0 alone logs and writes."""

from __future__ import annotations

import copy
import math
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fairquant import distributed
from fairquant.errors import FairquantError
from fairquant.io import read_rows
from fairquant.models import to_input
from fairquant.params import DistributedParams
from fairquant.training import augment, seed_everything, set_train_mode


class StepLoss:
    """What a training step minimises: ``loss(model, standardised batch, the batch's positions in the training
    rows) -> (loss, share of rows right)``. The loss is a mean over the batch's rows (so that the ranks' slices,
    each weighted by its share of the global batch, add up to it); ``trained()`` are further parameters trained
    along with the model (a margin head). Picklable: spawned ranks receive it whole."""

    def __call__(self, model: nn.Module, batch: torch.Tensor, idx: np.ndarray) -> tuple[torch.Tensor, float]:
        raise NotImplementedError

    def trained(self) -> list[nn.Parameter]:
        return []

    def to(self, device: torch.device) -> "StepLoss":
        return self


class MarginLoss(StepLoss):
    """Margin-softmax loss of ``head`` on the identity ``labels`` of the batch's rows; the first ``warmup_steps``
    steps with margin 0 (a normalised-softmax warm-up), then the head's margin. The head trains along."""

    def __init__(self, head: nn.Module, labels: np.ndarray, warmup_steps: float = 0):
        self.head, self.warmup_steps, self.steps = head, warmup_steps, 0
        self.targets = torch.as_tensor(np.array(labels, dtype=np.int64))

    def __call__(self, model: nn.Module, batch: torch.Tensor, idx: np.ndarray) -> tuple[torch.Tensor, float]:
        y = self.targets[idx].to(batch.device)
        embeddings = model(batch)
        self.steps += 1
        loss = self.head(embeddings, y, 0.0 if self.steps <= self.warmup_steps else None)
        with torch.no_grad():
            right = float((self.head.cosines(embeddings).argmax(1) == y).float().mean())
        return loss, right

    def trained(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def to(self, device: torch.device) -> "MarginLoss":
        self.head.to(device)
        return self


class MatchTeacher(StepLoss):
    """QuantFace's loss: mean squared error between the model's raw embeddings and ``teacher``'s (frozen) on the
    same batch; the share right is the mean cosine agreement."""

    def __init__(self, teacher: nn.Module):
        self.teacher = teacher

    def __call__(self, model: nn.Module, batch: torch.Tensor, idx: np.ndarray) -> tuple[torch.Tensor, float]:
        with torch.no_grad():
            target = self.teacher(batch)
        out = model(batch)
        loss = F.mse_loss(out, target)
        with torch.no_grad():
            agreement = float(F.cosine_similarity(out, target).mean())
        return loss, agreement

    def to(self, device: torch.device) -> "MatchTeacher":
        self.teacher.to(device)
        return self


class _Joint(nn.Module):
    """The model and the loss's trained parameters as one module, so that DistributedDataParallel averages the
    head's gradients with the network's; its forward is one step's loss."""

    def __init__(self, model: nn.Module, step_loss: StepLoss):
        super().__init__()
        self.model, self.extra, self.step_loss = model, nn.ParameterList(step_loss.trained()), step_loss

    def forward(self, batch: torch.Tensor, idx: np.ndarray) -> tuple[torch.Tensor, float]:
        return self.step_loss(self.model, batch, idx)


def _schedule(optimizer, lr: float, total_steps: int):
    if 0.25 * total_steps > 1:  # OneCycleLR divides by its warm-up length, 0.25 * total_steps - 1
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps, pct_start=0.25)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def run_training(model: nn.Module, extra: list[nn.Parameter], images: np.ndarray, rows: np.ndarray, params,
                 device: torch.device, step_loss: StepLoss, *, seed: int, freeze_bn: bool,
                 on_epoch: Callable[[int, float, float], None] | None = None,
                 on_batch: Callable[[int], None] | None = None, parallel: bool = False) -> nn.Module:
    """SGD (Nesterov momentum, one-cycle rate) over ``images[rows]`` for ``params.epochs`` (may be fractional);
    ``extra`` are further trained parameters (a margin head). ``step_loss`` gets each batch's positions in
    ``rows`` so it can look up labels or targets.

    ``parallel``: this process is one rank of a torch.distributed group: every rank draws the same order and
    augmentation, trains on its slice of each global batch (``batch_size`` rows) under DistributedDataParallel
    (the model and ``extra`` together, ``extra`` being ``step_loss.trained()``), BatchNorm over the global batch;
    rank 0 alone calls ``on_epoch``. A last batch with fewer rows than processes is skipped."""
    generator = torch.Generator().manual_seed(seed)
    model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad] + list(extra), lr=params.lr,
                                momentum=0.9, nesterov=True, weight_decay=params.weight_decay)
    steps_per_epoch = math.ceil(len(rows) / params.batch_size)
    total_steps = max(1, math.ceil(params.epochs * steps_per_epoch))
    schedule = _schedule(optimizer, params.lr, total_steps)
    ranks, net, changed = None, model, []
    if parallel:
        ranks = distributed.context()
        if ranks is None:
            raise ValueError("parallel=True needs an initialised torch.distributed group of more than one process")
        if {id(p) for p in extra} != {id(p) for p in step_loss.trained()}:
            raise ValueError("parallel training averages the gradients of the model and step_loss.trained(): pass "
                             "those as extra")
        changed = distributed.global_batch_norm(model)
        net = nn.parallel.DistributedDataParallel(_Joint(model, step_loss),
                                                  device_ids=[device.index] if device.type == "cuda" else None)
    step = 0
    for epoch in range(math.ceil(params.epochs)):
        set_train_mode(net, freeze_bn)
        order = torch.randperm(len(rows), generator=generator).numpy()
        total_loss, correct, seen = 0.0, 0.0, 0
        for start in range(0, len(order), params.batch_size):
            idx = np.sort(order[start:start + params.batch_size])
            if len(idx) < 2 and seen:  # a lone last row: BatchNorm cannot train on a batch of one
                break
            if ranks is not None and len(idx) < ranks[1]:  # a rank would get no row: every rank skips the tail
                if params.augment:  # its randomness still drawn, so later epochs match one process
                    augment(to_input(read_rows(images, rows[idx])), generator)
                continue
            part = slice(None) if ranks is None else distributed.rank_slice(len(idx), *ranks)
            mine = idx[part]
            batch = to_input(read_rows(images, rows[mine]))
            if params.augment:
                batch = augment(batch, generator, drawn=len(idx), part=part)
            batch = batch.to(device).contiguous(memory_format=torch.channels_last)
            if ranks is None:
                loss, right = step_loss(model, batch, idx)
                descended = loss
            else:  # DDP averages the ranks' gradients: world x (slice's share of the global batch) x slice mean
                loss, right = net(batch, mine)
                descended = loss * (ranks[1] * len(mine) / len(idx))
            optimizer.zero_grad(set_to_none=True)
            descended.backward()
            optimizer.step()
            schedule.step()
            step += 1
            total_loss += loss.item() * len(mine)
            correct += right * len(mine)
            seen += len(mine)
            if on_batch:
                on_batch(len(mine))
            if step == total_steps:
                break
        if ranks is not None:
            total_loss, correct, seen = distributed.sum_across([total_loss, correct, seen], device)
        if on_epoch and (ranks is None or ranks[0] == 0):
            on_epoch(epoch, total_loss / max(seen, 1), correct / max(seen, 1))
        if step == total_steps:
            break
    distributed.plain_batch_norm(changed)
    return model.cpu().to(memory_format=torch.contiguous_format).eval()


def fit(model: nn.Module, step_loss: StepLoss, images: np.ndarray, rows: np.ndarray, params, device: torch.device,
        *, seed: int, freeze_bn: bool, section: str, on_epoch: Callable[[int, float, float], None] | None = None,
        on_batch: Callable[[int], None] | None = None, processes: DistributedParams | None = None) -> nn.Module:
    """:func:`run_training` of ``model`` and ``step_loss.trained()``: on this process, or spread over
    ``processes`` (params.yaml's ``distributed``; None: one process) as :func:`fairquant.training.fit_logged`
    spreads the classifier: the stage starts the ranks itself, or (under torchrun) this process is one of them.
    The trained parameters of ``step_loss`` end as one process leaves them. ``section`` names ``params`` in
    messages."""
    run = distributed.plan(processes, device) if processes is not None else None
    if run is None:
        return run_training(model, step_loss.trained(), images, rows, params, device, step_loss, seed=seed,
                            freeze_bn=freeze_bn, on_epoch=on_epoch, on_batch=on_batch)
    if params.batch_size < run.world_size:  # every batch would be skipped: nothing trains
        raise FairquantError(f"{section}.batch_size is {params.batch_size} but training runs on {run.world_size} "
                             f"processes, each needing a row of every batch; raise {section}.batch_size to at least "
                             f"{run.world_size} or lower distributed.nproc")
    if run.spawn:
        print(f"{section}: {run.world_size} processes ({run.backend})")
        step_loss.to(torch.device("cpu"))  # sent to the ranks as CPU tensors, each moves its copy to its device
        payload = dict(model=distributed.sendable(model), step_loss=step_loss, images=distributed.portable(images),
                       rows=rows, params=params, device=device, seed=seed, freeze_bn=freeze_bn)
        result = distributed.launch(_parallel_worker, payload, run, threads=params.threads)
        model.load_state_dict(result["state"])
        with torch.no_grad():
            for parameter, value in zip(step_loss.trained(), result["trained"]):
                parameter.copy_(value)
        for epoch, loss, right in result["epochs"]:
            if on_epoch:
                on_epoch(epoch, loss, right)
        if on_batch:
            on_batch(int(len(rows) * params.epochs))
        return model.cpu().to(memory_format=torch.contiguous_format).eval()
    distributed.join(run.backend)  # a torchrun rank
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    step_loss.to(device)
    return run_training(model, step_loss.trained(), images, rows, params, device, step_loss, seed=seed,
                        freeze_bn=freeze_bn, on_epoch=on_epoch, on_batch=on_batch, parallel=True)


def _parallel_worker(payload: dict) -> dict:
    """One spawned rank of :func:`fit`: train its slices; rank 0 returns the weights, the loss's trained
    parameters and the epoch logs."""
    rank = distributed.context()[0]
    device = payload.pop("device")
    device = torch.device("cuda", rank) if device.type == "cuda" else device
    seed_everything(payload["seed"])
    # spawn hands tensors over in shared memory: every rank would update the same weights; each trains its own copy
    model, step_loss = copy.deepcopy(payload.pop("model")), copy.deepcopy(payload.pop("step_loss")).to(device)
    epochs: list[tuple[int, float, float]] = []
    model = run_training(model, step_loss.trained(), distributed.opened(payload.pop("images")), payload.pop("rows"),
                         payload.pop("params"), device, step_loss, seed=payload["seed"],
                         freeze_bn=payload["freeze_bn"], on_epoch=lambda *log: epochs.append(log), parallel=True)
    return {"state": model.state_dict(), "trained": [p.detach().cpu() for p in step_loss.trained()],
            "epochs": epochs}


def logged(live_dir, label: str, total: float, resume: bool = False, measure: str = "accuracy"):
    """(Live, Progress, on_epoch, on_batch) for a training run: dvclive curves per epoch (the loss and
    ``measure``: the identity accuracy, or QuantFace's cosine agreement with fp32), a rich progress bar."""
    from dvclive import Live
    from rich.progress import Progress

    live = Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None, resume=resume)
    progress = Progress(transient=True)
    task = progress.add_task(label, total=int(total))

    def on_epoch(epoch: int, loss: float, accuracy: float) -> None:
        live.log_metric("train/loss", loss)
        live.log_metric(f"train/{measure}", accuracy)
        live.next_step()
        progress.console.print(f"{label} epoch {epoch + 1}: loss {loss:.4f}, {measure} {accuracy:.3f}")

    return live, progress, on_epoch, lambda n: progress.advance(task, n)


def train_embedding(model: nn.Module, images: np.ndarray, rows: np.ndarray, identities: np.ndarray, params,
                    device: torch.device, live_dir, *, seed: int, label: str = "verify_train",
                    processes: DistributedParams | None = None) -> tuple[nn.Module, nn.Module]:
    """Train ``model`` (an embedding network) and a new margin head on identity labels: ``params.warmup_epochs``
    of normalised softmax (margin 0: margin losses from scratch often stall), then the margin. ``processes``:
    params.yaml's ``distributed`` (see :func:`fit`)."""
    from fairquant.verify.heads import MarginHead

    head = MarginHead(model_width(model), int(identities.max()) + 1, params.loss, params.scale, params.margin)
    head.to(device)
    steps_per_epoch = math.ceil(len(rows) / params.batch_size)
    warmup_steps = params.warmup_epochs * steps_per_epoch
    live, progress, on_epoch, on_batch = logged(live_dir, label, len(rows) * params.epochs)
    with live, progress:
        model = fit(model, MarginLoss(head, identities, warmup_steps), images, rows, params, device, seed=seed,
                    freeze_bn=False, section="verify.train", on_epoch=on_epoch, on_batch=on_batch,
                    processes=processes)
    return model, head.cpu().eval()


def model_width(model: nn.Module) -> int:
    """The embedding width: the output features of the model's last Linear (or 1x1 Conv) layer."""
    last = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    return last.out_features if isinstance(last, nn.Linear) else last.out_channels


def margin_finetuner(images: np.ndarray, rows: np.ndarray, identities: np.ndarray, head_state: dict, train_params,
                     params, live_dir, label: str, *, seed: int, freeze_bn: bool, device: torch.device,
                     section: str = "the compressor's section", processes: DistributedParams | None = None):
    """``finetune(model, round_index=0) -> model`` for the compressors (QAT, k-means centroids, pruning): the
    compressor's section ``params`` (epochs, lr, batch size) on the margin loss with the fp32 model's head
    (a copy, trained along); None when ``params.epochs`` is 0 (the log folder then says so). ``section`` names
    ``params`` in messages; ``processes``: params.yaml's ``distributed`` (see :func:`fit`)."""
    from fairquant.io import atomic_dir, write_json
    from fairquant.verify.heads import MarginHead

    if not params.epochs:
        with atomic_dir(live_dir) as tmp:
            write_json(tmp / "metrics.json", {"fine_tuned": False})
        return None

    def finetune(model: nn.Module, round_index: int = 0) -> nn.Module:
        head = MarginHead(head_state["weight"].shape[1], head_state["weight"].shape[0], train_params.loss,
                          train_params.scale, train_params.margin)
        head.load_state_dict(head_state)
        head.to(device)
        name = label if round_index == 0 else f"{label} round {round_index + 1}"
        live, progress, on_epoch, on_batch = logged(live_dir, name, len(rows) * params.epochs, resume=round_index > 0)
        with live, progress:
            return fit(model, MarginLoss(head, identities), images, rows, params, device, seed=seed + round_index,
                       freeze_bn=freeze_bn, section=section, on_epoch=on_epoch, on_batch=on_batch,
                       processes=processes)

    return finetune


@torch.no_grad()
def raw_embeddings(model: nn.Module, images: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model(to_input(images[s:s + batch_size])) for s in range(0, len(images), batch_size)])


def quantface(quantized: nn.Module, teacher: nn.Module, images: np.ndarray, params, device: torch.device, live_dir,
              *, seed: int, label: str, processes: DistributedParams | None = None) -> nn.Module:
    """QuantFace (Boutros et al. 2022; the quantizer of "Compressed Models Decompress Race Biases"): fine-tune the
    quantized model (straight-through fake quantization) so that its embeddings match the fp32 model's on unlabelled
    ``images`` (mean squared error on the raw embeddings; no identity labels). Activation ranges stay as calibrated;
    BatchNorm (if not folded) keeps its statistics. The augmentation, when on, is applied to the student's and the
    teacher's input alike. ``processes``: params.yaml's ``distributed`` (see :func:`fit`)."""
    teacher = copy.deepcopy(teacher).eval().to(device)
    for p in teacher.parameters():
        p.requires_grad_(False)
    live, progress, on_epoch, on_batch = logged(live_dir, label, len(images) * params.epochs, measure="cosine_to_fp32")
    with live, progress:
        return fit(quantized, MatchTeacher(teacher), images, np.arange(len(images)), params, device, seed=seed,
                   freeze_bn=True, section="verify.quantface", on_epoch=on_epoch, on_batch=on_batch,
                   processes=processes)
