"""insightface's face-recognition backbones, IResNet (18/34/50/100) and MobileFaceNet, laid out so that an
arcface_torch ``backbone.pth`` state dict loads as it is (the same module names, shapes and BatchNorm eps as
``recognition/arcface_torch/backbones/iresnet.py`` and ``mobilefacenet.py``): 112 x 112 RGB input, 512-d
embedding by default.

Two adaptations leave the state dict untouched: the input is rescaled from fairquant's standardisation
((x/255 - 0.5) / 0.25, :data:`fairquant.models.INPUT_STD`) to insightface's ((x/255 - 0.5) / 0.5) inside
``forward``; and the spatial size after the trunk follows ``image_size`` (7 x 7 at 112 px, as the pretrained
weights need; smaller multiples of 16 give a smaller ``fc`` / GDC kernel, for training from scratch on small
crops)."""

from __future__ import annotations

import torch
from torch import nn

from fairquant.errors import FairquantError

INSIGHTFACE_INPUT_STD = 0.5  # arcface_torch: transforms.Normalize(mean=0.5, std=0.5)
FAIRQUANT_INPUT_STD = 0.25  # fairquant.models.INPUT_STD (not imported: models builds these)
IRESNET_LAYERS = {"iresnet18": (2, 2, 2, 2), "iresnet34": (3, 4, 6, 3), "iresnet50": (3, 4, 14, 3),
                  "iresnet100": (3, 13, 30, 3)}
FACE_BACKBONES = (*IRESNET_LAYERS, "mobilefacenet")
STRIDE = 16  # both trunks halve the input four times


def trunk_side(image_size: int, key: str = "verify.data.image_size") -> int:
    """The feature map's side after the trunk (7 at 112 px)."""
    if image_size % STRIDE or image_size < STRIDE:
        raise FairquantError(f"{key}={image_size}: insightface backbones need a multiple of {STRIDE} (112 for "
                             f"arcface_torch weights); set it to 112 (or 32, 48, 64 ... from scratch)")
    return image_size // STRIDE


class _Rescaled(nn.Module):
    """Takes fairquant-standardised input and feeds the trunk insightface's standardisation."""

    input_scale = FAIRQUANT_INPUT_STD / INSIGHTFACE_INPUT_STD

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x * self.input_scale)


class IBasicBlock(nn.Module):
    """BN, conv3x3, BN, PReLU, conv3x3 (stride here), BN, plus the shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(_Rescaled):
    def __init__(self, layers: tuple[int, ...], num_features: int = 512, image_size: int = 112, dropout: float = 0.0,
                 image_size_key: str = "verify.data.image_size"):
        super().__init__()
        side = trunk_side(image_size, image_size_key)
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-05)
        self.prelu = nn.PReLU(64)
        inplanes = 64
        for index, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), 1):
            downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, 2, bias=False),
                                       nn.BatchNorm2d(planes, eps=1e-05))
            stage = [IBasicBlock(inplanes, planes, 2, downsample)] + [IBasicBlock(planes, planes)
                                                                      for _ in range(1, blocks)]
            setattr(self, f"layer{index}", nn.Sequential(*stage))
            inplanes = planes
        self.bn2 = nn.BatchNorm2d(512, eps=1e-05)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(512 * side * side, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-05)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False  # arcface_torch freezes the embedding BN's scale
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0, 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


class ConvBlock(nn.Module):
    def __init__(self, in_c: int, out_c: int, kernel=(1, 1), stride=(1, 1), padding=(0, 0), groups: int = 1,
                 activation: bool = True):
        super().__init__()
        parts = [nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False), nn.BatchNorm2d(out_c)]
        self.layers = nn.Sequential(*parts, *([nn.PReLU(out_c)] if activation else []))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def LinearBlock(in_c: int, out_c: int, kernel=(1, 1), stride=(1, 1), padding=(0, 0), groups: int = 1) -> ConvBlock:
    """Conv + BN without activation (insightface's LinearBlock: the same ``layers.0`` / ``layers.1`` keys)."""
    return ConvBlock(in_c, out_c, kernel, stride, padding, groups, activation=False)


class DepthWise(nn.Module):
    """1x1 expand to ``groups`` channels, depthwise 3x3, 1x1 project; a residual when asked."""

    def __init__(self, in_c: int, out_c: int, residual: bool = False, stride=(2, 2), groups: int = 1):
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(ConvBlock(in_c, groups), ConvBlock(groups, groups, (3, 3), stride, (1, 1), groups),
                                    LinearBlock(groups, out_c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x) if self.residual else self.layers(x)


class Residual(nn.Module):
    def __init__(self, c: int, num_block: int, groups: int):
        super().__init__()
        self.layers = nn.Sequential(*[DepthWise(c, c, True, (1, 1), groups) for _ in range(num_block)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class GDC(nn.Module):
    """Global depthwise convolution over the whole map, then the embedding (Linear without bias, BatchNorm1d)."""

    def __init__(self, embedding_size: int, side: int):
        super().__init__()
        self.layers = nn.Sequential(LinearBlock(512, 512, (side, side), groups=512), nn.Flatten(),
                                    nn.Linear(512, embedding_size, bias=False), nn.BatchNorm1d(embedding_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class MobileFaceNet(_Rescaled):
    """arcface_torch's ``mbf`` (``get_mbf``: blocks (1, 4, 6, 2), scale 2)."""

    def __init__(self, num_features: int = 512, image_size: int = 112, blocks=(1, 4, 6, 2), scale: int = 2,
                 image_size_key: str = "verify.data.image_size"):
        super().__init__()
        side = trunk_side(image_size, image_size_key)
        c1, c2 = 64 * scale, 128 * scale
        first = (ConvBlock(c1, c1, (3, 3), (1, 1), (1, 1), groups=64) if blocks[0] == 1
                 else Residual(c1, blocks[0], 128))
        self.layers = nn.ModuleList([
            ConvBlock(3, c1, (3, 3), (2, 2), (1, 1)), first,
            DepthWise(c1, c1, groups=128), Residual(c1, blocks[1], 128),
            DepthWise(c1, c2, groups=256), Residual(c2, blocks[2], 256),
            DepthWise(c2, c2, groups=512), Residual(c2, blocks[3], 256)])
        self.conv_sep = ConvBlock(c2, 512)
        self.features = GDC(num_features, side)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.features(self.conv_sep(x))


def face_backbone(arch: str, *, embedding_dim: int, image_size: int,
                  image_size_key: str = "verify.data.image_size") -> nn.Module:
    """An untrained IResNet or MobileFaceNet (``arch`` one of :data:`FACE_BACKBONES`)."""
    if arch == "mobilefacenet":
        return MobileFaceNet(embedding_dim, image_size, image_size_key=image_size_key)
    return IResNet(IRESNET_LAYERS[arch], embedding_dim, image_size, image_size_key=image_size_key)
