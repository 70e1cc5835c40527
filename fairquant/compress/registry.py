"""Variant kinds: each compressor module registers the kinds it stores, where it defines them.

A stored variant's config names its ``kind``; the kind's handlers rebuild the module from the stored state,
count its deployed size, and say what kernels run it. A new compressor calls :func:`register` in its own module
(``registry.register(VariantKind("mykind", ...))``) instead of adding a branch to every dispatch site; code that
reads any stored variant (:mod:`fairquant.compress.variants`) imports the compressor modules it reads.

The kind strings are stored in checkpoints and metrics files: never rename one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from fairquant.errors import FairquantError
from fairquant.params import QuantSchemeParams


class StoredConfig(BaseModel):
    """What every stored variant's config holds, typed strictly (a "16" is not 16, "yes" is not true): the keys
    that decide how the model is rebuilt. Records of how it was made (training, sizes) pass through unchecked.
    A kind that stores more (a scheme, a codebook size) extends it; its validators may check the name too."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    kind: str
    name: str = Field(min_length=1)
    arch: str
    small_input_stem: bool
    image_size: int | None = Field(None, ge=1)
    embedding_dim: int | None = Field(None, ge=1)
    classes: list | None = None


def scheme_mismatch(name: str, scheme: QuantSchemeParams) -> str | None:
    """Why a stored variant's ``name`` does not say its ``scheme`` (e.g. a w4a4 name on 8-bit weights), or None.
    Names are ptq-w4a4-train, qat-w4af, fairalm+qat-w8a8 or sensitivity+ptq-w4-keep3: one part names the bits."""
    activations = "f" if scheme.activation_bits is None else scheme.activation_bits
    parts = re.split(r"[-+]", name)
    if f"w{scheme.bits}a{activations}" in parts or f"w{scheme.bits}" in parts:
        return None
    return (f"its name {name!r} does not say its scheme (bits {scheme.bits}, activation_bits "
            f"{scheme.activation_bits}: a 'w{scheme.bits}a{activations}' part); the name or the scheme was edited")


class SchemeConfig(StoredConfig):
    """A quantized variant's config (fakequant, ptq-int8): its scheme decides every quantizer, so it is typed and
    its name checked against it."""

    scheme: QuantSchemeParams

    @model_validator(mode="after")
    def _name_says_the_scheme(self) -> "SchemeConfig":
        problem = scheme_mismatch(self.name, self.scheme)
        if problem:
            raise ValueError(problem)
        return self


@dataclass(frozen=True)
class VariantKind:
    name: str
    rebuild: Callable[[dict, dict], nn.Module]  # (config, state_dict) -> eval-mode module
    size_bytes: Callable[[dict, nn.Module], int]  # (config, module) -> bytes a deployment stores
    kernels: str  # what runs it: "fp32", "int8" (real kernels), "simulated", "dense-decoded"
    config: type[StoredConfig] = StoredConfig  # its stored config's schema, checked before any rebuild


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
