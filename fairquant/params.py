"""The one typed schema for ``params.yaml``.

Every stage loads the file once through :func:`load_params`; unknown keys, wrong types and out-of-range
values are rejected with a message that names the dotted key, what was expected and what was found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fairquant.errors import FairquantError

DatasetName = Literal["synthetic", "celeba", "utkface", "fairface", "mnist", "fashion_mnist", "cifar10"]
ArchName = Literal[
    "resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "squeezenet1_1", "face_resnet10"
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
    cue_strength: float = Field(1.5, gt=0, le=3, description="scales the mouth's curvature and line width: how "
                                                              "visible the label cue is at the prepared size")
    cue_overlap: float = Field(0.0, ge=0, le=0.8, description="overlap of smiling and neutral mouth curvatures "
                                                               "(share of the curvature range): ambiguity of the cue")
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

    @model_validator(mode="after")
    def _protected_names_are_distinct(self) -> "DataParams":
        repeated = sorted({name for name in self.protected if self.protected.count(name) > 1})
        if repeated:
            raise ValueError(f"data.protected names {', '.join(repeated)} more than once; list each attribute once")
        return self


class PrepareParams(_Section):
    image_size: int = Field(32, ge=8, le=512)
    workers: int = Field(2, ge=1, le=64)


class ModelParams(_Section):
    arch: ArchName = "face_resnet10"
    small_input_stem: bool = Field(False, description="3x3 stride-1 first convolution for inputs of 64 px or less "
                                                      "(resnet18 and the torchvision archs need it at 32 px)")
    pretrained: str | None = Field(None, description="path to a local state dict; never downloaded")


class FinetuneParams(_Section):
    """fp32 training; its seed is each entry of the top-level ``seeds`` list."""

    epochs: int = Field(8, ge=1, le=1000)
    batch_size: int = Field(128, ge=1, le=4096)
    lr: float = Field(0.05, gt=0, le=10)
    weight_decay: float = Field(5e-4, ge=0, le=1)
    augment: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(0, ge=0, le=256, description="torch CPU threads; 0 = all cores")


Bits = Annotated[int, Field(ge=2, le=16)]
CalibrationSet = Literal["train", "balanced", "synthetic", "distilled"]


class FacesParams(_Section):
    """Unlabelled generated faces: the default stand-in for a folder of StyleGAN faces used as a calibration set."""

    count: int = Field(512, ge=1, le=100000)
    seed: int = Field(1, description="differs from generate.seed: new faces, not copies of training images")
    minority_share: float = Field(0.5, gt=0, lt=1, description="group mix of the folder; differs from training on purpose")


class CalibrationParams(_Section):
    """The calibration sets any compressor can name; none ever takes a test image."""

    size: int = Field(512, ge=1, description="images in the train and balanced sets")
    seed: int = 0
    synthetic_folder: str = Field("data/raw/synthetic_faces", description="every image in it is the synthetic set")
    distilled_size: int = Field(32, ge=1, le=4096)
    distilled_iterations: int = Field(60, ge=1, le=100000)
    distilled_lr: float = Field(0.1, gt=0, le=10)


class QuantSchemeParams(_Section):
    """How weights and activations are quantized; shared by quantize_ptq and quantize_qat."""

    bits: Bits = Field(8, description="weight bits, 2-16")
    activation_bits: Bits | None = Field(8, description="bits of every quantized layer's input; null keeps them float")
    granularity: Literal["per_channel", "per_tensor"] = Field("per_channel", description="of the weight scales")
    weight_symmetric: bool = True
    activation_symmetric: bool = False
    weight_observer: Literal["minmax", "mse"] = "minmax"
    observer: Literal["minmax", "moving_average", "percentile", "histogram"] = Field(
        "histogram", description="activation range observer; histogram minimises the L2 quantization error")
    percentile: float = Field(0.9999, gt=0.5, le=1, description="observer=percentile: range kept, per batch")
    fold_bn: bool = True
    layers: dict[str, Bits | None] = Field(
        default_factory=dict,
        description="mixed precision: module name (or prefix) -> bits for its weights and input, null = float")
    calibration: CalibrationSet = "train"
    calibration_size: int | None = Field(None, ge=1, description="images taken from the calibration set; null = all")

    def scheme(self) -> "QuantSchemeParams":
        """Just the quantization scheme of a section that also holds other settings (QAT's training, PTQ's kernels)."""
        return QuantSchemeParams(**self.model_dump(include=set(QuantSchemeParams.model_fields)))

    def int8_mismatches(self) -> list[str]:
        """Keys whose values the x86 int8 kernels cannot run (W8A8, per-channel symmetric weights, uint8 inputs)."""
        wanted = {"bits": 8, "activation_bits": 8, "granularity": "per_channel", "weight_symmetric": True,
                  "activation_symmetric": False, "weight_observer": "minmax", "fold_bn": True, "layers": {}}
        return [key for key, value in wanted.items() if getattr(self, key) != value]

    def uses_int8_kernels(self) -> bool:
        return not self.int8_mismatches()


class QuantizePTQParams(QuantSchemeParams):
    kernels: Literal["auto", "int8", "simulated"] = Field(
        "auto", description="int8: real x86 kernels (W8A8 scheme only); auto: int8 where the scheme allows")
    seed: int = 0

    @model_validator(mode="after")
    def _kernels_can_run_scheme(self) -> "QuantizePTQParams":
        if self.kernels == "int8" and not self.uses_int8_kernels():
            raise ValueError(
                "kernels=int8 runs only the x86 int8 scheme (bits 8, activation_bits 8, per_channel, "
                "weight_symmetric true, activation_symmetric false, weight_observer minmax, fold_bn true, no layers "
                f"map); this scheme differs in {', '.join(self.int8_mismatches())}: set kernels to auto or simulated")
        return self
    int8_reduce_range: Literal["auto", True, False] = Field(
        "auto", description="int8 kernels: 7-bit activations (0..127); auto = exactly on CPUs without VNNI, whose "
                            "u8 x s8 kernels saturate int16 sums on full-range inputs")
    int8_tolerance_db: float = Field(
        5.0, ge=0, le=60, description="the compiled int8 model is refused when its SQNR against its own q/dq reference "
                                      "falls more than this below the SQNR of that reference against fp32")


class LatencyParams(_Section):
    """Timing of the variants that run on real kernels (fp32, int8). Timings are measurements: they differ run to
    run; with ``repeats: 0`` nothing is timed and two runs of the pipeline give byte-identical outputs."""

    batch: int = Field(64, ge=1, le=4096, description="images per timed call; also the int8 graph's export batch")
    repeats: int = Field(10, ge=0, le=1000, description="timed calls after warm-up (median reported); 0 = no timing")


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


class QuantizeQATParams(QuantSchemeParams, TrainingParams):
    bits: Bits = 4
    activation_bits: Bits | None = 4
    observer: Literal["minmax", "moving_average", "percentile", "histogram"] = "histogram"


class QuantizeKmeansParams(TrainingParams):
    clusters: int = Field(16, ge=2, le=256, description="shared weights per layer; indices are stored in at most 8 bits")
    iterations: int = Field(30, ge=1, le=1000, description="Lloyd iterations")
    epochs: float = Field(0, ge=0, le=1000, description="centroid fine-tuning epochs, assignments fixed")


class PruneParams(TrainingParams):
    sparsity: float = Field(0.8, ge=0, lt=1, description="share of conv/linear weights set to zero")
    schedule: Literal["one_shot", "iterative"] = "one_shot"
    steps: int = Field(3, ge=1, le=100, description="iterative: pruning rounds, each followed by `epochs` of fine-tuning")


FairnessRate = Literal["tpr", "fpr"]
BeforeMethod = Literal["fairalm", "dp_regularizer"]
DuringMethod = Literal["ceag", "equalized_loss"]
AfterMethod = Literal["caleqodds", "threshold"]
PrecisionMethod = Literal["sensitivity"]


class FairALMParams(TrainingParams):
    """FairALM (Lokhande et al. 2020, Algorithm 2): fine-tune the fp32 model under equal TPR (or FPR) across
    groups by an augmented Lagrangian; each group's surrogate is held against the mean over groups."""

    constraint: FairnessRate = Field("tpr", description="tpr: equal opportunity (DEO, on positives); fpr: on negatives")
    surrogate: Literal["cross_entropy", "sigmoid"] = Field(
        "cross_entropy", description="per-group differentiable rate: cross-entropy on the constrained rows (the "
                                     "released code) or the mean sigmoid miss rate")
    eta: float = Field(0.05, gt=0, le=100, description="augmented-Lagrangian step: penalty weight and dual step size")
    eta_growth: float = Field(1.0, ge=1, le=2, description="eta is multiplied by this after every epoch (1.01 in "
                                                           "the released code; 1 = the paper's fixed eta)")
    epochs: float = Field(1, gt=0, le=1000, description="fine-tuning epochs from the fp32 model; may be fractional")


