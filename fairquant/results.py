"""Typed records of the study's result files: a predictions folder's ``info.json`` and one variant's evaluation
(``metrics/eval/s<seed>/<slot>.json``).

Each reads from and writes to the dict that :func:`fairquant.io.write_json` stores, with the same keys in the same
order, so reading a file and writing it back gives the same bytes. What differs by compressor or remedy (a
variant's ``details``, the fairness metrics block, paired comparisons, the constraint record) stays an open dict:
those have no one schema to type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fairquant.errors import FairquantError
from fairquant.io import read_json, require_object, write_json


def _check_keys(data: dict, required: tuple[str, ...], optional: tuple[str, ...], what: str) -> None:
    missing = [key for key in required if key not in data]
    unknown = [key for key in data if key not in required + optional]
    if missing or unknown:
        found = ", ".join(filter(None, [missing and f"missing {missing}", unknown and f"unknown {unknown}"]))
        raise FairquantError(f"{what}: {found}; expected the keys {list(required + optional)}: re-run the stage "
                             f"that writes it")


def _check_types(data: dict, types: dict[str, type], what: str) -> None:
    """Each present key holds a value of its type (a bool is not an int here: JSON keeps them apart)."""
    for key, expected in types.items():
        value = data.get(key)
        if key in data and (not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool)):
            raise FairquantError(f"{what}: '{key}' should be {expected.__name__}, found {value!r}; re-run the stage "
                                 "that writes it")


@dataclass(frozen=True, kw_only=True)
class PredictionsInfo:
    """``info.json`` of a predictions folder: the variant that predicted, its storage and speed.

    ``details``: the variant's own record (compressor settings, int8 check, training seed, ...), open per
    compressor; a remedy adds ``details["mitigation"]`` (:attr:`mitigation`). ``latency``: per mode, the timing
    record (``median_ms``, ``batch_size``, ...), empty when not measured.
    """

    name: str
    kind: str
    kernels: str
    details: dict[str, Any] = field(default_factory=dict)
    size_bytes: int
    latency: dict[str, dict[str, Any]] = field(default_factory=dict)
    synthetic: bool

    REQUIRED = ("name", "kind", "kernels", "size_bytes", "synthetic")
    OPTIONAL = ("details", "latency")
    TYPES = {"name": str, "kind": str, "kernels": str, "details": dict, "size_bytes": int, "latency": dict,
             "synthetic": bool}

    @property
    def mitigation(self) -> dict[str, Any] | None:
        """The remedy's record (method, family, params; constraint and multipliers where it has them), or None."""
        return self.details.get("mitigation")

    @property
    def post_processed(self) -> bool:
        """Whether a post-processor made these predictions (its labels need not follow its scores)."""
        return (self.mitigation or {}).get("family") == "post-processing"

    @property
    def latency_ms(self) -> dict[str, float]:
        """Median milliseconds per batch, per mode."""
        return {mode: timing["median_ms"] for mode, timing in self.latency.items()}

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "info.json") -> PredictionsInfo:
        require_object(data, source, "re-run the stage that writes it")
        _check_keys(data, cls.REQUIRED, cls.OPTIONAL, source)
        _check_types(data, cls.TYPES, source)
        bad = [mode for mode, timing in data.get("latency", {}).items()
               if not isinstance(timing, dict) or not isinstance(timing.get("median_ms"), (int, float))]
        mitigation = data.get("details", {}).get("mitigation")
        if bad or (mitigation is not None and not isinstance(mitigation, dict)):
            what = f"latency {bad} without a median_ms" if bad else "details.mitigation is not an object"
            raise FairquantError(f"{source}: {what}; re-run the stage that writes it")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "kernels": self.kernels, "details": self.details,
                "size_bytes": self.size_bytes, "latency": self.latency, "synthetic": self.synthetic}

    @classmethod
    def read(cls, folder: str | Path) -> PredictionsInfo:
        """The ``info.json`` of the predictions folder ``folder``."""
        path = Path(folder) / "info.json"
        return cls.from_dict(read_json(path), source=str(path))

    def write(self, folder: str | Path) -> None:
        write_json(Path(folder) / "info.json", self.to_dict())


