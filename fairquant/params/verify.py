"""Params of the face verification branch ("Compressed Models Decompress Race Biases": race bias on RFW under
compression, real vs synthetic calibration)."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, model_validator

from fairquant.params.base import ArchName, Bits, TrainingParams, _Section, vit_image_size_problem

RACES = ("African", "Asian", "Caucasian", "Indian")  # RFW's and BUPT's four race folders
VerifyCalibrationSet = Literal["train", "balanced", "synthetic"]
# insightface's backbones (fairquant.face_backbones.FACE_BACKBONES): verification only
FaceBackboneName = Literal["iresnet18", "iresnet34", "iresnet50", "iresnet100", "mobilefacenet"]
VerifyArchName = Literal[get_args(ArchName) + get_args(FaceBackboneName)]  # one choice list in errors


class VerifyGenerateParams(_Section):
    """The embedded verification default: SYNTHETIC identities written in the BUPT layout (training) and the RFW
    layout (testing, with pairs files in the real format), plus a folder of unlabelled synthetic faces."""

    seed: int = 0
    train_identities: int = Field(600, ge=8, le=1000000, description="identities in the training set, all races")
    train_mix: dict[str, float] = Field(
        default_factory=lambda: {"African": 0.1, "Asian": 0.2, "Caucasian": 0.6, "Indian": 0.1},
        description="share of training identities per race: a global-like imbalance by default; 0.25 each = "
                    "BUPT-Balancedface-like")
    images_per_identity: int = Field(8, ge=2, le=200)
    test_identities_per_race: int = Field(300, ge=4, le=100000)
    test_images_per_identity: int = Field(4, ge=2, le=200)
    pairs_per_fold: int = Field(100, ge=1, le=100000, description="genuine pairs per fold, and as many impostor "
                                                                 "pairs (RFW: 300, 10 folds)")
    render_size: int = Field(64, ge=32, le=256)
    landmarks: bool = Field(True, description="write <Race>_lmk.txt (eye points) beside the pairs files")
    identity_spread: float = Field(1.0, gt=0, le=5, description="how far apart identities' latent faces are")
    jitter: float = Field(1.0, ge=0, le=5, description="pose, lighting and expression variation per image")
    sensor_noise: float = Field(12.0, ge=0, le=64, description="std of per-pixel noise (0-255 scale, times jitter), "
                                                              "the same for every face: darker skin is seen at a "
                                                              "lower signal-to-noise ratio")
    faces: int = Field(512, ge=1, le=1000000, description="unlabelled synthetic faces (new identities) written "
                                                          "as the synthetic calibration folder")
    faces_mix: dict[str, float] = Field(
        default_factory=lambda: {"African": 0.1, "Asian": 0.15, "Caucasian": 0.6, "Indian": 0.15},
        description="race mix of the unlabelled faces (unknown to the pipeline; the report estimates it)")
    workers: int = Field(2, ge=1, le=64)
    train_recordio: bool = Field(False, description="also write the training identities as insightface's RecordIO "
                                                    "(recordio/train.rec, train.idx, identity_races.csv)")

    @model_validator(mode="after")
    def _mixes_are_distributions(self) -> "VerifyGenerateParams":
        for key in ("train_mix", "faces_mix"):
            mix = getattr(self, key)
            unknown = sorted(set(mix) - set(RACES))
            if unknown:
                raise ValueError(f"verify.generate.{key} names unknown races {unknown}; use {', '.join(RACES)}")
            if any(v < 0 for v in mix.values()) or abs(sum(mix.values()) - 1) > 1e-6:
                raise ValueError(f"verify.generate.{key} shares must be >= 0 and sum to 1, found {mix}")
        return self


class VerifyDataParams(_Section):
    source: Literal["synthetic", "real"] = Field(
        "synthetic", description="synthetic: the generated default; real: train_root and rfw_root as given")
    train_root: str = Field("data/raw/synthetic_verify/race_per_7000", description=(
        "identity folders: <root>/<Race>/<identity>/*.jpg (BUPT-Balancedface/Globalface) or <root>/<identity>/*.jpg "
        "(race unknown); with train_layout recordio, the folder holding train.rec and train.idx"))
    train_layout: Literal["identity_folders", "recordio"] = Field(
        "identity_folders", description="identity_folders: train_root holds identity folders; recordio: train_root "
                                        "holds insightface's train.rec + train.idx (MS1MV2, Glint360K, WebFace)")
    train_race_map: str | None = Field(None, description="recordio only: a CSV 'identity,race' giving the race of "
                                                         "RecordIO labels (race unknown otherwise)")
    rfw_root: str = Field("data/raw/synthetic_verify/rfw", description="RFW root: holds test/data and test/txts")
    races: list[Literal["African", "Asian", "Caucasian", "Indian"]] = Field(
        default_factory=lambda: list(RACES), min_length=2)
    max_train_identities: int | None = Field(None, ge=2, description="cap on training identities (seeded draw)")
    min_images_per_identity: int = Field(2, ge=1, le=1000)
    synthetic_folder: str = Field("data/raw/synthetic_verify/faces",
                                  description="unlabelled faces: the synthetic calibration set (your StyleGAN faces)")
    image_size: int = Field(32, ge=16, le=256)
    calibration_size: int = Field(512, ge=1, le=1000000, description="images in the train and balanced sets")
    seed: int = 0
    workers: int = Field(2, ge=1, le=64)

    @model_validator(mode="after")
    def _races_are_distinct(self) -> "VerifyDataParams":
        repeated = sorted({race for race in self.races if self.races.count(race) > 1})
        if repeated:
            raise ValueError(f"verify.data.races names {', '.join(repeated)} more than once; list each race once")
        return self

    @model_validator(mode="after")
    def _race_map_needs_recordio(self) -> "VerifyDataParams":
        if self.train_race_map is not None and self.train_layout != "recordio":
            raise ValueError(f"verify.data.train_race_map is set but verify.data.train_layout is "
                             f"'{self.train_layout}' (identity folders take races from <Race>/ folders); set "
                             f"train_layout: recordio or train_race_map: null")
        return self


class VerifyModelParams(_Section):
    arch: VerifyArchName = Field(
        "face_resnet10", description="face_resnet10 (narrow, fast on CPU), any torchvision arch, or insightface's "
                                     "iresnet18/34/50/100 and mobilefacenet (arcface_torch backbone.pth loads as is)")
    pretrained: str | None = Field(None, description="a local state dict of arch (e.g. arcface_torch's backbone.pth), "
                                                     "loaded strictly; with verify.train.epochs 0 audited as it is")
    small_input_stem: bool = Field(False, description="face_resnet10: stride-1 stem (4x the compute); torchvision "
                                                      "archs: the 3x3 stride-1 stem instead of ImageNet's")
    embedding_dim: int = Field(128, ge=8, le=4096)


class VerifyTrainParams(TrainingParams):
    """Embedding training with a margin loss (a softmax over identities with a margin on the true class)."""

    loss: Literal["cosface", "arcface"] = "cosface"
    scale: float = Field(32.0, gt=0, le=128, description="s: logits are s * cos (64 in the papers; 16-32 from scratch)")
    margin: float = Field(0.35, ge=0, le=1, description="CosFace: subtracted from cos; ArcFace: added angle (radians)")
    warmup_epochs: float = Field(1, ge=0, le=1000, description="epochs of plain normalised softmax (margin 0) first")
    epochs: float = Field(8, ge=0, le=1000, description="0: no training, the model is verify.model.pretrained as it "
                                                        "is (an audit of a model trained elsewhere)")
    batch_size: int = Field(128, ge=2, le=4096)
    lr: float = Field(0.1, gt=0, le=10)
    weight_decay: float = Field(5e-4, ge=0, le=1)


class QuantFaceParams(TrainingParams):
    """QuantFace (the quantizer of "Compressed Models Decompress Race Biases"): the quantized model learns to
    match the fp32 embeddings (MSE, no labels) on a calibration set; weights per-channel asymmetric, activations
    per-tensor."""

    epochs: float = Field(2, gt=0, le=1000)
    batch_size: int = Field(64, ge=1, le=4096)
    lr: float = Field(0.001, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0, le=1)
    augment: bool = False


class VerifyEvaluateParams(_Section):
    bootstrap: int = Field(1000, ge=100, le=100000)
    target_fmr: float | None = Field(
        None, gt=0, lt=1, description="the global threshold: at this false match rate on the held-out folds; null = "
                                      "the threshold that maximises accuracy there")
    batch_size: int = Field(256, ge=1, le=8192)


VerifyMethod = Literal["ptq", "quantface", "qat", "kmeans", "prune"]


class VerifyParams(_Section):
    """The face verification branch: train an embedding, compress it, evaluate per race on RFW's protocol."""

    generate: VerifyGenerateParams = VerifyGenerateParams()
    data: VerifyDataParams = VerifyDataParams()
    model: VerifyModelParams = VerifyModelParams()
    train: VerifyTrainParams = VerifyTrainParams()
    methods: list[VerifyMethod] = Field(
        default_factory=lambda: ["ptq", "quantface"],
        description="ptq and quantface run at every bits x calibration; qat, kmeans and prune use their own "
                    "sections (quantize_qat, quantize_kmeans, prune) with margin-loss fine-tuning")
    bits: list[Bits] = Field(default_factory=lambda: [8, 4, 3], min_length=1,
                             description="weights and activations (W8A8, W4A4, ...) of ptq and quantface")
    calibration: list[VerifyCalibrationSet] = Field(
        default_factory=lambda: ["train", "synthetic"], min_length=1,
        description="calibration (ptq) and fine-tuning (quantface) sets: train = real training faces, balanced = "
                    "race-balanced training faces, synthetic = the unlabelled folder")
    layers: dict[str, Bits | None] = Field(
        default_factory=dict,
        description="mixed precision of ptq and quantface (over every verify.bits entry) and qat: embedding-model "
                    "module name (or prefix) -> bits for its weights and input, null = float (the classifier's "
                    "quantize_ptq.layers and quantize_qat.layers are not used here)")
    quantface: QuantFaceParams = QuantFaceParams()
    evaluate: VerifyEvaluateParams = VerifyEvaluateParams()

    @model_validator(mode="after")
    def _lists_are_distinct(self) -> "VerifyParams":
        for key in ("methods", "bits", "calibration"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise ValueError(f"verify.{key} lists a value more than once ({values}); list each once")
        return self

    @model_validator(mode="after")
    def _untrained_needs_pretrained(self) -> "VerifyParams":
        if self.train.epochs == 0 and self.model.pretrained is None:
            raise ValueError("verify.train.epochs is 0 (no training) but verify.model.pretrained is null; set it to "
                             "the state dict to audit (e.g. arcface_torch's backbone.pth) or train (epochs >= 1)")
        return self

    @model_validator(mode="after")
    def _face_backbone_input_size(self) -> "VerifyParams":
        size = self.data.image_size
        if self.model.arch in get_args(FaceBackboneName) and size % 16:
            raise ValueError(f"verify.data.image_size={size}: verify.model.arch={self.model.arch} needs a multiple of "
                             f"16 (112 for arcface_torch weights); set it to 112 (or 32, 48, 64 from scratch)")
        return self

    @model_validator(mode="after")
    def _vit_patches_tile_the_image(self) -> "VerifyParams":
        problem = (self.model.arch == "vit_small"
                   and vit_image_size_problem(self.data.image_size, "verify.data.image_size"))
        if problem:
            raise ValueError(problem)
        return self

