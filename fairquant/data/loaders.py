"""Loaders for real on-disk dataset layouts, all returning one :class:`RawDataset` shape.

Each loader reads the layout exactly as the dataset ships it (no conversion step for the user), resolves
the target and protected attributes named in params, and says which file is missing when the layout is
wrong. Images are not decoded here: ``prepare`` decodes each one once.

Each reader registers itself under the ``data.source`` names it reads (``@reader("utkface")``);
:func:`load_dataset` looks the source up, and a source without a reader is an error, never a fallback. This module
is the shared ground (the dataset shape, the registry, target and attribute resolution); each layout's reader lives
in its own module: ``celeba``, ``utkface``, ``fairface``, ``folder`` and ``class_datasets`` (MNIST, CIFAR).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fairquant.data.paths import require_inside
from fairquant.errors import FairquantError
from fairquant.params import DataParams

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class RawDataset:
    """Samples with split, target and protected attributes (as readable strings).

    Images are either ``paths`` (files to decode) or ``arrays`` (uint8 N x H x W x C, for datasets
    that ship pixels in one file). ``skipped`` counts entries dropped for malformed metadata.
    ``classes`` names the multi-class target's values in label order (``y_true`` indexes it); None for a
    binary target (``y_true`` is 1 for a positive value). ``synthetic`` marks generated data whose source name
    does not say so (the generated folder twin read by ``data.source: folder``).
    """

    table: pd.DataFrame  # sample_id, split, y_true, one column per protected attribute
    paths: list[Path] | None = None
    arrays: np.ndarray | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    classes: list[str] | None = None
    synthetic: bool = False


Reader = Callable[[Path, DataParams], RawDataset]  # (data.root, data) -> the dataset
READERS: dict[str, Reader] = {}  # data.source -> its reader


def reader(*sources: str):
    """Register the decorated function as the reader of each ``data.source`` in ``sources``."""
    def register(function: Reader) -> Reader:
        for source in sources:
            if source in READERS:
                raise ValueError(f"data.source {source!r} has two readers")
            READERS[source] = function
        return function
    return register


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FairquantError(f"{path}: missing ({what}); check data.root and data.source in params.yaml")
    return path


def _inside(base: Path, path: Path) -> Path:
    """A file the reader opens (a label list, a table), refused when it resolves outside the resolved root
    ``base``; returned as named (messages keep the name the user knows)."""
    require_inside(base, path, str(path), path.name)
    return path


def _check_attribute(name: str, valid: list[str], role: str) -> None:
    if name not in valid:
        raise FairquantError(f"unknown {role} attribute '{name}'; valid attributes: {', '.join(valid)}")


# How a missing value reads once made text: pandas' default NA strings (read_csv's na_values), compared in lower case,
# plus 'nat'. A real category spelled like one of them must be renamed: its name cannot be told from a gap.
NULL_TEXTS = frozenset({"", "#n/a", "#n/a n/a", "#na", "-1.#ind", "-1.#qnan", "-nan", "1.#ind", "1.#qnan", "<na>",
                        "n/a", "na", "null", "nan", "none", "nat"})
RENAME_HINT = "a category really named like a missing value (None, NA, null) must be renamed in the labels"


def null_like(values: pd.Series) -> np.ndarray:
    """Where ``values`` hold a missing value: NaN/None, or a text that reads as one (:data:`NULL_TEXTS`)."""
    text = values.map(lambda value: "" if pd.isna(value) else str(value).strip().lower())
    return text.isin(NULL_TEXTS).to_numpy()


def _refuse_null_target(frame: pd.DataFrame, name: str) -> None:
    """A missing target value is no class, and not the negative one either (a binary target would read it as 0)."""
    missing = null_like(frame[name])
    if missing.any():
        first = frame["sample_id"].iloc[int(np.flatnonzero(missing)[0])]
        raise FairquantError(missing_values("the target", int(missing.sum()), len(frame), first, "class"))


def missing_values(what: str, count: int, total: int, first, noun: str) -> str:
    """The one message for missing labels: ``what`` is empty in ``count`` of ``total`` samples; it is no ``noun``."""
    return (f"{what} is empty (null) in {count} of {total} samples (first: {first}); fill the value in the dataset's "
            f"labels or drop those rows: a missing value is not a {noun} ({RENAME_HINT})")


MAX_CLASSES = 32767  # y_true is int16 for a multi-class target


def _binary_target(values: pd.Series, name: str, positive: list[str] | None, natural: str | None) -> np.ndarray:
    """1 where the target value is positive. ``natural`` is the positive value of an already binary attribute."""
    values = values.astype(str)
    if positive is None:
        if natural is None:
            raise FairquantError(
                f"target '{name}' is not binary; set data.positive to the values counted as positive, or "
                f"data.task: multiclass (found values: {', '.join(sorted(values.unique())[:12])})")
        positive = [natural]
    unknown = sorted(set(positive) - set(values.unique()))
    if unknown:
        raise FairquantError(f"data.positive {unknown} never occurs in target '{name}'; "
                             f"found values: {', '.join(sorted(values.unique())[:12])}")
    return values.isin(positive).to_numpy().astype(np.int8)


def _class_target(values: pd.Series, name: str, order: list[str] | None, closed: bool = False
                  ) -> tuple[np.ndarray, list[str]]:
    """Each row's class index and the class names: ``order`` (the dataset's own label order) when the dataset
    has one, else the values sorted (numerically when every value is a number). A ``closed`` order (a class
    dataset's label list) is kept whole, so the class index is the dataset's label even where a class has no
    image (prepare then refuses the class that has no training image)."""
    values = values.astype(str)
    found = sorted(values.unique(), key=lambda v: (0, float(v), v) if _is_number(v) else (1, 0.0, v))
    if order is None:
        classes = found
    else:
        classes = [c for c in order if closed or c in set(found)] + [c for c in found if c not in order]
    if len(classes) < 2:
        raise FairquantError(f"target '{name}' has only the value {found[0]!r}; a multi-class target needs at "
                             f"least two values (check data.target)")
    if len(classes) > MAX_CLASSES:
        raise FairquantError(f"target '{name}' has {len(classes)} values, more than the {MAX_CLASSES} classes "
                             f"fairquant supports; choose another data.target")
    lookup = {c: k for k, c in enumerate(classes)}
    return values.map(lookup).to_numpy().astype(np.int16), classes


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _assemble(frame: pd.DataFrame, params: DataParams, valid: list[str], natural_positive: dict[str, str],
              class_order: dict[str, list[str]] | None = None, closed: bool = False
              ) -> tuple[pd.DataFrame, list[str] | None]:
    """The samples table (sample_id, split, y_true, protected columns) and, for a multi-class target, its class
    names. ``natural_positive`` names the positive value of already binary attributes; ``class_order`` the
    dataset's own label order of categorical ones (``closed``: kept whole, see :func:`_class_target`)."""
    _check_attribute(params.target, valid, "target")
    for name in params.protected:
        _check_attribute(name, valid, "protected")
    table = pd.DataFrame({"sample_id": frame["sample_id"].astype(str), "split": frame["split"].astype(str)})
    _refuse_null_target(frame, params.target)
    classes = None
    if params.task == "multiclass":
        table["y_true"], classes = _class_target(frame[params.target], params.target,
                                                 (class_order or {}).get(params.target), closed)
    else:
        table["y_true"] = _binary_target(frame[params.target], params.target, params.positive,
                                         natural_positive.get(params.target))
    for name in params.protected:
        table[name] = frame[name].astype(str).to_numpy()
    return table.reset_index(drop=True), classes


def _random_split(n: int, val_share: float, test_share: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    return np.where(u < test_share, "test", np.where(u < test_share + val_share, "val", "train"))

def _present(paths: list[Path], names: list[str], wheres: list[str]) -> list[Path]:
    """``paths``, refused with the first missing one named (an incomplete copy is not read as corrupt files)."""
    missing = [k for k, path in enumerate(paths) if not path.is_file()]
    if missing:
        first = missing[0]
        raise FairquantError(f"{wheres[first]}: image {names[first]!r} is missing ({len(missing)} of {len(paths)} "
                             f"listed images are); the copy is incomplete: restore them from the dataset's archive")
    return paths


def load_dataset(params: DataParams) -> RawDataset:
    """Read the dataset named by ``data.source`` at ``data.root``."""
    if params.source not in READERS:
        raise FairquantError(f"data.source {params.source!r} has no reader; known sources: {', '.join(sorted(READERS))}")
    root = Path(params.root)
    if not root.exists():
        raise FairquantError(f"{root}: dataset root not found; set data.root in params.yaml "
                             f"(the default 'data/raw/synthetic' is written by the generate stage)")
    return READERS[params.source](root, params)


# Readers in their own modules register on import; importing them here fills READERS wherever load_dataset is used.
from fairquant.data import celeba as _celeba_reader  # noqa: F401, I001  (data.source: synthetic, celeba)
from fairquant.data import utkface as _utkface_reader  # noqa: F401  (data.source: utkface)
from fairquant.data import fairface as _fairface_reader  # noqa: F401  (data.source: fairface)
from fairquant.data import folder as _folder_reader  # noqa: F401  (data.source: folder)
from fairquant.data.class_datasets import (  # noqa: F401  (mnist, fashion_mnist, cifar10, cifar100)
    CIFAR10_CLASSES,
    FASHION_CLASSES,
    MNIST_CLASSES,
    _read_cifar_batch,
)