class DPRegularizerParams(TrainingParams):
    """Fine-tune the fp32 model with a demographic-parity penalty: the spread of the groups' mean sigmoid scores
    (differentiable; an argmax gives no gradient)."""

    weight: float = Field(1.0, gt=0, le=1000, description="weight of the penalty against the cross-entropy")
    epochs: float = Field(1, gt=0, le=1000)


class ConstrainedParams(_Section):
    """Constrained fine-tuning of a compressed model against the fp32 reference (cooper-optim), in place of the
    compressor's own fine-tuning and with its settings (the compressor's section: epochs, lr, batch size, seed),
    so that the remedy and the variant it fixes differ only by the constraint."""

    rate: Literal["accuracy", "tpr", "fpr"] = Field(
        "accuracy", description="the per-group quantity the constraint holds: accuracy on all rows, TPR on "
                                "positives, FPR form on negatives (its accuracy there is 1 - FPR)")
    dual_lr: float = Field(0.01, gt=0, le=100, description="dual SGD step (CEAG: 1e-4 UTKFace/FairFace, 1e-2 CIFAR-100)")
    buffer: int = Field(40, ge=1, le=100000, description="per-group replay buffer of the latest correctness values; "
                                                         "only full buffers enter the dual step")
    checks: int = Field(4, ge=1, le=1000, description="validation checks over the run; the best feasible one is kept")


