"""The one typed schema for ``params.yaml``.

Every stage loads the file once through :func:`load_params`; unknown keys, wrong types and out-of-range
values are rejected with a message that names the dotted key, what was expected and what was found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fairquant.errors import FairquantError

DatasetName = Literal["synthetic", "celeba", "utkface", "fairface", "mnist", "fashion_mnist", "cifar10"]
ArchName = Literal[
    "resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "squeezenet1_1"
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GroupDifficulty(_Section):
    """How hard the label cue is to see for one group of the generated data."""

    contrast: float = Field(1.0, gt=0, le=1, description="mouth/eye contrast against the skin, 1 = full")
    noise: float = Field(0.02, ge=0, le=0.5, description="std of per-pixel Gaussian noise, in [0, 1] units")
    blur: float = Field(0.0, ge=0, le=3, description="Gaussian blur radius in pixels at render size")


class GenerateParams(_Section):
    """The embedded default: a seeded generator of face-like images in the CelebA layout."""

    seed: int = 0
    identities: int = Field(2000, ge=10)
    images_per_identity: int = Field(4, ge=1, le=50)
    render_size: int = Field(64, ge=32, le=256)
    minority_share: float = Field(0.2, gt=0, lt=1, description="share of identities in the minority group")
    base_rate_majority: float = Field(0.5, gt=0, lt=1)
    base_rate_minority: float = Field(0.5, gt=0, lt=1)
    difficulty_majority: GroupDifficulty = GroupDifficulty()
    difficulty_minority: GroupDifficulty = GroupDifficulty()
    label_noise: float = Field(0.02, ge=0, lt=0.5)
    rare_cue_share: float = Field(
        0.0, ge=0, le=1, description="share of minority positives that show the label by the rare eye cue"
    )
    val_share: float = Field(0.1, gt=0, lt=0.5)
    test_share: float = Field(0.2, gt=0, lt=0.5)
    workers: int = Field(2, ge=1, le=64)


class DataParams(_Section):
    source: DatasetName = "synthetic"
    root: str = "data/raw/synthetic"
    target: str = "Smiling"
    positive: list[str] | None = Field(
        None, description="values of the target counted as positive, for a target that is not already binary"
    )
    protected: list[str] = Field(default_factory=lambda: ["Male"], min_length=1)
    max_corrupt_fraction: float = Field(0.01, ge=0, le=1)
    class_imbalance: float = Field(
        1.0, gt=0, le=1, description="MNIST/CIFAR only: keep this share of the training images of the minority classes"
    )
    minority_classes: list[int] = Field(default_factory=list)
    val_share: float = Field(0.1, gt=0, lt=0.5, description="share of the training identities held out when the dataset has no validation split")
    seed: int = 0


class PrepareParams(_Section):
    image_size: int = Field(32, ge=8, le=512)
    workers: int = Field(2, ge=1, le=64)


class ModelParams(_Section):
    arch: ArchName = "resnet18"
    small_input_stem: bool = Field(True, description="3x3 stride-1 first convolution for inputs of 64 px or less")
    pretrained: str | None = Field(None, description="path to a local state dict; never downloaded")


class FinetuneParams(_Section):
    seed: int = 0
    epochs: int = Field(8, ge=1, le=1000)
    batch_size: int = Field(128, ge=1, le=4096)
    lr: float = Field(0.05, gt=0, le=10)
    weight_decay: float = Field(5e-4, ge=0, le=1)
    augment: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(0, ge=0, le=256, description="torch CPU threads; 0 = all cores")


class QuantizePTQParams(_Section):
    calibration: Literal["train"] = "train"
    calibration_size: int = Field(512, ge=1)
    seed: int = 0
    latency_batch: int = Field(64, ge=1, le=4096)
    latency_repeats: int = Field(10, ge=1, le=1000)


class EvaluateParams(_Section):
    batch_size: int = Field(256, ge=1, le=8192)
    bootstrap: int = Field(1000, ge=100, le=100000)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    seed: int = 0
    min_group_size: int = Field(1, ge=1, description="groups smaller than this in the test split are reported but excluded from gaps")


class Params(_Section):
    generate: GenerateParams = GenerateParams()
    data: DataParams = DataParams()
    prepare: PrepareParams = PrepareParams()
    model: ModelParams = ModelParams()
    finetune: FinetuneParams = FinetuneParams()
    quantize_ptq: QuantizePTQParams = QuantizePTQParams()
    evaluate: EvaluateParams = EvaluateParams()

    @model_validator(mode="after")
    def _splits_leave_training_data(self) -> "Params":
        if self.generate.val_share + self.generate.test_share >= 0.9:
            raise ValueError(
                "generate.val_share + generate.test_share must be < 0.9 to leave a training split, "
                f"found {self.generate.val_share + self.generate.test_share:g}"
            )
        return self


def _format_error(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "params.yaml"
    found = error.get("input")
    if error["type"] == "extra_forbidden":
        return f"params.yaml: unknown key '{key}' (found {found!r}); remove it or fix its spelling"
    if error["type"] == "missing":
        return f"params.yaml: missing key '{key}'"
    message = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:
        return f"params.yaml: {message}"
    message = message.replace("Input should be", "expected").replace("Input should", "expected to")
    return f"params.yaml: '{key}': {message}; found {found!r}"


def parse_params(raw: dict) -> Params:
    """Validate a params mapping; raise :class:`FairquantError` naming the first bad key."""
    if not isinstance(raw, dict):
        raise FairquantError(f"params.yaml: expected a mapping of sections, found {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise FairquantError(_format_error(exc.errors()[0])) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise FairquantError(f"{path}: params file not found; run from the project root, where params.yaml is")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise FairquantError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_params(raw)
