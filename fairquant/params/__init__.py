"""The one typed schema for ``params.yaml``.

Every stage loads the file once through :func:`load_params`; unknown keys, wrong types and out-of-range
values are rejected with a message that names the dotted key, what was expected and what was found.
The sections live by wing (``data``, ``model``, ``compress``, ``mitigate``, ``verify``; ``base`` holds what they
share); every name is re-exported here, so ``from fairquant.params import X`` is the one import to use.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path, PurePosixPath
from typing import Annotated

from pydantic import Field, ValidationError, model_validator

from fairquant.errors import FairquantError
from fairquant.params.base import ArchName, Bits, TrainingParams, _Section, vit_image_size_problem
from fairquant.params.compress import (CalibrationParams, CalibrationSet, LatencyParams, PruneParams,
                                       QuantizeKmeansParams, QuantizePTQParams, QuantizeQATParams, QuantSchemeParams)
from fairquant.params.data import (DataParams, DatasetName, FacesParams, FolderParams, GeneratedLayout, GenerateParams,
                                   GroupDifficulty, PrepareParams)
from fairquant.params.distributed import DistributedParams
from fairquant.params.loading import Positions, position_of, read_params_file
from fairquant.params.mitigate import (AfterMethod, BeforeMethod, CalEqOddsParams, CEAGParams, ConstrainedParams,
                                       DPRegularizerParams, DuringMethod, EqualizedLossParams, FairALMParams,
                                       FairnessRate, MitigateParams, PrecisionMethod, REMEDY_PARAMS,
                                       SensitivityParams, ThresholdParams)
from fairquant.params.model import EvaluateParams, FinetuneParams, ModelParams, ReportParams
from fairquant.params.sweep import SweepParams, SweepPoint, point_section
from fairquant.params.verify import (RACES, QuantFaceParams, VerifyCalibrationSet, VerifyDataParams,
                                     VerifyEvaluateParams, VerifyGenerateParams, VerifyMethod, VerifyModelParams,
                                     VerifyParams, VerifyTrainParams)

__all__ = [
    "Params", "parse_params", "load_params",
    # base
    "ArchName", "DistributedParams", "Bits", "TrainingParams",
    # data
    "DatasetName", "GroupDifficulty", "GenerateParams", "GeneratedLayout", "DataParams", "FolderParams", "PrepareParams",
    "FacesParams",
    # model
    "ModelParams", "FinetuneParams", "EvaluateParams", "ReportParams",
    # compress
    "CalibrationSet", "CalibrationParams", "QuantSchemeParams", "QuantizePTQParams", "LatencyParams",
    "QuantizeQATParams", "QuantizeKmeansParams", "PruneParams",
    # mitigate
    "FairnessRate", "BeforeMethod", "DuringMethod", "AfterMethod", "PrecisionMethod", "FairALMParams",
    "DPRegularizerParams", "ConstrainedParams", "CEAGParams", "EqualizedLossParams", "CalEqOddsParams",
    "ThresholdParams", "SensitivityParams", "REMEDY_PARAMS", "MitigateParams",
    # sweep
    "SweepParams", "SweepPoint",
    # verify
    "RACES", "VerifyCalibrationSet", "VerifyGenerateParams", "VerifyDataParams", "VerifyModelParams",
    "VerifyTrainParams", "QuantFaceParams", "VerifyEvaluateParams", "VerifyMethod", "VerifyParams",
]


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
    sweep: SweepParams = SweepParams()
    verify: VerifyParams = VerifyParams()
    distributed: DistributedParams = DistributedParams()
    report: ReportParams = ReportParams()

    def compressors(self) -> dict[str, _Section]:
        """Each compressor's internal name (ptq, qat, kmeans, prune: its slot) -> its section, in schema order."""
        sections = (getattr(self, key) for key in type(self).model_fields)
        return {section.compressor: section for section in sections if hasattr(section, "compressor")}

    def section_for(self, method: str, point: str | None) -> _Section:
        """A compressor's section, or with ``point`` (a sweep point's name, e.g. w4a4) that point's section."""
        if point is None:
            return self.compressors()[method]
        try:
            checked = SweepParams(**{method: [point]}).points(method)[0]
            return self.point_section(checked)
        except (ValidationError, ValueError) as exc:
            message = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            raise FairquantError(f"--point {point}: {message.removeprefix('Value error, ')}") from None

    def point_section(self, point: SweepPoint) -> _Section:
        """The section that builds a sweep point: its compressor's, with the point's values."""
        section = self.compressors()[point.method]
        return point_section(section, point, f"sweep.{point.method}")

    @model_validator(mode="after")
    def _sweep_points_run(self) -> "Params":
        for point in self.sweep.points():
            self.point_section(point)
        return self

    @model_validator(mode="after")
    def _generated_layout_has_its_reader(self) -> "Params":
        """The CelebA-layout default is read by data.source: synthetic; the folder twin by data.source: folder."""
        if self.data.source == "synthetic" and self.generate.layout != "celeba":
            raise ValueError(f"generate.layout is {self.generate.layout} but data.source is synthetic, which reads the "
                             f"CelebA layout; set data.source: folder to read the generated folder, or "
                             f"generate.layout: celeba")
        return self

    @model_validator(mode="after")
    def _remedies_fit_the_target(self) -> "Params":
        """FairALM, the DP regulariser, calibrated equalized odds and ThresholdOptimizer are binary methods (a
        positive class, one score); CEAG and equalized loss hold per-group accuracy, which any target has."""
        if self.data.task != "multiclass":
            return self
        for key, binary_only in (("before_compression", ("fairalm", "dp_regularizer")),
                                 ("after", ("caleqodds", "threshold"))):
            listed = [m for m in getattr(self.mitigate, key) if m in binary_only]
            if listed:
                raise ValueError(f"mitigate.{key} lists {', '.join(listed)}, a binary method, but data.task is "
                                 f"multiclass; remove it (CEAG and equalized loss in mitigate.during_* work for "
                                 f"multi-class targets)")
        during = {m for key in ("during_prune", "during_qat", "during_kmeans") for m in getattr(self.mitigate, key)}
        for method in sorted(during):
            if getattr(self.mitigate, method).rate != "accuracy":
                raise ValueError(f"mitigate.{method}.rate is {getattr(self.mitigate, method).rate}, a binary rate, but "
                                 f"data.task is multiclass; set mitigate.{method}.rate: accuracy")
        return self

    @model_validator(mode="after")
    def _pretrained_files_are_tracked(self) -> "Params":
        """Weights and the race map sit where a stage's DVC dependencies see them change: the finetune and
        verify_train stages depend on data/pretrained/, verify_prepare on verify.data.train_root."""
        for key, value in (("model.pretrained", self.model.pretrained),
                           ("verify.model.pretrained", self.verify.model.pretrained)):
            if value is not None and not _inside(value, PRETRAINED_FOLDER):
                raise ValueError(f"{key} is {value!r}, outside {PRETRAINED_FOLDER}/, the folder its stage depends on: "
                                 f"DVC would not re-run the study when the file changes; copy the file into "
                                 f"{PRETRAINED_FOLDER}/ and set {key}: {PRETRAINED_FOLDER}/<file>")
        race_map = self.verify.data.train_race_map
        if race_map is not None and not _inside(race_map, self.verify.data.train_root):
            raise ValueError(f"verify.data.train_race_map is {race_map!r}, outside verify.data.train_root "
                             f"({self.verify.data.train_root!r}, the folder verify_prepare depends on): DVC would not "
                             f"see it change; move it into train_root")
        return self

    @model_validator(mode="after")
    def _audit_has_a_model(self) -> "Params":
        """finetune.epochs 0 audits model.pretrained as it is: it needs that file, and no other architecture."""
        if self.finetune.epochs:
            return self
        if not self.model.pretrained:
            raise ValueError("finetune.epochs is 0 (audit a trained model as it is) but model.pretrained is null; set "
                             "model.pretrained to the model's state dict, or finetune.epochs >= 1")
        others = [arch for arch in self.sweep.architectures if arch != self.model.arch]
        if others:
            raise ValueError(f"finetune.epochs is 0 (audit model.pretrained) but sweep.architectures lists {others}, "
                             f"which would have no weights; remove them or set finetune.epochs >= 1")
        if len(self.seeds) > 1:  # one model, not one per seed: across-seed tests would count copies as replicates
            raise ValueError(f"finetune.epochs is 0 (audit model.pretrained) but seeds lists {self.seeds}: every seed "
                             f"would audit the same model; list one seed, or set finetune.epochs >= 1")
        return self

    @model_validator(mode="after")
    def _binary_target_is_not_a_group(self) -> "Params":
        """A binary target that is also a protected attribute makes every group all-positive or all-negative: no
        group has both rates. Multi-class targets may (the class as the group: Balancing Act's per-class drops)."""
        if self.data.task == "binary" and self.data.target in self.data.protected:
            raise ValueError(f"data.target {self.data.target!r} is also in data.protected, but data.task is binary: "
                             f"each group would hold one label only; protect another attribute, or set data.task: "
                             f"multiclass for the class as the group")
        return self

    @model_validator(mode="after")
    def _constrained_remedies_have_epochs(self) -> "Params":
        """CEAG and equalized loss fine-tune with the compressor's own settings: with 0 epochs they would not run."""
        for compressor in ("prune", "qat", "kmeans"):
            listed = getattr(self.mitigate, f"during_{compressor}")
            section = self.compressors()[compressor]
            if listed and not section.epochs:
                raise ValueError(f"mitigate.during_{compressor} lists {', '.join(listed)} but {section.params_section}"
                                 f".epochs is 0: the constrained fine-tuning runs with that section's epochs; set "
                                 f"{section.params_section}.epochs > 0 (e.g. 0.5) or empty during_{compressor}")
        return self

    @model_validator(mode="after")
    def _calibration_sets_add_a_set(self) -> "Params":
        ptq_set = self.quantize_ptq.calibration
        if ptq_set in self.mitigate.calibration_sets:
            raise ValueError(f"mitigate.calibration_sets lists {ptq_set}, quantize_ptq's own calibration set: the "
                             f"ptq slot already is that model; list only other sets")
        return self

    @model_validator(mode="after")
    def _calibration_sizes_fit_their_sets(self) -> "Params":
        """A compressor takes calibration_size images of its set: no more than the set holds (train and balanced:
        calibration.size; distilled: calibration.distilled_size; synthetic: the folder, counted when read)."""
        sizes = {"train": ("calibration.size", self.calibration.size),
                 "balanced": ("calibration.size", self.calibration.size),
                 "distilled": ("calibration.distilled_size", self.calibration.distilled_size)}
        for key, section in (("quantize_ptq", self.quantize_ptq), ("quantize_qat", self.quantize_qat),
                             ("mitigate.sensitivity", self.mitigate.sensitivity)):
            size_key, size = sizes.get(section.calibration, (None, None))
            if size is not None and section.calibration_size is not None and section.calibration_size > size:
                raise ValueError(f"{key}.calibration_size is {section.calibration_size}, more than its "
                                 f"{section.calibration} set holds ({size_key}: {size}); lower it, raise {size_key}, "
                                 f"or set it to null (all of the set)")
        return self

    def _verification_training(self) -> list[tuple[str, object]]:
        """The verification branch's own training sections (its compressors' fine-tunes use theirs): trained on
        distributed.nproc processes like the others, when verify.methods lists QuantFace, when verify_train trains."""
        sections = [("verify.train", self.verify.train)] if self.verify.train.epochs else []
        return sections + ([("verify.quantface", self.verify.quantface)] if "quantface" in self.verify.methods else [])

    @model_validator(mode="after")
    def _nccl_trains_on_cuda(self) -> "Params":
        """nccl moves CUDA tensors only: a training section pinned to the CPU cannot use it."""
        if self.distributed.backend != "nccl":
            return self
        for key, section in (("finetune", self.finetune), *((s.params_section, s) for s in self.compressors().values()
                                                            if hasattr(s, "device")),
                             *self._verification_training()):
            if section.device == "cpu":
                raise ValueError(f"distributed.backend is nccl but {key}.device is cpu: nccl carries CUDA tensors only; "
                                 f"set distributed.backend to auto (gloo on the CPU) or {key}.device to cuda/auto")
        return self

    @model_validator(mode="after")
    def _every_process_gets_rows(self) -> "Params":
        """Each of distributed.nproc processes trains on its slice of every global batch: a batch smaller than the
        process count would be skipped whole, and nothing would train."""
        nproc = self.distributed.nproc
        if nproc == 1:
            return self
        # the remedies before compression train with their own batch; those during, with their compressor's
        remedies = ((f"mitigate.{method}", getattr(self.mitigate, method))
                    for method in self.mitigate.before_compression)
        for key, section in (("finetune", self.finetune), *((s.params_section, s) for s in self.compressors().values()
                                                            if hasattr(s, "batch_size") and hasattr(s, "device")),
                             *remedies, *self._verification_training()):
            if section.batch_size < nproc:
                raise ValueError(f"{key}.batch_size is {section.batch_size} but distributed.nproc is {nproc}: each "
                                 f"process needs a row of every batch; raise {key}.batch_size to at least {nproc} or "
                                 f"lower distributed.nproc")
        return self

    @model_validator(mode="after")
    def _seeds_are_distinct(self) -> "Params":
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds lists a seed more than once ({self.seeds}); list each training seed once")
        return self

    @model_validator(mode="after")
    def _vit_patches_tile_the_image(self) -> "Params":
        problem = ("vit_small" in (self.model.arch, *self.sweep.architectures)
                   and vit_image_size_problem(self.prepare.image_size, "prepare.image_size"))
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _splits_leave_training_data(self) -> "Params":
        if self.generate.val_share + self.generate.test_share >= 0.9:
            raise ValueError(
                "generate.val_share + generate.test_share must be < 0.9 to leave a training split, "
                f"found {self.generate.val_share + self.generate.test_share:g}"
            )
        return self


