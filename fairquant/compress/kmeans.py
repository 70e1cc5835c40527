"""Weight sharing by k-means, per layer (Deep Compression, Han et al. 2016).

Every Conv2d/Linear weight is replaced by ``codebook[indices]``: a k-entry fp32 codebook per layer and one
index per weight. Clustering is a 1-D Lloyd iteration in torch from a linear initialisation over the
weight range (the initialisation Deep Compression found best; no maintained library clusters conv
weights, and sklearn's KMeans is 4-35x slower here). Optional fine-tuning trains the codebooks with the
assignments fixed: indexing's backward sums the gradients of each cluster's weights, which is exactly
Deep Compression's grouped centroid update.
"""

from __future__ import annotations

import math
import re

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn import functional as F

from fairquant.compress import registry
from fairquant.compress.checkpoints import fp32_size_bytes, load_into, untrained
from fairquant.compress.fakequant import quantizable_layers
from fairquant.compress.registry import StoredConfig, VariantKind


@torch.no_grad()
def lloyd_1d(values: torch.Tensor, clusters: int, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D k-means: (codebook of ``clusters`` sorted centroids, index of each value's centroid as uint8)."""
    flat = values.detach().flatten().float()
    codebook = torch.linspace(float(flat.min()), float(flat.max()), clusters, device=flat.device)
    for _ in range(iterations):
        # In 1-D the nearest centroid is found by bucketing against the midpoints of sorted centroids.
        indices = torch.bucketize(flat, (codebook[1:] + codebook[:-1]) / 2)
        sums = torch.zeros_like(codebook).index_add_(0, indices, flat)
        counts = torch.bincount(indices, minlength=clusters).to(flat.dtype)
        updated = torch.where(counts > 0, sums / counts.clamp(min=1), codebook)  # empty clusters stay put
        codebook, previous = torch.sort(updated).values, codebook
        if torch.equal(codebook, previous):
            break
    indices = torch.bucketize(flat, (codebook[1:] + codebook[:-1]) / 2)
    return codebook, indices.to(torch.uint8).reshape(values.shape)


class SharedWeightLayer(nn.Module):
    """A Conv2d or Linear whose weight is ``codebook[indices]``: the codebook trains, the indices cannot."""

    def __init__(self, layer: nn.Conv2d | nn.Linear, codebook: torch.Tensor, indices: torch.Tensor):
        super().__init__()
        self.layer = layer
        del layer.weight  # the dense weight is no longer stored; it is rebuilt from the codebook
        self.codebook = nn.Parameter(codebook.clone())
        self.register_buffer("indices", indices.clone())

    def weight(self) -> torch.Tensor:
        return self.codebook[self.indices.long()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, self.weight(), self.layer.bias)
        return F.linear(x, self.weight(), self.layer.bias)


def cluster_model(model: nn.Module, clusters: int, iterations: int) -> nn.Module:
    """Replace every Conv2d/Linear weight of ``model`` (in place) by its k-means codebook and indices."""
    for name, layer in quantizable_layers(model).items():
        codebook, indices = lloyd_1d(layer.weight, clusters, iterations)
        owner, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(owner) if owner else model, attribute, SharedWeightLayer(layer, codebook, indices))
    return model


def shared_layers(model: nn.Module) -> list[SharedWeightLayer]:
    return [m for m in model.modules() if isinstance(m, SharedWeightLayer)]


def train_codebooks_only(model: nn.Module) -> nn.Module:
    """Freeze every parameter but the codebooks (biases, BatchNorm affine, unclustered layers), so that centroid
    fine-tuning is Deep Compression's: the trainer's optimiser skips parameters that get no gradient."""
    codebooks = {id(layer.codebook) for layer in shared_layers(model)}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in codebooks)
    return model


def empty_clustered(model: nn.Module, clusters: int) -> nn.Module:
    """The module structure of a clustered model (zero codebooks and indices), to load a stored state into."""
    for name, layer in quantizable_layers(model).items():
        owner, _, attribute = name.rpartition(".")
        shape = layer.weight.shape
        setattr(model.get_submodule(owner) if owner else model, attribute,
                SharedWeightLayer(layer, torch.zeros(clusters), torch.zeros(shape, dtype=torch.uint8)))
    return model


def clustered_size_bytes(model: nn.Module, clusters: int) -> int:
    """Indices bit-packed at ceil(log2 k) bits, fp32 codebooks, every other floating tensor at 32 bits."""
    index_bits = max(1, math.ceil(math.log2(clusters)))
    total = 0
    for layer in shared_layers(model):
        total += math.ceil(layer.indices.numel() * index_bits / 8) + layer.codebook.numel() * 4
    shared = {id(t) for layer in shared_layers(model) for t in (layer.codebook, layer.indices)}
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) not in shared and tensor.is_floating_point():
            total += tensor.numel() * tensor.element_size()
    return total


class KmeansConfig(StoredConfig):
    """A weight-shared variant's config: its codebook size builds every layer, so it is typed and its name checked."""

    clusters: int = Field(ge=2, le=256)  # indices are stored as uint8

    @model_validator(mode="after")
    def _name_says_the_clusters(self) -> "KmeansConfig":
        if f"k{self.clusters}" not in re.split(r"[-+]", self.name):
            raise ValueError(f"its name {self.name!r} does not say its {self.clusters} clusters (a 'k{self.clusters}' "
                             "part); the name or the clusters were edited")
        return self


KMEANS = registry.register(VariantKind(
    "kmeans", rebuild=lambda config, state: load_into(empty_clustered(untrained(config), config["clusters"]), state),
    size_bytes=lambda config, model: clustered_size_bytes(model, config["clusters"]), kernels="dense-decoded",
    config=KmeansConfig))


def kmeans_variant(model: nn.Module, params, finetune) -> tuple[nn.Module, dict]:
    """Deep Compression weight sharing (the quantize_kmeans section): per-layer codebooks by Lloyd's algorithm,
    then, with ``finetune``, the centroids trained with the assignments fixed."""
    fp32_bytes = fp32_size_bytes(model)
    clustered = cluster_model(model, params.clusters, params.iterations)
    if finetune:
        clustered = finetune(train_codebooks_only(clustered))
    clustered.eval()
    return clustered, {"kind": KMEANS.name, "kernels": KMEANS.kernels, "clusters": params.clusters,
                       "size_bytes": clustered_size_bytes(clustered, params.clusters), "fp32_size_bytes": fp32_bytes}
