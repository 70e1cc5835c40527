"""torchvision architectures with the head adapted to the target (one logit for a binary target, one per class
for a multi-class one) and, optionally, small inputs; ViT-small
(:mod:`fairquant.vit`) next to them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from fairquant.errors import FairquantError
from fairquant.face_backbones import FACE_BACKBONES, face_backbone
from fairquant.vit import vit_small

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


ARCHITECTURES = ("resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "squeezenet1_1",
                 "face_resnet10", "vit_small")


def face_resnet10(outputs: int, small_input_stem: bool) -> nn.Module:
    """A narrow ResNet-10 of torchvision's BasicBlocks (one per stage, widths 32-256) for small face crops:
    a 3x3 stem (stride 2, or 1 with ``small_input_stem``), no max-pool. About 1.3 M parameters and 5 M
    multiply-adds at 32 px: the embedding trunk of the verification default, trainable in a minute on 2 cores
    (ResNet-18 there trains at about a fifth of its speed)."""
    from torchvision.models.resnet import BasicBlock, ResNet

    widths = (32, 64, 128, 256)
    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=outputs)
    model.inplanes = widths[0]
    model.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=1 if small_input_stem else 2, padding=1, bias=False)
    model.bn1 = nn.BatchNorm2d(widths[0])
    model.maxpool = nn.Identity()
    model.layer1 = model._make_layer(BasicBlock, widths[0], 1)
    model.layer2 = model._make_layer(BasicBlock, widths[1], 1, stride=2)
    model.layer3 = model._make_layer(BasicBlock, widths[2], 1, stride=2)
    model.layer4 = model._make_layer(BasicBlock, widths[3], 1, stride=2)
    model.fc = nn.Linear(widths[3], outputs)
    return model


def build_model(arch: str, *, small_input_stem: bool, embedding_dim: int | None = None, image_size: int | None = None,
                image_size_key: str = "prepare.image_size", classes: int | None = None) -> nn.Module:
    """An untrained model emitting one logit (the positive class), one logit per class with ``classes`` (a
    multi-class target), or, with ``embedding_dim``, a face embedding of that width (the trunk's pooled features
    through one Linear layer; verification), or one of insightface's face backbones
    (:mod:`fairquant.face_backbones`, verification only).

    ``image_size`` is needed by vit_small only (its patch size and position embeddings follow it; the other archs
    pool over space), which ignores ``small_input_stem``; ``image_size_key`` is the params key that chose it, for
    the error when it does not fit."""
    if arch in FACE_BACKBONES:
        if embedding_dim is None or image_size is None:
            raise FairquantError(f"{arch} is a face-recognition backbone (an embedding network): use it as "
                                 f"verify.model.arch, not model.arch")
        return face_backbone(arch, embedding_dim=embedding_dim, image_size=image_size, image_size_key=image_size_key)
    if arch not in ARCHITECTURES:
        raise FairquantError(f"unknown architecture '{arch}'; choose one of: {', '.join(ARCHITECTURES)}")
    outputs = embedding_dim or classes or 1
    if arch == "vit_small":
        if image_size is None:
            raise FairquantError(f"vit_small needs the input image size ({image_size_key}) to choose its patch size; "
                                 f"pass image_size")
        return vit_small(image_size=image_size, outputs=outputs, image_size_key=image_size_key)
    if arch == "face_resnet10":
        return face_resnet10(outputs, small_input_stem)
    model = getattr(torchvision.models, arch)(weights=None)
    _replace_head(model, arch, outputs)
    if small_input_stem:
        _adapt_stem(model, arch)
    return model


def build_from_config(config: dict) -> nn.Module:
    """The untrained architecture a stored variant's config names (classifier or embedding network)."""
    key = "verify.data.image_size" if config.get("task") == "verification" else "prepare.image_size"
    return build_model(config["arch"], small_input_stem=config["small_input_stem"],
                       embedding_dim=config.get("embedding_dim"), image_size=config.get("image_size"),
                       image_size_key=key, classes=len(config["classes"]) if config.get("classes") else None)


def load_pretrained(model: nn.Module, path: str) -> list[str]:
    """Load a local state dict (never downloaded), skipping tensors whose shape the adapted model changed."""
    file = Path(path)
    if not file.is_file():
        raise FairquantError(
            f"{file}: pretrained weights not found; no download is attempted (offline by design). Put a torchvision "
            f"state dict there (e.g. from ~/.cache/torch/hub/checkpoints) or set model.pretrained: null")
    state = _read_state_dict(file)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise FairquantError(f"{file}: no tensor matches model.arch's parameter names and shapes")
    model.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))


def _read_state_dict(file: Path) -> dict:
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        from fairquant.io import torch_load_problem

        raise FairquantError(f"{file}: not a readable state dict ({torch_load_problem(exc)}); "
                             "save it with torch.save(model.state_dict(), path)") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise FairquantError(f"{file}: holds no state dict of tensors (layer name -> tensor); save it with "
                             f"torch.save(model.state_dict(), path)")
    return state


def first_non_finite(state: dict[str, torch.Tensor]) -> str | None:
    """The first floating tensor holding NaN or inf: a damaged (or diverged) model, which would predict garbage."""
    return next((name for name, tensor in state.items()
                 if isinstance(tensor, torch.Tensor) and tensor.is_floating_point()
                 and not bool(torch.isfinite(tensor).all())), None)


def load_audited(model: nn.Module, path: str, key: str = "model.pretrained") -> None:
    """Load the model to audit as it is: every tensor of ``model`` from the file at ``path`` (``key`` chose it),
    with its shape; a missing, extra or differently shaped tensor is refused (naming the layer), never skipped.
    Keys saved from DataParallel / DDP (``module.`` prefixed) are accepted."""
    file = Path(path)
    if not file.is_file():
        raise FairquantError(f"{file}: the model to audit ({key}) not found; point {key} at its state dict file")
    state = _read_state_dict(file)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    own = model.state_dict()
    for name, tensor in own.items():
        if name not in state:
            raise FairquantError(f"{file}: no tensor {name!r} ({key} must be a state dict of this architecture and "
                                 f"task; check model.arch and data.target)")
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise FairquantError(f"{file}: layer {name!r} has shape {tuple(state[name].shape)} but the model needs "
                                 f"{tuple(tensor.shape)}; check model.arch, model.small_input_stem and the number of "
                                 f"classes of data.target")
    extra = sorted(set(state) - set(own))
    if extra:
        raise FairquantError(f"{file}: tensor {extra[0]!r} (and {len(extra) - 1} more) is not in model.arch's model; "
                             f"{key} must be a state dict of this architecture")
    damaged = first_non_finite({name: state[name] for name in own})
    if damaged is not None:
        raise FairquantError(f"{file}: layer {damaged!r} holds NaN or infinite values; the model to audit ({key}) is "
                             f"damaged or diverged: export it again")
    model.load_state_dict({name: state[name] for name in own})


def pick_device(name: str, key: str = "finetune.device") -> torch.device:
    """``key`` is the params key that chose ``name``, for the error message."""
    if name == "cuda" and not torch.cuda.is_available():
        raise FairquantError(f"{key} is 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def scoring_device(name: str, key: str = "evaluate.device") -> torch.device:
    """:func:`pick_device` for inference. On CUDA, float32 matrix products and convolutions are kept in full
    float32 (no TF32, which keeps 10 mantissa bits), so that scores differ from the CPU's by float rounding only."""
    device = pick_device(name, key)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return device