PRETRAINED_FOLDER = "data/pretrained"  # a dependency of finetune and verify_train (dvc.yaml)


def _inside(path: str, folder: str) -> bool:
    """``path`` names a file below ``folder`` (both as written, relative to the repository), never leaving it."""
    parts, root = PurePosixPath(os.path.normpath(path)).parts, PurePosixPath(os.path.normpath(folder)).parts
    return ".." not in PurePosixPath(path).parts and len(parts) > len(root) and parts[:len(root)] == root


def _hint(error: dict) -> str:
    """What YAML did to a value that the schema refuses by type: booleans from yes/no/on/off, numbers for words."""
    found, kind = error.get("input"), error["type"]
    if isinstance(found, bool) and kind == "string_type":
        key = ".".join(str(part) for part in error["loc"])
        return (f"; YAML reads an unquoted yes/no/on/off/true/false as a boolean: quote the word you meant (with "
                f"dvc exp run: -S \"{key}='no'\")")
    if isinstance(found, bool):
        return "; YAML read a boolean (true/false/yes/no/on/off): write a number"
    if isinstance(found, (int, float)) and kind == "string_type":
        return f"; quote it if you meant the text: '{found}'"
    if isinstance(found, float) and kind == "int_type":
        return "; write a whole number"
    return ""


