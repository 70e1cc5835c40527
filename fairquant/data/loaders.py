"""Loaders for real on-disk dataset layouts, all returning one :class:`RawDataset` shape.

Each loader reads the layout exactly as the dataset ships it (no conversion step for the user), resolves
the target and protected attributes named in params, and says which file is missing when the layout is
wrong. Images are not decoded here: ``prepare`` decodes each one once.

Each reader registers itself under the ``data.source`` names it reads (``@reader("utkface")``);
:func:`load_dataset` looks the source up, and a source without a reader is an error, never a fallback.
"""

from __future__ import annotations

import gzip
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

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


def _check_attribute(name: str, valid: list[str], role: str) -> None:
    if name not in valid:
        raise FairquantError(f"unknown {role} attribute '{name}'; valid attributes: {', '.join(valid)}")


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


# --- CelebA (and the generated default, written in the same layout) ---------------------------------

def _celeba_value_names(attribute: str) -> tuple[str, str]:
    return ("Male", "Female") if attribute == "Male" else (attribute, f"not {attribute}")


@reader("synthetic", "celeba")
def load_celeba(root: Path, params: DataParams) -> RawDataset:
    """CelebA: ``img_align_celeba/``, ``list_attr_celeba.txt`` (count, names, -1/1), ``list_eval_partition.txt``.

    torchvision's ``CelebA`` checks MD5 sums of the official files, so a copy re-encoded elsewhere (or the
    generated default) would be refused; this parser reads the same files without that check.
    """
    images = _require(root / "img_align_celeba", "CelebA image folder img_align_celeba/")
    attr_path = _require(root / "list_attr_celeba.txt", "CelebA attribute file")
    part_path = _require(root / "list_eval_partition.txt", "CelebA partition file")
    lines = attr_path.read_text().splitlines()
    if len(lines) < 3 or not lines[0].strip().isdigit():
        raise FairquantError(f"{attr_path}: expected a count line, an attribute-name line and one row per image")
    names = lines[1].split()
    rows = [line.split() for line in lines[2:] if line.strip()]
    if len(rows) != int(lines[0]) or any(len(r) != len(names) + 1 for r in rows):
        raise FairquantError(f"{attr_path}: count line says {lines[0].strip()} images of {len(names)} attributes, "
                             f"rows do not match; the file is truncated or not CelebA's")
    attrs = pd.DataFrame([r[1:] for r in rows], columns=names, index=[r[0] for r in rows]).astype(int)
    partition = pd.read_csv(part_path, sep=r"\s+", header=None, names=["file", "part"], index_col="file")
    missing = attrs.index.difference(partition.index)
    if len(missing):
        raise FairquantError(f"{part_path}: no partition for {len(missing)} images (first: {missing[0]})")
    _check_attribute(params.target, names, "target")
    for name in params.protected:
        _check_attribute(name, names, "protected")
    frame = pd.DataFrame({"sample_id": attrs.index, "split": [SPLITS[p] for p in partition.loc[attrs.index, "part"]]})
    for name in {params.target, *params.protected}:
        yes, no = _celeba_value_names(name)
        frame[name] = np.where(attrs[name].to_numpy() == 1, yes, no)
    natural = {name: _celeba_value_names(name)[0] for name in names}
    order = {name: list(reversed(_celeba_value_names(name))) for name in names}  # -1 then 1: class 1 = binary's 1
    table, classes = _assemble(frame, params, names, natural, order)
    return RawDataset(table, paths=[images / f for f in attrs.index], classes=classes)


# --- UTKFace ------------------------------------------------------------------------------------------

UTK_NAME = re.compile(r"^(\d+)_([01])_([0-4])_(\d+)\.jpg\.chip\.jpg$")
UTK_GENDERS = ("Male", "Female")
UTK_RACES = ("White", "Black", "Asian", "Indian", "Others")
AGE_BINS = [0, 20, 40, 60, 200]
AGE_LABELS = ["0-19", "20-39", "40-59", "60+"]


