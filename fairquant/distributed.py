"""Training on several processes with torch.distributed: who runs, how they meet, what they share.

Two ways in, one training loop per task (:func:`fairquant.training.train_classifier`, and
:func:`fairquant.verify.training.run_training` for the embedding network with its margin head and QuantFace):

- ``distributed.nproc`` > 1 in params.yaml: the stage (one process, ``python -m stages.X``) starts the workers
  itself (:func:`launch`: ``torch.multiprocessing`` spawn, a TCP store on 127.0.0.1 at a free port), waits for
  them and takes rank 0's result; it alone logs and writes, as with one process.
- Under ``torchrun --nproc-per-node N python -m stages.X ...``: every rank runs the whole stage; :func:`join`
  meets the others (``env://``), and only rank 0 moves outputs into place (``fairquant.io.writes_outputs``).

Each global batch (the section's ``batch_size``) is the one-process batch; rank r trains on its slice
(:func:`rank_slice`), and the loss is scaled so that DDP's gradient average is the one-process gradient.
A remedy's objective (group-wise losses, rates, constraints, multipliers) sees the whole global batch on every
rank: :func:`global_rows` gathers every rank's logits (the others' detached, this rank's live), so every rank
computes the one-process objective and updates its multipliers identically, and the gradient flowing into this
rank's rows is the one-process objective's (chain rule through the batch's group statistics).
BatchNorm: torch's SyncBatchNorm refuses CPU tensors (torch 2.15), so :class:`GlobalBatchNorm` all-reduces the
batch statistics itself (sum, sum of squares, count; autograd flows through the all-reduce), on CPU and CUDA.
"""

from __future__ import annotations

import mmap
import os
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from fairquant.errors import FairquantError


@dataclass(frozen=True)
class Plan:
    """How a training run is spread: ``world_size`` processes meeting over ``backend``; ``spawn``: this process
    starts them (params), else it is already one of them (torchrun)."""

    world_size: int
    backend: str
    spawn: bool


def under_launcher() -> bool:
    """This process is one rank of several that a launcher (torchrun) started."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def plan(settings, device: torch.device) -> Plan | None:
    """The plan for ``settings`` (:class:`fairquant.params.DistributedParams`) training on ``device``; None: one
    process. Raises :class:`FairquantError` for what this machine cannot run (checked before any work)."""
    spawn = not under_launcher()
    world = settings.nproc if spawn else int(os.environ["WORLD_SIZE"])
    if world == 1:
        return None
    backend = settings.backend if settings.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    if backend == "nccl" and device.type != "cuda":
        raise FairquantError("distributed.backend is nccl but training runs on the CPU (no CUDA device visible or "
                             "the section's device is cpu); set distributed.backend to auto or gloo")
    if not torch.distributed.is_available() or (backend == "nccl" and not torch.distributed.is_nccl_available()):
        raise FairquantError(f"distributed.backend {backend}: this torch build has no {backend} support; set "
                             "distributed.backend to auto (gloo on the CPU) or distributed.nproc to 1")
    if spawn and device.type == "cuda" and world > torch.cuda.device_count():
        raise FairquantError(f"distributed.nproc is {world} but {torch.cuda.device_count()} CUDA device(s) are "
                             f"visible (one process per device); set distributed.nproc to at most "
                             f"{torch.cuda.device_count()}")
    if spawn and device.type == "cpu" and world > usable_cores():
        print(f"warning: distributed.nproc is {world} on {usable_cores()} CPU core(s): the processes share cores "
              "and train slower than fewer would", file=sys.stderr)
    return Plan(world, backend, spawn)


def context() -> tuple[int, int] | None:
    """(rank, world size) when this process trains in a process group of more than one, else None."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        size = torch.distributed.get_world_size()
        return (torch.distributed.get_rank(), size) if size > 1 else None
    return None


