"""Params of the data wing: the generated default, the dataset reader, prepare, and the unlabelled faces."""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath
from typing import Literal

from pydantic import Field, field_validator, model_validator

from fairquant.params.base import _Section

DatasetName = Literal["synthetic", "celeba", "utkface", "fairface", "mnist", "fashion_mnist", "cifar10", "cifar100",
                      "folder"]
GeneratedLayout = Literal["celeba", "folder"]
DEFAULT_SPLIT_COLUMN = "split"
Task = Literal["binary", "multiclass"]
CLASS_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")  # read with class_imbalance


class GroupDifficulty(_Section):
    """How hard the label cue is to see for one group of the generated data."""

    contrast: float = Field(1.0, gt=0, le=1, description="mouth/eye contrast against the skin, 1 = full")
    noise: float = Field(0.02, ge=0, le=0.5, description="std of per-pixel Gaussian noise, in [0, 1] units")
    blur: float = Field(0.0, ge=0, le=3, description="Gaussian blur radius in pixels at render size")


class GenerateParams(_Section):
    """The embedded default: a seeded generator of face-like images in the CelebA layout."""

    seed: int = 0
    identities: int = Field(1000, ge=10)
    images_per_identity: int = Field(4, ge=1, le=50)
    render_size: int = Field(64, ge=32, le=256)
    minority_share: float = Field(0.2, gt=0, lt=1, description="share of identities in the minority group")
    base_rate_majority: float = Field(0.5, gt=0, lt=1)
    base_rate_minority: float = Field(0.5, gt=0, lt=1)
    difficulty_majority: GroupDifficulty = GroupDifficulty()
    difficulty_minority: GroupDifficulty = GroupDifficulty(contrast=0.8, noise=0.04, blur=0.4)
    label_noise: float = Field(0.02, ge=0, lt=0.5)
    cue_strength: float = Field(1.5, gt=0, le=3, description="scales the mouth's curvature and line width: how "
                                                              "visible the label cue is at the prepared size")
    cue_overlap: float = Field(0.0, ge=0, le=0.8, description="overlap of smiling and neutral mouth curvatures "
                                                               "(share of the curvature range): ambiguity of the cue")
    rare_cue_share: float = Field(
        0.5, ge=0, le=1, description="share of minority positives that show the label by the rare eye cue"
    )
    val_share: float = Field(0.1, gt=0, lt=0.5)
    test_share: float = Field(0.2, gt=0, lt=0.5)
    workers: int = Field(2, ge=1, le=64)
    layout: GeneratedLayout = Field(
        "celeba", description="celeba: the binary default in CelebA's layout, read by data.source: synthetic; folder: "
                              "the same faces as an image folder with labels.csv, a three-way Expression (smiling, "
                              "neutral, frowning), Smiling, Male and identity and no split column, read by "
                              "data.source: folder (the multi-class twin)")


def escapes(text: str) -> bool:
    """An absolute path (POSIX or Windows) or one with a '..' part: it names something outside the root."""
    posix, windows = PurePosixPath(text), PureWindowsPath(text)
    return posix.is_absolute() or bool(windows.drive) or text.startswith("\\") or ".." in windows.parts


class FolderParams(_Section):
    """data.source: folder: a root of images plus one label table naming each image's file and its columns."""

    table: str = Field("labels.csv", description="the label table, relative to data.root: .csv or .parquet")
    file_column: str = Field("file", description="column holding each image's path, relative to data.root")
    split_column: str | None = Field(
        DEFAULT_SPLIT_COLUMN, description="column holding train/val/test; when the table has no column named "
        "'split' (the default) or this is null, the split is drawn: seeded by data.seed, stratified by target x "
        "protected groups, grouped by identity_column; a column named otherwise must exist")
    identity_column: str | None = Field(
        None, description="column naming the person (or any unit) in each image: one identity never sits in two splits")
    test_share: float = Field(0.2, gt=0, lt=0.5, description="share of the images drawn into the test split when the "
                                                             "table has no split column (data.val_share for val)")

    @field_validator("table")
    @classmethod
    def _table_is_csv_or_parquet(cls, value: str) -> str:
        if not value.lower().endswith((".csv", ".parquet")):
            raise ValueError(f"data.folder.table is {value!r}; name a .csv or .parquet file (relative to data.root)")
        if escapes(value):
            raise ValueError(f"data.folder.table is {value!r}, outside data.root; put the table in the dataset root "
                             f"and name it relative to data.root")
        return value