@dataclass(kw_only=True)
class EvaluationResult:
    """One variant's metrics on the test split (``metrics/eval/s<seed>/<slot>.json``).

    ``metrics``: the fairness metrics block (``n``, ``overall``, ``groups``, ``gaps``, ``worst_group``, ...),
    stored at the top level of the file. ``vs_fp32``: the paired change against fp32 (None for fp32 itself);
    ``baseline`` and ``vs_baseline``: for a remedy, the unmitigated slot it fixes and the paired change against
    it; ``constraint``: for a remedy fine-tuned under a constraint, the constraint on train, validation and test.
    An absent one is left out of the file.
    """

    variant: str
    kind: str
    kernels: str
    details: dict[str, Any]
    split: str = "test"
    synthetic: bool
    protected: list[str]
    size_bytes: int
    latency_ms: dict[str, float]
    metrics: dict[str, Any]
    vs_fp32: dict[str, Any] | None = None
    baseline: str | None = None
    vs_baseline: dict[str, Any] | None = None
    constraint: dict[str, Any] | None = None

    HEAD = ("variant", "kind", "kernels", "details", "split", "synthetic", "protected", "size_bytes", "latency_ms")
    METRICS = ("n", "overall", "groups", "confidence", "bootstrap", "privileged_group", "gaps", "signed", "worst_group",
               "worst_group_accuracy", "collapsed")  # what fairness_metrics always writes
    TAIL = ("vs_fp32", "baseline", "vs_baseline", "constraint")

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "evaluation") -> EvaluationResult:
        """Every key that is neither in :attr:`HEAD` nor in :attr:`TAIL` belongs to the metrics block."""
        require_object(data, source, "re-run evaluate")
        _check_keys({key: data[key] for key in data if key in cls.HEAD + cls.TAIL}, cls.HEAD, cls.TAIL, source)
        metrics = {key: value for key, value in data.items() if key not in cls.HEAD + cls.TAIL}
        lacking = [key for key in cls.METRICS if key not in metrics]
        if lacking or not all(isinstance(metrics[key], dict) for key in ("overall", "groups", "gaps", "signed")):
            raise FairquantError(f"{source}: the metrics block lacks {lacking or 'objects in overall/groups/gaps/signed'}"
                                 "; re-run evaluate (dvc repro -f -s evaluate@<seed>)")
        _check_types(data, {"variant": str, "kind": str, "kernels": str, "details": dict, "split": str,
                            "synthetic": bool, "protected": list, "size_bytes": int, "latency_ms": dict,
                            "n": int, "baseline": str}, source)
        for key in ("vs_fp32", "vs_baseline", "constraint"):
            if data.get(key) is not None and not isinstance(data[key], dict):
                raise FairquantError(f"{source}: {key!r} should be an object, found {data[key]!r}; {_REEVALUATE}")
        check_metric_shapes(metrics, source)
        for key in ("vs_fp32", "vs_baseline"):
            if data.get(key) is not None:
                check_metric_shapes(data[key], source, prefix=f"{key}.")
        return cls(**{key: data[key] for key in cls.HEAD + cls.TAIL if key in data}, metrics=metrics)

    def to_dict(self) -> dict[str, Any]:
        head = {key: getattr(self, key) for key in self.HEAD}
        tail = {key: getattr(self, key) for key in self.TAIL if getattr(self, key) is not None}
        return {**head, **self.metrics, **tail}

    @classmethod
    def read(cls, path: str | Path) -> EvaluationResult:
        return cls.from_dict(read_json(path), source=str(path))

    def write(self, path: str | Path) -> None:
        write_json(path, self.to_dict())


_REEVALUATE = "the file is damaged: re-run evaluate (dvc repro -f -s evaluate@<seed>)"
NUMBER_LEAVES = ("value", "ci_low", "ci_high", "delta", "p_value",  # an estimate's numbers, wherever it stands
                 # the rates, counts and summaries the report prints, wherever they stand (an object under one of
                 # these names, as signed.accuracy, is an estimate and is walked into)
                 "n", "positives", "accuracy", "tpr", "fpr", "selection_rate", "worst_group_accuracy", "confidence",
                 "flip_rate", "flipped", "bootstrap")
INTERVALS = "intervals"  # name -> [low, high], each a number or null
OBJECT_BLOCKS = ("groups", "gaps", "signed", "group_changes")  # name -> an object per metric or group


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def check_metric_shapes(block: dict, source: str, *, prefix: str = "") -> None:
    """The shapes the report reads in a metrics block (or a paired comparison): ``overall`` maps names to numbers
    (or, for a multi-class target, to per-class objects, whose numbers are checked like every other leaf);
    ``groups``, ``gaps``, ``signed`` and ``group_changes`` map names to objects; every estimate's ``value``,
    ``ci_low``, ``ci_high``, ``delta`` and ``p_value`` is a number or null, at any depth. A number where an object
    belongs (or text where a number does) is refused here, in one line, not deep inside a table or a figure."""
    overall = block.get("overall")
    if overall is not None:
        if not isinstance(overall, dict):
            raise FairquantError(f"{source}: '{prefix}overall' should be an object, found {overall!r}; {_REEVALUATE}")
        bad = next((k for k, v in overall.items() if not (_is_number(v) or isinstance(v, dict))), None)
        if bad is not None:
            raise FairquantError(f"{source}: '{prefix}overall.{bad}' should be a number, found {overall[bad]!r}; "
                                 f"{_REEVALUATE}")
    for key in OBJECT_BLOCKS:
        value = block.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise FairquantError(f"{source}: '{prefix}{key}' should be an object, found {value!r}; {_REEVALUATE}")
        bad = next((name for name, entry in value.items() if not isinstance(entry, dict)), None)
        if bad is not None:
            raise FairquantError(f"{source}: '{prefix}{key}.{bad}' should be an object, found {value[bad]!r}; "
                                 f"{_REEVALUATE}")
    _check_leaves(block, source, prefix.rstrip("."))