_NAMED_KEY = re.compile(r"\b([a-z_0-9]+(?:\.[a-z_0-9]+)+)\b")


def _named_key_position(error: dict, positions: Positions) -> tuple[int, int] | None:
    """Where the first params key a cross-field message names (``mitigate.post_on names ...``) sits, if written."""
    if error["type"] != "value_error":
        return None
    for match in _NAMED_KEY.finditer(error["msg"]):
        place = positions.get(tuple(match.group(1).split(".")))
        if place is not None:
            return place
    return None


def _format_error(error: dict, source: str = "params.yaml", positions: Positions | None = None) -> str:
    where = _named_key_position(error, positions or {}) or position_of(error["loc"], positions or {})
    prefix = f"{source}:{where[0]}:{where[1]}:" if where else f"{source}:"
    key = ".".join(str(part) for part in error["loc"] if part != "[key]") or source
    found = error.get("input")
    if error["type"] == "extra_forbidden":
        return f"{prefix} unknown key '{key}' (found {found!r}); remove it or fix its spelling"
    if error["type"] == "missing":
        return f"{prefix} missing key '{key}'"
    if error["type"] == "model_type":  # a section written as something else than its keys
        if found is None:
            return (f"{prefix} section '{key}' is empty (nothing indented below it); write its keys below it, or "
                    f"remove the line to use its defaults")
        return f"{prefix} section '{key}' must be a mapping of its keys, found {found!r}; write its keys below it"
    if error["type"] == "string_too_short":
        return f"{prefix} '{key}' is an empty text; write a value, or remove the key for its default"
    message = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:
        return f"{prefix} {message}"
    if error["type"] == "value_error":  # a cross-field check: the message names the values itself
        return f"{prefix} '{key}': {message}"
    message = message.replace("Input should be", "expected").replace("Input should", "expected to")
    return f"{prefix} '{key}': {message}; found {found!r}{_hint(error)}"


