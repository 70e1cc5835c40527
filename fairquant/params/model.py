"""Params of the classifier: its architecture, its fp32 training and its evaluation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fairquant.params.base import ArchName, _Section


class ModelParams(_Section):
    arch: ArchName = "face_resnet10"
    small_input_stem: bool = Field(False, description="3x3 stride-1 first convolution for inputs of 64 px or less "
                                                      "(resnet18 and the torchvision archs need it at 32 px)")
    pretrained: str | None = Field(None, description="path to a local state dict; never downloaded. With "
                                                     "finetune.epochs 0 it is the model audited as it is")


class FinetuneParams(_Section):
    """fp32 training; its seed is each entry of the top-level ``seeds`` list."""

    epochs: int = Field(4, ge=0, le=1000, description="0 audits model.pretrained as it is (no training here)")
    batch_size: int = Field(64, ge=1, le=4096)
    lr: float = Field(0.05, gt=0, le=10)
    weight_decay: float = Field(5e-4, ge=0, le=1)
    augment: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(0, ge=0, le=256, description="torch CPU threads; 0 = all cores")


class EvaluateParams(_Section):
    batch_size: int = Field(256, ge=1, le=8192)
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where float models score (predict, the sweep, the verification embeddings and probe): "
                            "auto = CUDA when visible; real int8 and the latency stage always run on the CPU")
    bootstrap: int = Field(1000, ge=100, le=100000)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    seed: int = 0
    min_group_size: int = Field(1, ge=1, description="groups smaller than this in the test split are reported but excluded from gaps")
    privileged_group: str | None = Field(
        "Female", description="the reference group that signed differences and disparate impact are taken against, as it "
                          "appears in the group labels, e.g. Female; intersectional labels join values with ' & '"
    )




class ReportParams(_Section):
    """What the report shows besides the metrics."""

    exemplars_per_group: int = Field(4, ge=0, le=32, description="test images per group and compressor that the "
                                     "compressor flipped, shown in plots/report.html (0 = none)")
