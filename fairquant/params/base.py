"""What every params section shares: strict frozen sections, the bit-width type, the architectures, and the
fine-tuning settings that compressors, remedies and the verification branch all extend."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

ArchName = Literal[
    "resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "squeezenet1_1", "face_resnet10",
    "vit_small",
]

VIT_PATCHES_PER_SIDE = 8  # ViT-small's patch size follows the image size: 8 x 8 = 64 patch tokens


def vit_patch_size(image_size: int) -> int:
    """ViT-small's patch side: image_size // 8, at least 2 (32 px -> 4 px patches, 64 tokens; 224 px -> 28)."""
    return max(2, image_size // VIT_PATCHES_PER_SIDE)


def vit_image_size_problem(image_size: int, key: str) -> str | None:
    """Why ViT-small cannot run at ``image_size`` (the params key ``key``), or None: its patches must tile the image."""
    patch = vit_patch_size(image_size)
    if image_size % patch == 0:
        return None
    lower = image_size - image_size % VIT_PATCHES_PER_SIDE
    return (f"{key} is {image_size}, which vit_small's {patch} px patches (image_size // {VIT_PATCHES_PER_SIDE}, at "
            f"least 2) do not tile; choose a multiple of {VIT_PATCHES_PER_SIDE}, e.g. {lower} or "
            f"{lower + VIT_PATCHES_PER_SIDE}")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True,  # no true -> 1, "8" -> 8
                              str_min_length=1)  # no empty names or paths



Bits = Annotated[int, Field(ge=2, le=16)]


class TrainingParams(_Section):
    """Fine-tuning after compression: quantization-aware, centroid or post-pruning."""

    seed: int = 0
    epochs: float = Field(1, ge=0, le=1000, description="may be fractional: 0.5 = half an epoch of steps")
    batch_size: int = Field(128, ge=1, le=4096)
    lr: float = Field(0.005, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0, le=1)
    augment: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(0, ge=0, le=256)