def parse_params(raw: dict, *, source: str = "params.yaml", positions: Positions | None = None) -> Params:
    """Validate a params mapping; raise :class:`FairquantError` naming the first bad key (in ``source``, at its line
    when ``positions`` says where each key sits)."""
    if not isinstance(raw, dict):
        raise FairquantError(f"{source}: expected a mapping of sections, found {type(raw).__name__}")
    raw = copy.deepcopy(raw)
    for _ in range(MAX_WHOLE_FLOATS):
        try:
            return Params.model_validate(raw)
        except ValidationError as exc:
            if not _whole_floats_to_ints(raw, exc.errors()):
                raise FairquantError(_format_error(exc.errors()[0], source, positions)) from None
    raise FairquantError(f"{source}: more than {MAX_WHOLE_FLOATS} whole numbers written as decimals (4.0); write them "
                         f"without the decimal point")


MAX_WHOLE_FLOATS = 64


def _whole_floats_to_ints(raw: dict, errors: list[dict]) -> bool:
    """A whole float (4.0) where an integer is expected becomes that integer, in place (``dvc exp run -S`` and
    hand edits write them); True when any did. 4.5 stays, refused with 'write a whole number'."""
    changed = False
    for error in errors:
        found, loc = error.get("input"), error["loc"]
        if error["type"] != "int_type" or not isinstance(found, float) or not found.is_integer():
            continue
        try:
            container = raw
            for part in loc[:-1]:
                container = container[part]
            if container[loc[-1]] is found:
                container[loc[-1]] = int(found)
                changed = True
        except (KeyError, IndexError, TypeError):  # a union's branch name in loc: not a path into the mapping
            continue
    return changed


def load_params(path: str | Path = "params.yaml") -> Params:
    """The params file, validated: its errors name the file as given and the line of the key at fault."""
    raw, positions = read_params_file(Path(path))
    return parse_params(raw, source=str(path), positions=positions)