def join(backend: str) -> None:
    """Under torchrun: join the process group (once per process), from torchrun's environment."""
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend, init_method="env://")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def rank_slice(count: int, rank: int, world: int) -> slice:
    """Rank ``rank``'s share of a global batch of ``count`` rows: contiguous, sizes differing by at most one."""
    return slice(rank * count // world, (rank + 1) * count // world)


def sum_across(values: list[float], device: torch.device) -> list[float]:
    """Each value summed over every rank (epoch totals: loss, correct rows, rows seen)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def global_rows(local: torch.Tensor, count: int, ranks: tuple[int, int]) -> torch.Tensor:
    """The global batch's rows of ``local`` (this rank's slice of a batch of ``count`` rows, :func:`rank_slice`),
    every rank's slice in rank order: the others' are copies without gradient, this rank's is ``local`` itself.
    A loss of the result backpropagates into this rank's rows only; summed over the ranks (``world`` times DDP's
    average), the gradient is the one-process gradient of that loss on the whole batch."""
    rank, world = ranks
    sizes = [rank_slice(count, r, world).stop - rank_slice(count, r, world).start for r in range(world)]
    padded = local.detach().new_zeros((max(sizes), *local.shape[1:]))  # all_gather takes equal shapes
    padded[:len(local)] = local.detach()
    parts = [torch.empty_like(padded) for _ in range(world)]
    torch.distributed.all_gather(parts, padded.contiguous())
    return torch.cat([local if r == rank else parts[r][:sizes[r]] for r in range(world)])


# ---- BatchNorm over the global batch -------------------------------------------------------------------------


_BN_GROUP: list = []  # one process group for the statistics, apart from DDP's gradient buckets


def _bn_group():
    if not _BN_GROUP:
        _BN_GROUP.append(torch.distributed.new_group())
    return _BN_GROUP[0]


class _GlobalStats(torch.autograd.Function):
    """All-reduce (sum) whose backward all-reduces the gradient: every rank's loss depends on the global sums."""

    @staticmethod
    def forward(ctx, tensor):
        tensor = tensor.clone()
        torch.distributed.all_reduce(tensor, group=_bn_group())
        return tensor

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        torch.distributed.all_reduce(grad, group=_bn_group())
        return grad


class GlobalBatchNorm:
    """Mixed into a BatchNorm class: in training, normalises with the statistics of the global batch (every rank's
    rows), as one process would on the whole batch; running statistics updated the same way (unbiased variance).
    Evaluation, or no process group: the plain BatchNorm. Same parameters and buffers, same state dict."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (BatchNorm's own name)
        if not (self.training and self.track_running_stats and context() is not None):
            return super().forward(input)
        dims = [d for d in range(input.ndim) if d != 1]
        wide = input.double()
        count = torch.tensor([input.numel() / max(input.shape[1], 1)], dtype=torch.float64, device=input.device)
        sums = _GlobalStats.apply(torch.cat([wide.sum(dims), (wide * wide).sum(dims), count]))
        channels = input.shape[1]
        total = sums[-1]
        mean = sums[:channels] / total
        var = (sums[channels:2 * channels] / total - mean * mean).clamp_min(0)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum)
            unbiased = var * total / (total - 1).clamp_min(1)
            self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
            self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)
        shape = [1, channels] + [1] * (input.ndim - 2)
        scale = torch.rsqrt(var + self.eps).to(input.dtype).reshape(shape)
        out = (input - mean.to(input.dtype).reshape(shape)) * scale
        if self.affine:
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        return out


_GLOBAL_CLASSES: dict[type, type] = {}


def global_batch_norm(model: nn.Module) -> list[tuple[nn.Module, type]]:
    """Make every BatchNorm of ``model`` normalise over the global batch (in place); returns what
    :func:`plain_batch_norm` needs to undo it."""
    changed = []
    for module in model.modules():
        cls = type(module)
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
            if cls not in _GLOBAL_CLASSES:
                _GLOBAL_CLASSES[cls] = type(f"Global{cls.__name__}", (GlobalBatchNorm, cls), {})
            module.__class__ = _GLOBAL_CLASSES[cls]
            changed.append((module, cls))
    return changed


def plain_batch_norm(changed: list[tuple[nn.Module, type]]) -> None:
    for module, cls in changed:
        module.__class__ = cls


# ---- starting the workers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MappedStore:
    """A read-only memory-mapped image store, passed to workers by its file (never copied through a pipe)."""

    filename: str
    offset: int
    dtype: str
    shape: tuple[int, ...]

    def open(self) -> np.ndarray:
        return np.memmap(self.filename, dtype=np.dtype(self.dtype), mode="r", offset=self.offset, shape=self.shape)


def portable(images: np.ndarray):
    """What to send a worker for ``images``: the store's file for a whole memory-mapped store, else the array."""
    if isinstance(images, np.memmap) and isinstance(images.base, mmap.mmap) and images.filename:
        return MappedStore(images.filename, images.offset, images.dtype.str, tuple(images.shape))
    return images