class CEAGParams(ConstrainedParams):
    """CEAG (Hashemizadeh et al. 2024): per group g, (acc_fp32,g - acc_c,g) - (acc_fp32 - acc_c) <= tolerance."""

    tolerance: float | None = Field(None, gt=0, lt=1, description="required: the excess accuracy drop allowed "
                                                                   "to any group (0.02 = 2 points)")


class EqualizedLossParams(ConstrainedParams):
    """Equalized loss, CEAG's baseline: each group's loss equal to the overall loss (equality constraints)."""


class CalEqOddsParams(_Section):
    """Calibrated equalized odds (Pleiss et al. 2017), fitted on the validation split, applied to test."""

    cost_constraint: Literal["fpr", "fnr", "weighted"] = "weighted"
    seed: int = 0


class ThresholdParams(_Section):
    """fairlearn's ThresholdOptimizer on a variant's scores (prefit), fitted on validation, applied to test."""

    constraint: Literal["equalized_odds", "true_positive_rate_parity", "false_positive_rate_parity",
                        "demographic_parity"] = "equalized_odds"
    objective: Literal["accuracy_score", "balanced_accuracy_score"] = "accuracy_score"
    grid_size: int = Field(1000, ge=10, le=100000)
    seed: int = 0


class SensitivityParams(_Section):
    """Fairness-aware layer sensitivity and the mixed-precision plan built from it."""

    bits: Bits = Field(4, description="low bits (weights and inputs, as a `layers` map sets them): each layer alone "
                                      "is quantized at these to measure its damage; the plan puts every layer it "
                                      "does not keep at them")
    high_bits: Bits | None = Field(8, description="bits of the kept layers' weights and inputs; null = float")
    keep: int = Field(3, ge=0, le=1000, description="at most this many of the most damaging layers are kept high")
    size_budget_mb: float | None = Field(None, gt=0, description="the plan's model size may not exceed this; null = "
                                                                 "no budget beyond `keep`")
    calibration: CalibrationSet = "train"
    calibration_size: int | None = Field(None, ge=1)


