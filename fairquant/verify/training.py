"""Embedding training with a margin head, and the fine-tuning the compressors call on an embedding network.

One loop serves the fp32 model (softmax warm-up, then the margin), compression fine-tuning (QAT, k-means
centroids, pruning with fixed masks: the fp32 model's head, BatchNorm frozen where the compressor says) and
QuantFace (no labels: the fp32 model's embeddings are the targets). Curves go to dvclive, per epoch."""

from __future__ import annotations

import copy
import math
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fairquant.io import read_rows
from fairquant.models import to_input
from fairquant.training import augment, set_train_mode

# (model, standardised batch, batch's positions in the training order) -> loss, and the share of rows it got right
StepLoss = Callable[[nn.Module, torch.Tensor, np.ndarray], tuple[torch.Tensor, float]]


def _schedule(optimizer, lr: float, total_steps: int):
    if 0.25 * total_steps > 1:  # OneCycleLR divides by its warm-up length, 0.25 * total_steps - 1
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps, pct_start=0.25)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def run_training(model: nn.Module, extra: list[nn.Parameter], images: np.ndarray, rows: np.ndarray, params,
                 device: torch.device, step_loss: StepLoss, *, seed: int, freeze_bn: bool,
                 on_epoch: Callable[[int, float, float], None] | None = None,
                 on_batch: Callable[[int], None] | None = None) -> nn.Module:
    """SGD (Nesterov momentum, one-cycle rate) over ``images[rows]`` for ``params.epochs`` (may be fractional);
    ``extra`` are further trained parameters (a margin head). ``step_loss`` gets each batch's positions in
    ``rows`` so it can look up labels or targets."""
    generator = torch.Generator().manual_seed(seed)
    model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad] + list(extra), lr=params.lr,
                                momentum=0.9, nesterov=True, weight_decay=params.weight_decay)
    steps_per_epoch = math.ceil(len(rows) / params.batch_size)
    total_steps = max(1, math.ceil(params.epochs * steps_per_epoch))
    schedule = _schedule(optimizer, params.lr, total_steps)
    step = 0
    for epoch in range(math.ceil(params.epochs)):
        set_train_mode(model, freeze_bn)
        order = torch.randperm(len(rows), generator=generator).numpy()
        total_loss, correct, seen = 0.0, 0.0, 0
        for start in range(0, len(order), params.batch_size):
            idx = np.sort(order[start:start + params.batch_size])
            if len(idx) < 2 and seen:  # a lone last row: BatchNorm cannot train on a batch of one
                break
            batch = to_input(read_rows(images, rows[idx]))
            if params.augment:
                batch = augment(batch, generator)
            loss, right = step_loss(model, batch.to(device).contiguous(memory_format=torch.channels_last), idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            total_loss += loss.item() * len(idx)
            correct += right * len(idx)
            seen += len(idx)
            if on_batch:
                on_batch(len(idx))
            if step == total_steps:
                break
        if on_epoch:
            on_epoch(epoch, total_loss / max(seen, 1), correct / max(seen, 1))
        if step == total_steps:
            break
    return model.cpu().to(memory_format=torch.contiguous_format).eval()


def margin_loss(head: nn.Module, labels: np.ndarray, margin_at: Callable[[], float | None]) -> StepLoss:
    """Margin-softmax loss on the identity labels of the batch's rows; ``margin_at()`` gives the margin to use
    now (0 during a softmax warm-up, None = the head's own)."""
    targets = torch.as_tensor(np.array(labels, dtype=np.int64))

    def step(model: nn.Module, batch: torch.Tensor, idx: np.ndarray) -> tuple[torch.Tensor, float]:
        y = targets[idx].to(batch.device)
        embeddings = model(batch)
        loss = head(embeddings, y, margin_at())
        with torch.no_grad():
            right = float((head.cosines(embeddings).argmax(1) == y).float().mean())
        return loss, right

    return step


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
                    device: torch.device, live_dir, *, seed: int, label: str = "verify_train"
                    ) -> tuple[nn.Module, nn.Module]:
    """Train ``model`` (an embedding network) and a new margin head on identity labels: ``params.warmup_epochs``
    of normalised softmax (margin 0: margin losses from scratch often stall), then the margin."""
    from fairquant.verify.heads import MarginHead

    head = MarginHead(model_width(model), int(identities.max()) + 1, params.loss, params.scale, params.margin)
    head.to(device)
    steps_per_epoch = math.ceil(len(rows) / params.batch_size)
    state = {"step": 0}
    warmup_steps = params.warmup_epochs * steps_per_epoch

    def margin_now() -> float | None:
        state["step"] += 1
        return 0.0 if state["step"] <= warmup_steps else None

    live, progress, on_epoch, on_batch = logged(live_dir, label, len(rows) * params.epochs)
    with live, progress:
        model = run_training(model, list(head.parameters()), images, rows, params, device,
                             margin_loss(head, identities, margin_now), seed=seed, freeze_bn=False,
                             on_epoch=on_epoch, on_batch=on_batch)
    return model, head.cpu().eval()


def model_width(model: nn.Module) -> int:
    """The embedding width: the output features of the model's last Linear (or 1x1 Conv) layer."""
    last = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    return last.out_features if isinstance(last, nn.Linear) else last.out_channels


def margin_finetuner(images: np.ndarray, rows: np.ndarray, identities: np.ndarray, head_state: dict, train_params,
                     params, live_dir, label: str, *, seed: int, freeze_bn: bool, device: torch.device):
    """``finetune(model, round_index=0) -> model`` for the compressors (QAT, k-means centroids, pruning): the
    compressor's section ``params`` (epochs, lr, batch size) on the margin loss with the fp32 model's head
    (a copy, trained along); None when ``params.epochs`` is 0 (the log folder then says so)."""
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
            return run_training(model, list(head.parameters()), images, rows, params, device,
                                margin_loss(head, identities, lambda: None), seed=seed + round_index,
                                freeze_bn=freeze_bn, on_epoch=on_epoch, on_batch=on_batch)

    return finetune


@torch.no_grad()
def raw_embeddings(model: nn.Module, images: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model(to_input(images[s:s + batch_size])) for s in range(0, len(images), batch_size)])


def quantface(quantized: nn.Module, teacher: nn.Module, images: np.ndarray, params, device: torch.device, live_dir,
              *, seed: int, label: str) -> nn.Module:
    """QuantFace (Boutros et al. 2022; the quantizer of "Compressed Models Decompress Race Biases"): fine-tune the
    quantized model (straight-through fake quantization) so that its embeddings match the fp32 model's on unlabelled
    ``images`` (mean squared error on the raw embeddings; no identity labels). Activation ranges stay as calibrated;
    BatchNorm (if not folded) keeps its statistics. The augmentation, when on, is applied to the student's and the
    teacher's input alike."""
    teacher = copy.deepcopy(teacher).eval().to(device)
    for p in teacher.parameters():
        p.requires_grad_(False)

    def step(model: nn.Module, batch: torch.Tensor, idx: np.ndarray) -> tuple[torch.Tensor, float]:
        with torch.no_grad():
            target = teacher(batch)
        out = model(batch)
        loss = F.mse_loss(out, target)
        with torch.no_grad():
            agreement = float(F.cosine_similarity(out, target).mean())
        return loss, agreement

    live, progress, on_epoch, on_batch = logged(live_dir, label, len(images) * params.epochs, measure="cosine_to_fp32")
    with live, progress:
        return run_training(quantized, [], images, np.arange(len(images)), params, device, step, seed=seed,
                            freeze_bn=True, on_epoch=on_epoch, on_batch=on_batch)