NONFINITE, NONFINITE_KINDS = "nonfinite", ("inf", "-inf", "undefined")  # fairness/verification.py's names


def _check_leaves(value: Any, source: str, path: str) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            where = f"{path}.{key}" if path else str(key)
            if key in NUMBER_LEAVES and not isinstance(inner, dict) and not _is_number(inner):
                raise FairquantError(f"{source}: '{where}' should be a number, found {inner!r}; {_REEVALUATE}")
            if key == INTERVALS and isinstance(inner, dict):
                _check_intervals(inner, source, where)
                continue
            if key == NONFINITE and isinstance(inner, dict):  # which numbers were inf, -inf or NaN (stored as null)
                bad = next((name for name, kind in inner.items() if kind not in NONFINITE_KINDS), None)
                if bad is not None:
                    raise FairquantError(f"{source}: '{where}.{bad}' should name a non-finite kind "
                                         f"({', '.join(NONFINITE_KINDS)}), found {inner[bad]!r}; {_REEVALUATE}")
                continue
            _check_leaves(inner, source, where)
    elif isinstance(value, list):
        for inner in value:
            _check_leaves(inner, source, path)


def _check_intervals(intervals: dict, source: str, path: str) -> None:
    for name, interval in intervals.items():
        if not (isinstance(interval, list) and len(interval) == 2 and all(map(_is_number, interval))):
            raise FairquantError(f"{source}: '{path}.{name}' should be an interval [low, high] of numbers, found "
                                 f"{interval!r}; {_REEVALUATE}")


def check_verification_metrics(verify: Any, source: str) -> None:
    """The verification branch's metrics (``metrics/verify.json``) in the shapes the report reads: an object with
    ``races`` (a list of names), a number ``confidence``, ``variants`` mapping names to objects that each hold a
    ``summary`` object, ``reference`` one of the variants, and every estimate's numbers numbers."""
    fix = "the file is damaged or not the verification branch's metrics: re-run verify_evaluate (dvc repro)"
    require_object(verify, source, fix)
    variants, races = verify.get("variants"), verify.get("races")
    if not isinstance(variants, dict) or not variants or not all(
            isinstance(r, dict) and isinstance(r.get("summary"), dict) for r in variants.values()):
        raise FairquantError(f"{source}: 'variants' should map each variant to an object with a 'summary'; {fix}")
    if not isinstance(races, list) or not all(isinstance(race, str) for race in races):
        raise FairquantError(f"{source}: 'races' should be a list of race names, found {races!r}; {fix}")
    if not _is_number(verify.get("confidence")) or verify.get("confidence") is None:
        raise FairquantError(f"{source}: 'confidence' should be a number, found {verify.get('confidence')!r}; {fix}")
    if verify.get("reference") not in variants:
        raise FairquantError(f"{source}: 'reference' {verify.get('reference')!r} is not one of its variants; {fix}")
    _check_leaves(variants, source, "variants")


PREDICTION_COLUMNS = ("sample_id", "y_true", "y_score", "y_pred")


def check_label_values(frame, classes: list[str] | None, source: str, fix: str) -> None:
    """``y_true`` and ``y_pred`` hold integer labels: 0/1, or class indices below ``len(classes)`` (scores in
    ``y_pred`` would otherwise be cut to 0 silently)."""
    import pandas as pd

    allowed = range(len(classes)) if classes else (0, 1)
    for column in ("y_true", "y_pred"):
        values = frame[column]
        if not pd.api.types.is_integer_dtype(values) or not values.isin(allowed).all():
            found = sorted(set(values.dropna().tolist()))[:5]
            what = f"class indices 0..{len(classes) - 1}" if classes else "the labels 0 and 1"
            raise FairquantError(f"{source}: {column} must hold {what} as integers, found {values.dtype} {found}; "
                                 f"{fix}")