@reader("utkface")
def load_utkface(root: Path, params: DataParams) -> RawDataset:
    """UTKFace: ``[age]_[gender]_[race]_[date].jpg.chip.jpg``; gender 0 male / 1 female; race 0-4."""
    folder = root / "UTKFace" if (root / "UTKFace").is_dir() else _require(root, "UTKFace folder")
    files = sorted(folder.glob("*.jpg"))
    if not files:
        raise FairquantError(f"{folder}: no *.jpg.chip.jpg images; point data.root at the UTKFace folder")
    parsed, malformed = [], 0
    for path in files:
        match = UTK_NAME.match(path.name)
        if match is None:
            malformed += 1
            continue
        age, gender, race, _ = match.groups()
        parsed.append((path, int(age), UTK_GENDERS[int(gender)], UTK_RACES[int(race)]))
    if not parsed:
        raise FairquantError(f"{folder}: no file name matches age_gender_race_date.jpg.chip.jpg")
    frame = pd.DataFrame(parsed, columns=["path", "age", "gender", "race"])
    frame["age_group"] = pd.cut(frame["age"], AGE_BINS, right=False, labels=AGE_LABELS).astype(str)
    frame["sample_id"] = [p.name for p in frame["path"]]
    frame["split"] = _random_split(len(frame), params.val_share, 0.2, params.seed)
    table, classes = _assemble(frame, params, ["age", "age_group", "gender", "race"], {"gender": "Female"},
                               {"race": list(UTK_RACES), "gender": list(UTK_GENDERS), "age_group": AGE_LABELS})
    return RawDataset(table, paths=list(frame["path"]), skipped={"malformed_names": malformed}, classes=classes)


# --- FairFace -----------------------------------------------------------------------------------------

FAIRFACE_AGES = ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70"]
FAIRFACE_RACES = ["White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern"]
FAIRFACE_GENDERS = ["Male", "Female"]  # the order of FairFace's released model's heads

@reader("fairface")
def load_fairface(root: Path, params: DataParams) -> RawDataset:
    """FairFace: ``fairface_label_{train,val}.csv`` with ``file,age,gender,race,service_test``.

    The official val split is the test split here; validation is held out of the train CSV.
    """
    frames = []
    for csv_name, split in (("fairface_label_train.csv", "train"), ("fairface_label_val.csv", "test")):
        frame = pd.read_csv(_require(root / csv_name, "FairFace label file"))
        expected = {"file", "age", "gender", "race"}
        if not expected <= set(frame.columns):
            raise FairquantError(f"{root / csv_name}: expected columns file,age,gender,race,service_test; "
                                 f"found {','.join(frame.columns)}")
        frame["split"] = split
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    is_train = frame["split"] == "train"
    frame.loc[is_train, "split"] = _random_split(int(is_train.sum()), params.val_share, 0.0, params.seed)
    frame["sample_id"] = frame["file"]
    paths = [root / f for f in frame["file"]]
    table, classes = _assemble(frame, params, ["age", "gender", "race"], {"gender": "Female"},
                               {"age": FAIRFACE_AGES, "race": FAIRFACE_RACES, "gender": FAIRFACE_GENDERS})
    return RawDataset(table, paths=paths, classes=classes)


# --- MNIST / Fashion-MNIST / CIFAR-10 in torchvision's raw formats ------------------------------------

def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    magic = int.from_bytes(data[:4], "big")
    if magic >> 8 != 0x08:
        raise FairquantError(f"{path}: not an IDX file of unsigned bytes (magic {magic:#x})")
    ndim = magic & 0xFF
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    try:
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except ValueError:
        raise FairquantError(f"{path}: header says shape {shape} but the file holds {len(data)} bytes; "
                             f"the file is truncated") from None