def sendable(model: nn.Module) -> nn.Module:
    """``model`` with computed tensors held as plain attributes (pruning's ``weight = weight_orig * mask``, which its
    hook recomputes before every forward) detached in place: autograd graphs cannot cross process boundaries."""
    for module in model.modules():
        for name, value in list(vars(module).items()):
            if isinstance(value, torch.Tensor) and value.grad_fn is not None:
                module.__dict__[name] = value.detach()
    return model


def opened(images) -> np.ndarray:
    return images.open() if isinstance(images, MappedStore) else images


RESULT, FAILURE = "result.pt", "failure-{rank}.txt"


def _entry(rank: int, work: Callable[[Any], Any], payload: Any, world: int, backend: str, port: int,
           folder: str, threads: int) -> None:
    """One worker: meet the others, run ``work(payload)``, rank 0 hands its result back through ``folder``.
    A failure is written (its one line, or the traceback of a bug) and the worker exits with status 2."""
    try:
        if threads:
            torch.set_num_threads(threads)
        if backend == "nccl":
            torch.cuda.set_device(rank)
        store = torch.distributed.TCPStore("127.0.0.1", port, world + 1, is_master=False)
        torch.distributed.init_process_group(backend, store=store, rank=rank, world_size=world)
        result = work(payload)
        if rank == 0:
            torch.save(result, Path(folder) / f".{RESULT}")
            os.replace(Path(folder) / f".{RESULT}", Path(folder) / RESULT)
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    except BaseException as exc:  # noqa: BLE001 (every failure must reach the stage as one line)
        text = str(exc) if isinstance(exc, FairquantError) else traceback.format_exc()
        kind = "user" if isinstance(exc, FairquantError) else "bug"
        (Path(folder) / FAILURE.format(rank=rank)).write_text(f"{kind}\n{text}")
        os._exit(2)  # no atexit of a half-initialised process group: the parent ends the other ranks


def launch(work: Callable[[Any], Any], payload: Any, run: Plan, *, threads: int = 0) -> Any:
    """Run ``work(payload)`` on ``run.world_size`` new processes (one process group) and return rank 0's result.

    ``work`` is a module-level function (it is pickled); it reads its rank from torch.distributed. When any rank
    fails the others are stopped and :class:`FairquantError` carries that rank's one-line message (a bug: its
    traceback, as RuntimeError). ``threads``: CPU threads per process (0: the cores shared out evenly)."""
    import torch.multiprocessing as mp

    per_process = threads or max(1, usable_cores() // run.world_size)
    store = torch.distributed.TCPStore("127.0.0.1", 0, run.world_size + 1, is_master=True, wait_for_workers=False)
    with tempfile.TemporaryDirectory(prefix="fairquant-ranks-") as folder:
        try:
            mp.start_processes(_entry, args=(work, payload, run.world_size, run.backend, store.port, folder,
                                             per_process), nprocs=run.world_size, join=True, start_method="spawn")
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as exc:
            raise _failure(Path(folder), exc) from None
        finally:
            del store
        return torch.load(Path(folder) / RESULT, weights_only=True)


def _failure(folder: Path, exc: Exception) -> Exception:
    """The error of the rank that failed first (a rank whose peer died reports a lost connection after it)."""
    reports = {int(path.stem.removeprefix("failure-")): path.read_text().partition("\n")
               for path in folder.glob(FAILURE.format(rank="*"))}
    if not reports:  # killed from outside (a signal, out of memory) before it could say why
        return FairquantError(f"distributed training stopped: {exc}; the other ranks were stopped, nothing was written")
    users = sorted(rank for rank, (kind, _, _) in reports.items() if kind == "user")
    first = getattr(exc, "error_index", None)
    rank = first if first in reports and reports[first][0] == "user" else (users or [first if first in reports
                                                                                      else min(reports)])[0]
    kind, _, text = reports[rank]
    if kind == "user":
        return FairquantError(f"{text} (rank {rank} of the distributed training; the other ranks were stopped)")
    return RuntimeError(f"rank {rank} of the distributed training failed:\n{text}")