class MitigateParams(_Section):
    """Which remedies the graph runs (lists may be empty) and each method's settings."""

    before_compression: list[BeforeMethod] = Field(
        default_factory=lambda: ["fairalm"], description="fine-tune fp32 under the remedy, then quantize with PTQ")
    during_prune: list[DuringMethod] = Field(
        default_factory=lambda: ["ceag"], description="constrained fine-tuning in place of pruning's own")
    during_qat: list[DuringMethod] = Field(
        default_factory=list, description="constrained fine-tuning in place of QAT's own")
    during_kmeans: list[DuringMethod] = Field(
        default_factory=list, description="constrained fine-tuning of k-means centroids (quantize_kmeans.epochs > 0)")
    after: list[AfterMethod] = Field(default_factory=lambda: ["caleqodds"],
                                     description="post-processors fitted on validation, applied to test")
    post_on: list[str] = Field(default_factory=lambda: ["fp32", "ptq"], description="slots the post-processors fix")
    precision: list[PrecisionMethod] = Field(default_factory=list, description="[sensitivity]: a mixed-precision "
                                                                               "plan from layer sensitivity, then PTQ")
    calibration_sets: list[Literal["train", "balanced", "synthetic", "distilled"]] = Field(
        default_factory=list, description="calibration-side: PTQ again with each of these sets (e.g. balanced), "
                                          "compared with the PTQ of quantize_ptq.calibration")
    fairalm: FairALMParams = FairALMParams()
    dp_regularizer: DPRegularizerParams = DPRegularizerParams()
    ceag: CEAGParams = CEAGParams()
    equalized_loss: EqualizedLossParams = EqualizedLossParams()
    caleqodds: CalEqOddsParams = CalEqOddsParams()
    threshold: ThresholdParams = ThresholdParams()
    sensitivity: SensitivityParams = SensitivityParams()

    @model_validator(mode="after")
    def _lists_are_distinct(self) -> "MitigateParams":
        for key in ("before_compression", "during_prune", "during_qat", "during_kmeans", "after", "post_on", "precision",
                    "calibration_sets"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise ValueError(f"mitigate.{key} lists a value more than once ({values}); list each once")
        return self


class EvaluateParams(_Section):
    batch_size: int = Field(256, ge=1, le=8192)
    bootstrap: int = Field(1000, ge=100, le=100000)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    seed: int = 0
    min_group_size: int = Field(1, ge=1, description="groups smaller than this in the test split are reported but excluded from gaps")
    privileged_group: str | None = Field(
        None, description="the reference group that signed differences and disparate impact are taken against, as it "
                          "appears in the group labels, e.g. Female; intersectional labels join values with ' & '"
    )



# ----------------------------------------------------------------------------------------------------------------
# Face verification (seed 001: race bias on RFW under compression, real vs synthetic calibration)

RACES = ("African", "Asian", "Caucasian", "Indian")  # RFW's and BUPT's four race folders
VerifyCalibrationSet = Literal["train", "balanced", "synthetic"]


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
        "(e.g. MS1MV2 exported to images; race unknown)"))
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


class VerifyModelParams(_Section):
    arch: ArchName = Field("face_resnet10", description="face_resnet10 (narrow, fast on CPU) or any torchvision arch")
    small_input_stem: bool = Field(False, description="face_resnet10: stride-1 stem (4x the compute); torchvision "
                                                      "archs: the 3x3 stride-1 stem instead of ImageNet's")
    embedding_dim: int = Field(128, ge=8, le=4096)


class VerifyTrainParams(TrainingParams):
    """Embedding training with a margin loss (a softmax over identities with a margin on the true class)."""

    loss: Literal["cosface", "arcface"] = "cosface"
    scale: float = Field(32.0, gt=0, le=128, description="s: logits are s * cos (64 in the papers; 16-32 from scratch)")
    margin: float = Field(0.35, ge=0, le=1, description="CosFace: subtracted from cos; ArcFace: added angle (radians)")
    warmup_epochs: float = Field(1, ge=0, le=1000, description="epochs of plain normalised softmax (margin 0) first")
    epochs: float = Field(8, gt=0, le=1000)
    batch_size: int = Field(128, ge=2, le=4096)
    lr: float = Field(0.1, gt=0, le=10)
    weight_decay: float = Field(5e-4, ge=0, le=1)


class QuantFaceParams(TrainingParams):
    """QuantFace (seed 001's quantizer): the quantized model learns to match the fp32 embeddings (MSE, no labels)
    on a calibration set; weights per-channel asymmetric, activations per-tensor."""

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
    bits: list[Bits] = Field(default_factory=lambda: [8, 4], min_length=1,
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


class Params(_Section):
    seeds: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: [0], min_length=1,
        description="training seeds: the fp32 model, every compressed variant and its evaluation are made per seed")
    generate: GenerateParams = GenerateParams()
    data: DataParams = DataParams()
    prepare: PrepareParams = PrepareParams()
    model: ModelParams = ModelParams()
    finetune: FinetuneParams = FinetuneParams()
    faces: FacesParams = FacesParams()
    calibration: CalibrationParams = CalibrationParams()
    quantize_ptq: QuantizePTQParams = QuantizePTQParams()
    quantize_qat: QuantizeQATParams = QuantizeQATParams()
    quantize_kmeans: QuantizeKmeansParams = QuantizeKmeansParams()
    prune: PruneParams = PruneParams()
    evaluate: EvaluateParams = EvaluateParams()
    latency: LatencyParams = LatencyParams()
    mitigate: MitigateParams = MitigateParams()
    verify: VerifyParams = VerifyParams()

    @model_validator(mode="after")
    def _seeds_are_distinct(self) -> "Params":
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds lists a seed more than once ({self.seeds}); list each training seed once")
        return self

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
    if error["type"] == "value_error":  # a cross-field check: the message names the values itself
        return f"params.yaml: '{key}': {message}"
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
