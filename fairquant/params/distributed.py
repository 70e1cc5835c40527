"""How many processes each training stage runs on (torch.distributed data parallelism)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fairquant.params.base import _Section

MAX_PROCESSES = 64


class DistributedParams(_Section):
    """Data-parallel training: the fp32 fine-tune, the compressors' fine-tunes (QAT, k-means, pruning), and the
    verification branch's training (the embedding network with its margin head, QuantFace, the compressors').

    ``nproc`` processes share each global batch (the section's ``batch_size``: each process takes its slice),
    so a model trained on N processes is the one-process model up to rounding (README: several processes).
    Started under ``torchrun``, torchrun's process count is used instead of ``nproc``."""

    nproc: int = Field(1, ge=1, le=MAX_PROCESSES,
                       description="training processes (1: no torch.distributed); started by the stage itself")
    backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="auto: gloo for training on the CPU, nccl on CUDA")