def check_predictions(frame: Any, *, source: str, protected: list[str], classes: list[str] | None = None,
                      post_processed: bool = False) -> None:
    """A predictions table (``val.parquet`` / ``test.parquet``) as the predict stage writes it: its columns, integer
    labels in range (0/1, or class indices below ``len(classes)``), probabilities in [0, 1] in ``y_score``, no null
    sample id or group, sample ids as strings (the prepared samples' names), no repeated sample id. Scores in
    ``y_pred`` or a NaN score would otherwise be cut or compared silently. Labels agree with scores
    (:func:`check_labels_follow_scores`) unless ``post_processed`` (a post-processor's per-group thresholds or
    randomised labels legitimately differ from its scores)."""
    import numpy as np
    import pandas as pd

    fix = "the file is damaged or from another run: re-run predict (dvc repro)"
    absent = [name for name in (*PREDICTION_COLUMNS, *protected) if name not in frame.columns]
    if absent:
        raise FairquantError(f"{source}: predictions lack the column {absent[0]!r}" +
                             (f" (and {absent[1:]})" if len(absent) > 1 else "") + f"; {fix}")
    check_label_values(frame, classes, source, fix)
    scores = frame["y_score"]
    if not pd.api.types.is_float_dtype(scores) or not bool(np.all((scores.to_numpy() >= 0) & (scores.to_numpy() <= 1))):
        bad = scores[~((scores >= 0) & (scores <= 1))].head(3).tolist() if pd.api.types.is_numeric_dtype(scores) else []
        raise FairquantError(f"{source}: y_score must hold probabilities in [0, 1], found {scores.dtype} "
                             f"{bad or 'non-numbers'}; {fix}")
    for column in ("sample_id", *protected):
        if frame[column].isna().any():
            nulls = int(frame[column].isna().sum())
            raise FairquantError(f"{source}: {column!r} holds null values ({nulls} rows); {fix}")
    ids = frame["sample_id"]
    if not pd.api.types.is_string_dtype(ids):  # an object column counts only when every value is a str
        raise FairquantError(f"{source}: sample_id should hold the prepared samples' names (strings), found "
                             f"{ids.dtype} {ids.head(2).tolist()}; {fix}")
    if frame["sample_id"].duplicated().any():
        first = frame["sample_id"][frame["sample_id"].duplicated()].iloc[0]
        raise FairquantError(f"{source}: sample {first!r} appears more than once; {fix}")
    if not post_processed:
        check_labels_follow_scores(frame, source=source, classes=classes)


SCORE_TOLERANCE = 1e-4  # a multi-class row's probabilities sum to 1 within this; float32 rounding is ~1e-7


def check_labels_follow_scores(frame: Any, *, source: str, classes: list[str] | None) -> None:
    """A model's labels are its scores' labels: binary, ``y_pred`` is ``y_score > 0.5`` (a score within 1e-6 of
    0.5 may fall either side after float32 rounding); multi-class, each ``y_prob`` row (where present) holds one
    finite probability per class summing to 1, ``y_pred`` is its most probable class and ``y_score`` that class's
    probability. Scores and labels from different runs, or one column edited, would otherwise be measured as one."""
    import numpy as np

    fix = "the scores and labels come from different runs or the file was edited: re-run predict (dvc repro)"
    y_pred, scores = frame["y_pred"].to_numpy(), frame["y_score"].to_numpy(dtype=np.float64)
    if not classes:
        wrong = (y_pred != (scores > 0.5)) & (np.abs(scores - 0.5) > 1e-6)
        if wrong.any():
            row = int(np.flatnonzero(wrong)[0])
            raise FairquantError(f"{source}: y_pred {int(y_pred[row])} disagrees with y_score {scores[row]:.4f} "
                                 f"(threshold 0.5) in {int(wrong.sum())} rows, first row {row}; {fix}")
        return
    if "y_prob" not in frame.columns:
        return
    rows = list(frame["y_prob"])
    if not all(row is not None and len(row) == len(classes) for row in rows):
        raise FairquantError(f"{source}: y_prob must hold {len(classes)} probabilities per row (one per class); {fix}")
    probs = np.asarray([np.asarray(row, dtype=np.float64) for row in rows]).reshape(len(rows), len(classes))
    if not np.isfinite(probs).all() or (probs < 0).any() or (
            np.abs(probs.sum(axis=1) - 1) > SCORE_TOLERANCE).any():
        raise FairquantError(f"{source}: y_prob rows must hold finite probabilities summing to 1 (within "
                             f"{SCORE_TOLERANCE:g}); {fix}")
    picked = probs[np.arange(len(rows)), y_pred.astype(np.int64)]
    if (np.abs(picked - scores) > 1e-6).any() or (picked < probs.max(axis=1)).any():
        raise FairquantError(f"{source}: y_pred is not the most probable class of y_prob, or y_score not its "
                             f"probability; {fix}")