class DataParams(_Section):
    source: DatasetName = "synthetic"
    root: str = "data/raw/synthetic"
    target: str = "Smiling"
    task: Task = Field("binary", description="binary: one logit, the target's positive values (data.positive) vs the "
                                             "rest; multiclass: one logit per value of the target (softmax)")
    positive: list[str] | None = Field(
        None, description="binary only: values of the target counted as positive, for a target that is not already binary"
    )
    cifar100_labels: Literal["fine", "coarse"] = Field(
        "fine", description="CIFAR-100 only: the 100 fine classes or the 20 coarse superclasses as 'class'")
    protected: list[str] = Field(default_factory=lambda: ["Male"], min_length=1)
    max_corrupt_fraction: float = Field(0.01, ge=0, le=1)
    class_imbalance: float = Field(
        1.0, gt=0, le=1, description="MNIST/CIFAR only: keep this share of the training images of the minority classes"
    )
    minority_classes: list[int] = Field(default_factory=list)
    val_share: float = Field(0.1, gt=0, lt=0.5, description="share of the training identities held out when the dataset has no validation split")
    seed: int = 0
    folder: FolderParams = Field(default_factory=FolderParams, description="data.source: folder only: the label table")

    @model_validator(mode="after")
    def _protected_names_are_distinct(self) -> "DataParams":
        repeated = sorted({name for name in self.protected if self.protected.count(name) > 1})
        if repeated:
            raise ValueError(f"data.protected names {', '.join(repeated)} more than once; list each attribute once")
        return self

    @model_validator(mode="after")
    def _imbalance_names_its_classes(self) -> "DataParams":
        if self.class_imbalance < 1 and not self.minority_classes:
            raise ValueError(f"data.class_imbalance is {self.class_imbalance} but data.minority_classes is empty; "
                             f"list the class indices to shrink, or set data.class_imbalance: 1.0")
        repeated = sorted({c for c in self.minority_classes if self.minority_classes.count(c) > 1})
        if repeated:
            raise ValueError(f"data.minority_classes names {repeated[0]} more than once; list each class once")
        if (self.class_imbalance < 1 or self.minority_classes) and self.source not in CLASS_DATASETS:
            raise ValueError(f"data.class_imbalance / data.minority_classes shape MNIST / CIFAR training sets, but "
                             f"data.source is {self.source}; remove them (class_imbalance: 1.0, minority_classes: [])")
        return self

    @model_validator(mode="after")
    def _coarse_labels_are_cifar100s(self) -> "DataParams":
        if self.cifar100_labels != "fine" and self.source != "cifar100":
            raise ValueError(f"data.cifar100_labels is {self.cifar100_labels} but data.source is {self.source}; it "
                             f"chooses CIFAR-100's labels only: set data.cifar100_labels: fine, or data.source: cifar100")
        return self

    @model_validator(mode="after")
    def _folder_settings_are_read(self) -> "DataParams":
        if self.source != "folder" and self.folder != FolderParams():
            raise ValueError(f"data.folder is changed from its defaults but data.source is {self.source}, which never "
                             f"reads it; set data.source: folder, or put data.folder back to its defaults")
        return self

    @model_validator(mode="after")
    def _positive_names_a_value(self) -> "DataParams":
        if self.positive is not None and not self.positive:
            raise ValueError("data.positive is an empty list: no value of the target would be positive; list the "
                             "values counted positive, or set it to null for a binary attribute's own positive value")
        return self

    @model_validator(mode="after")
    def _positive_is_binary_only(self) -> "DataParams":
        if self.task == "multiclass" and self.positive is not None:
            raise ValueError("data.positive is set but data.task is multiclass (every value of the target is a class); "
                             "remove data.positive, or set data.task: binary")
        return self


class PrepareParams(_Section):
    image_size: int = Field(32, ge=8, le=512)
    workers: int = Field(2, ge=1, le=64)



class FacesParams(_Section):
    """Unlabelled generated faces: the default stand-in for a folder of StyleGAN faces used as a calibration set."""

    count: int = Field(512, ge=1, le=100000)
    seed: int = Field(1, description="differs from generate.seed: new faces, not copies of training images")
    minority_share: float = Field(0.5, gt=0, lt=1, description="group mix of the folder; differs from training on purpose")