def _idx_file(raw: Path, stem: str) -> Path:
    for candidate in (raw / stem, raw / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    raise FairquantError(f"{raw / stem}: missing (IDX file, plain or .gz); check data.root")


MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _class_dataset(images: dict[str, np.ndarray], labels: dict[str, np.ndarray], classes: list[str],
                   params: DataParams) -> RawDataset:
    """The class ('class') is the target: multi-class (data.task: multiclass) or, through data.positive, binary;
    listed in data.protected it is also the group (class as the group)."""
    outside = [c for c in params.minority_classes if not 0 <= c < len(classes)]
    if outside:
        raise FairquantError(f"data.minority_classes lists {outside[0]}, but {params.source} has classes "
                             f"0..{len(classes) - 1}; list class indices of the dataset")
    rng = np.random.default_rng(params.seed)
    # drawn before the imbalance: the imbalanced ("unfair") set is the balanced one minus minority images
    train_split = np.where(rng.random(labels["train"].size) < params.val_share, "val", "train")
    train_keep = np.ones(labels["train"].size, dtype=bool)
    if params.class_imbalance < 1:
        for c in params.minority_classes:
            idx = np.flatnonzero(labels["train"] == c)
            drop = rng.permutation(idx)[round(idx.size * params.class_imbalance):]
            train_keep[drop] = False
    parts, arrays = [], []
    for split_name, keep, splits in (("train", train_keep, train_split), ("test", None, None)):
        y = labels[split_name] if keep is None else labels[split_name][keep]
        x = images[split_name] if keep is None else images[split_name][keep]
        split = np.full(y.size, "test") if splits is None else splits[keep]
        parts.append(pd.DataFrame({"sample_id": [f"{split_name}-{i}" for i in np.flatnonzero(keep) ]
                                   if keep is not None else [f"test-{i}" for i in range(y.size)],
                                   "split": split, "class": [classes[k] for k in y]}))
        arrays.append(x)
    frame = pd.concat(parts, ignore_index=True)
    pixels = np.concatenate(arrays)
    if pixels.ndim == 3:
        pixels = pixels[..., None]
    table, target_classes = _assemble(frame, params, ["class"], {}, {"class": classes}, closed=True)
    return RawDataset(table, arrays=pixels, classes=target_classes)


def load_mnist_like(root: Path, params: DataParams, folder: str, classes: list[str]) -> RawDataset:
    raw = next((p for p in (root / folder / "raw", root / "raw", root) if p.is_dir() and any(p.glob("*idx*"))), None)
    if raw is None:
        raise FairquantError(f"{root}: no {folder}/raw/ folder with IDX files (torchvision's layout); check data.root")
    images = {"train": _idx_file(raw, "train-images-idx3-ubyte"), "test": _idx_file(raw, "t10k-images-idx3-ubyte")}
    labels = {"train": _idx_file(raw, "train-labels-idx1-ubyte"), "test": _idx_file(raw, "t10k-labels-idx1-ubyte")}
    images, labels = {k: _read_idx(v) for k, v in images.items()}, {k: _read_idx(v) for k, v in labels.items()}
    for split in ("train", "test"):
        if labels[split].ndim != 1 or len(labels[split]) != len(images[split]):
            raise FairquantError(f"{raw}: {split} has {len(images[split])} images but labels of shape "
                                 f"{labels[split].shape}; the IDX files do not match")
    _check_label_range(labels, classes, raw)
    return _class_dataset(images, labels, classes, params)


@reader("mnist")
def load_mnist(root: Path, params: DataParams) -> RawDataset:
    return load_mnist_like(root, params, "MNIST", MNIST_CLASSES)


@reader("fashion_mnist")
def load_fashion_mnist(root: Path, params: DataParams) -> RawDataset:
    return load_mnist_like(root, params, "FashionMNIST", FASHION_CLASSES)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles; allow only what they contain (numpy arrays, builtins), never code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")


def _read_cifar_pickle(path: Path, what: str) -> dict:
    with open(_require(path, what), "rb") as handle:
        try:
            batch = _NumpyOnlyUnpickler(handle, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
            raise FairquantError(f"{path}: not a {what} ({exc})") from None
    if not isinstance(batch, dict):
        raise FairquantError(f"{path}: not a {what} (a {type(batch).__name__}, not a dict)")
    return {_text(key): value for key, value in batch.items()}


def _text(value: object) -> str:
    """A name from a CIFAR pickle: str as Python 2 wrote it (read as latin1), or bytes re-pickled by Python 3."""
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def _read_cifar_batch(path: Path, label_key: str = "labels", what: str = "CIFAR-10 python batch"
                      ) -> tuple[np.ndarray, np.ndarray]:
    batch = _read_cifar_pickle(path, what)
    if "data" not in batch or label_key not in batch:
        raise FairquantError(f"{path}: not a {what} (no 'data' or {label_key!r} entry)")
    try:
        data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.asarray(batch[label_key])
    except (ValueError, TypeError) as exc:
        raise FairquantError(f"{path}: not a {what} ({exc})") from None
    if labels.size and labels.dtype.kind not in "iu":  # floats would be truncated to a wrong class silently
        raise FairquantError(f"{path}: {label_key} are {labels.dtype}, not integer class indices; not a {what}")
    labels = labels.astype(np.int64)
    if labels.shape != (len(data),):
        raise FairquantError(f"{path}: {len(data)} images but {labels.size} labels; the file is damaged")
    return data, labels


def _check_label_range(labels: dict[str, np.ndarray], classes: list[str], source: Path) -> None:
    for name, values in labels.items():
        if values.size and (values.min() < 0 or values.max() >= len(classes)):
            raise FairquantError(f"{source}: {name} labels outside 0..{len(classes) - 1}; the files are damaged")


@reader("cifar10")
def load_cifar10(root: Path, params: DataParams) -> RawDataset:
    folder = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    train = [_read_cifar_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
    test_x, test_y = _read_cifar_batch(folder / "test_batch")
    images = {"train": np.concatenate([x for x, _ in train]), "test": test_x}
    labels = {"train": np.concatenate([y for _, y in train]), "test": test_y}
    _check_label_range(labels, CIFAR10_CLASSES, folder)
    return _class_dataset(images, labels, CIFAR10_CLASSES, params)


@reader("cifar100")
def load_cifar100(root: Path, params: DataParams) -> RawDataset:
    """CIFAR-100 as torchvision ships it: ``cifar-100-python/{train,test,meta}``; the class is the fine label
    (100 classes) or, with data.cifar100_labels: coarse, the 20 superclasses."""
    folder = root / "cifar-100-python" if (root / "cifar-100-python").is_dir() else root
    what = "CIFAR-100 python file"
    meta = _read_cifar_pickle(folder / "meta", what)
    names_key = f"{params.cifar100_labels}_label_names"
    if names_key not in meta:
        raise FairquantError(f"{folder / 'meta'}: no {names_key!r} entry; not CIFAR-100's meta file")
    classes = [_text(name) for name in meta[names_key]]
    if len(set(classes)) != len(classes):
        raise FairquantError(f"{folder / 'meta'}: {names_key} repeats a name; not CIFAR-100's meta file")
    label_key = f"{params.cifar100_labels}_labels"
    train_x, train_y = _read_cifar_batch(folder / "train", label_key, what)
    test_x, test_y = _read_cifar_batch(folder / "test", label_key, what)
    labels = {"train": train_y, "test": test_y}
    _check_label_range(labels, classes, folder)
    return _class_dataset({"train": train_x, "test": test_x}, labels, classes, params)


def load_dataset(params: DataParams) -> RawDataset:
    """Read the dataset named by ``data.source`` at ``data.root``."""
    if params.source not in READERS:
        raise FairquantError(f"data.source {params.source!r} has no reader; known sources: {', '.join(READERS)}")
    root = Path(params.root)
    if not root.exists():
        raise FairquantError(f"{root}: dataset root not found; set data.root in params.yaml "
                             f"(the default 'data/raw/synthetic' is written by the generate stage)")
    return READERS[params.source](root, params)


# Readers in their own modules register on import; importing them here fills READERS wherever load_dataset is used.
from fairquant.data import folder as _folder_reader  # noqa: F401  (data.source: folder)
