"""torchvision architectures with the head adapted to a binary target and, optionally, small inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from fairquant.errors import FairquantError

# Inputs are uint8 images scaled to [0, 1] then standardised with these constants; fixed, so that a
# checkpoint never depends on statistics of one dataset's training split.
INPUT_MEAN, INPUT_STD = 0.5, 0.25


def to_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, C) -> standardised float (N, C, H, W)."""
    batch = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    return (batch.permute(0, 3, 1, 2).float() / 255.0 - INPUT_MEAN) / INPUT_STD


def _adapt_stem(model: nn.Module, arch: str) -> None:
    """A 3x3 stride-1 first convolution: ImageNet's 7x7 stride-2 stem discards too much of a 32 px input."""
    if arch.startswith("resnet"):
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    elif arch.startswith(("mobilenet", "efficientnet")):
        first = model.features[0][0]
        model.features[0][0] = nn.Conv2d(3, first.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    elif arch.startswith("squeezenet"):
        model.features[0] = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1)


def _replace_head(model: nn.Module, arch: str, outputs: int = 1) -> None:
    if arch.startswith("resnet"):
        model.fc = nn.Linear(model.fc.in_features, outputs)
    elif arch.startswith(("mobilenet", "efficientnet")):
        last = model.classifier[-1]
        model.classifier[-1] = nn.Linear(last.in_features, outputs)
    elif arch.startswith("squeezenet"):
        # torchvision's head is dropout, 1x1 conv, ReLU, pooling: a ReLU after a logit would clamp it to >= 0
        # (every score >= 0.5), so the ReLU goes.
        model.classifier[1] = nn.Conv2d(512, outputs, kernel_size=1)
        model.classifier[2] = nn.Identity()


ARCHITECTURES = ("resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "squeezenet1_1")


def build_model(arch: str, *, small_input_stem: bool, embedding_dim: int | None = None) -> nn.Module:
    """An untrained torchvision model emitting one logit (the positive class), or, with ``embedding_dim``, a face
    embedding of that width (the trunk's pooled features through one Linear layer; verification)."""
    if arch not in ARCHITECTURES:
        raise FairquantError(f"unknown architecture '{arch}'; choose one of: {', '.join(ARCHITECTURES)}")
    model = getattr(torchvision.models, arch)(weights=None)
    _replace_head(model, arch, embedding_dim or 1)
    if small_input_stem:
        _adapt_stem(model, arch)
    return model


def build_from_config(config: dict) -> nn.Module:
    """The untrained architecture a stored variant's config names (classifier or embedding network)."""
    return build_model(config["arch"], small_input_stem=config["small_input_stem"],
                       embedding_dim=config.get("embedding_dim"))


def load_pretrained(model: nn.Module, path: str) -> list[str]:
    """Load a local state dict (never downloaded), skipping tensors whose shape the adapted model changed."""
    file = Path(path)
    if not file.is_file():
        raise FairquantError(
            f"{file}: pretrained weights not found; no download is attempted (offline by design). Put a torchvision "
            f"state dict there (e.g. from ~/.cache/torch/hub/checkpoints) or set model.pretrained: null")
    state = torch.load(file, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise FairquantError(f"{file}: no tensor matches model.arch's parameter names and shapes")
    model.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))


def pick_device(name: str, key: str = "finetune.device") -> torch.device:
    """``key`` is the params key that chose ``name``, for the error message."""
    if name == "cuda" and not torch.cuda.is_available():
        raise FairquantError(f"{key} is 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
