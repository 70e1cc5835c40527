"""Params of the compress wing: the calibration sets and one section per compressor.

Each compressor's class carries its internal name (``compressor``: ptq, qat, kmeans, prune; also its slot) and
its section in params.yaml (``params_section``), and names the variants it makes (:meth:`variant_name`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from fairquant.params.base import Bits, TrainingParams, _Section

CalibrationSet = Literal["train", "balanced", "synthetic", "distilled"]


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
    activation_ranges: Literal["static", "dynamic"] = Field(
        "static", description="static: input ranges fixed from the calibration set; dynamic: each sample's own range "
                              "at inference (simulated; no x86 int8 kernels for dynamic convolutions)")
    fold_bn: bool = True
    layers: dict[str, Bits | None] = Field(
        default_factory=dict,
        description="mixed precision: module name (or prefix) -> bits for its weights and input, null = float")
    calibration: CalibrationSet = "train"
    calibration_size: int | None = Field(None, ge=1, description="images taken from the calibration set; null = all")

    @model_validator(mode="after")
    def _dynamic_ranges_quantize_inputs(self) -> "QuantSchemeParams":
        if self.activation_ranges == "dynamic" and self.activation_bits is None and not any(
                bits is not None for bits in self.layers.values()):
            raise ValueError("activation_ranges is dynamic but activation_bits is null (float inputs): no input is "
                             "quantized; set activation_bits (e.g. 8) or activation_ranges static")
        return self

    def scheme(self) -> "QuantSchemeParams":
        """Just the quantization scheme of a section that also holds other settings (QAT's training, PTQ's kernels)."""
        return QuantSchemeParams(**self.model_dump(include=set(QuantSchemeParams.model_fields)))

    def int8_mismatches(self) -> list[str]:
        """Keys whose values the x86 int8 kernels cannot run (W8A8, per-channel symmetric weights, uint8 inputs)."""
        wanted = {"bits": 8, "activation_bits": 8, "granularity": "per_channel", "weight_symmetric": True,
                  "activation_symmetric": False, "weight_observer": "minmax", "fold_bn": True, "layers": {}, "activation_ranges": "static"}
        return [key for key, value in wanted.items() if getattr(self, key) != value]

    def uses_int8_kernels(self) -> bool:
        return not self.int8_mismatches()

    def _scheme_name(self, compressor: str) -> str:
        """ptq-w4a8, qat-w4af (float inputs), with -dyn for dynamic activation ranges, -pt for per-tensor weight scales and -mixed for a layers map."""
        activations = "f" if self.activation_bits is None else self.activation_bits
        name = f"{compressor}-w{self.bits}a{activations}"
        name += "-dyn" if self.activation_ranges == "dynamic" and self.activation_bits is not None else ""
        name += "-pt" if self.granularity == "per_tensor" else ""
        return name + ("-mixed" if self.layers else "")


class QuantizePTQParams(QuantSchemeParams):
    compressor: ClassVar[str] = "ptq"
    params_section: ClassVar[str] = "quantize_ptq"

    kernels: Literal["auto", "int8", "simulated"] = Field(
        "auto", description="int8: real x86 kernels (W8A8 scheme only); auto: int8 where the scheme allows")
    seed: int = 0

    @model_validator(mode="after")
    def _kernels_can_run_scheme(self) -> "QuantizePTQParams":
        if self.kernels == "int8" and not self.uses_int8_kernels():
            raise ValueError(
                "kernels=int8 runs only the x86 int8 scheme (bits 8, activation_bits 8, per_channel, "
                "weight_symmetric true, activation_symmetric false, weight_observer minmax, fold_bn true, no layers "
                f"map, activation_ranges static); this scheme differs in {', '.join(self.int8_mismatches())}: set "
                "kernels to auto or simulated")
        return self
    int8_reduce_range: Literal["auto", True, False] = Field(
        "auto", description="int8 kernels: 7-bit activations (0..127); auto = exactly on CPUs without VNNI, whose "
                            "u8 x s8 kernels saturate int16 sums on full-range inputs")
    int8_tolerance_db: float = Field(
        5.0, ge=0, le=60, description="the compiled int8 model is refused when its SQNR against its own q/dq reference "
                                      "falls more than this below the SQNR of that reference against fp32")

    def variant_name(self) -> str:
        """ptq-w4a8-balanced: the scheme and the calibration set."""
        return f"{self._scheme_name(self.compressor)}-{self.calibration}"


class LatencyParams(_Section):
    """Timing of the variants that run on real kernels (fp32, int8). Timings are measurements: they differ run to
    run; with ``repeats: 0`` nothing is timed and two runs of the pipeline give byte-identical outputs."""

    batch: int = Field(64, ge=1, le=4096, description="images per timed call; also the int8 graph's export batch")
    repeats: int = Field(10, ge=0, le=1000, description="timed calls after warm-up (median reported); 0 = no timing")


class QuantizeQATParams(QuantSchemeParams, TrainingParams):
    compressor: ClassVar[str] = "qat"
    params_section: ClassVar[str] = "quantize_qat"

    bits: Bits = 4
    activation_bits: Bits | None = 4
    observer: Literal["minmax", "moving_average", "percentile", "histogram"] = "histogram"
    epochs: float = Field(0.5, ge=0, le=1000, description="may be fractional: 0.5 = half an epoch of steps")

    def variant_name(self) -> str:
        """qat-w4a4: the scheme."""
        return self._scheme_name(self.compressor)


class QuantizeKmeansParams(TrainingParams):
    compressor: ClassVar[str] = "kmeans"
    params_section: ClassVar[str] = "quantize_kmeans"

    clusters: int = Field(16, ge=2, le=256, description="shared weights per layer; indices are stored in at most 8 bits")
    iterations: int = Field(30, ge=1, le=1000, description="Lloyd iterations")
    epochs: float = Field(0, ge=0, le=1000, description="centroid fine-tuning epochs, assignments fixed")

    def variant_name(self) -> str:
        """kmeans-k16, with -ft when the centroids are fine-tuned."""
        return f"kmeans-k{self.clusters}" + ("-ft" if self.epochs else "")


class PruneParams(TrainingParams):
    compressor: ClassVar[str] = "prune"
    params_section: ClassVar[str] = "prune"

    sparsity: float = Field(0.8, ge=0, lt=1, description="share of conv/linear weights set to zero")
    schedule: Literal["one_shot", "iterative"] = "one_shot"
    steps: int = Field(3, ge=1, le=100, description="iterative: pruning rounds, each followed by `epochs` of fine-tuning")
    epochs: float = Field(0.5, ge=0, le=1000, description="fine-tuning after pruning (after each round when "
                                                          "iterative); may be fractional")

    def variant_name(self) -> str:
        """prune-s90, with -iter for the iterative schedule."""
        return f"prune-s{round(self.sparsity * 100)}" + ("-iter" if self.schedule == "iterative" else "")
