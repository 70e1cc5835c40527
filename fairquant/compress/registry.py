"""Variant kinds: each compressor module registers the kinds it stores, where it defines them.

A stored variant's config names its ``kind``; the kind's handlers rebuild the module from the stored state,
count its deployed size, and say what kernels run it. A new compressor calls :func:`register` in its own module
(``registry.register(VariantKind("mykind", ...))``) instead of adding a branch to every dispatch site; code that
reads any stored variant (:mod:`fairquant.compress.variants`) imports the compressor modules it reads.

The kind strings are stored in checkpoints and metrics files: never rename one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from fairquant.errors import FairquantError


@dataclass(frozen=True)
class VariantKind:
    name: str
    rebuild: Callable[[dict, dict], nn.Module]  # (config, state_dict) -> eval-mode module
    size_bytes: Callable[[dict, nn.Module], int]  # (config, module) -> bytes a deployment stores
    kernels: str  # what runs it: "fp32", "int8" (real kernels), "simulated", "dense-decoded"


_KINDS: dict[str, VariantKind] = {}


def register(kind: VariantKind) -> VariantKind:
    if kind.name in _KINDS:
        raise ValueError(f"variant kind {kind.name!r} is registered twice")
    _KINDS[kind.name] = kind
    return kind


def registered() -> tuple[str, ...]:
    return tuple(_KINDS)


def lookup(name: str) -> VariantKind:
    if name not in _KINDS:
        raise FairquantError(f"unknown variant kind {name!r}; the model folder was written by another fairquant version")
    return _KINDS[name]
