"""Class datasets in torchvision's raw formats (MNIST and Fashion-MNIST IDX files, CIFAR-10 and CIFAR-100 python
pickles): the class is the target, and can be the group. Every file is checked against its format (magic number,
shape, counts, label range) and refused in one line naming it."""

from __future__ import annotations

import gzip
import pickle
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from fairquant.data.loaders import RawDataset, _assemble, _require, reader
from fairquant.data.paths import real_root, require_inside
from fairquant.errors import FairquantError
from fairquant.params import DataParams

# --- MNIST / Fashion-MNIST / CIFAR-10 in torchvision's raw formats ------------------------------------

def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes with ``ndim`` dimensions (3: images, 1: labels), plain or gzipped."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError; a cut .gz ends early
        raise FairquantError(f"{path}: cannot be read ({exc}); the file is damaged: download it again") from None
    magic = int.from_bytes(data[:4], "big")
    if len(data) < 4 or magic >> 8 != 0x08:
        raise FairquantError(f"{path}: not an IDX file of unsigned bytes (magic {magic:#x}, expected 0x8{ndim:02x}); "
                             f"download the original file again")
    if magic & 0xFF != ndim:
        raise FairquantError(f"{path}: an IDX file of {magic & 0xFF} dimensions, expected {ndim} "
                             f"({'images' if ndim == 3 else 'labels'}); the images and labels files are swapped or "
                             f"not MNIST's")
    if len(data) < 4 + 4 * ndim:
        raise FairquantError(f"{path}: the IDX header is cut short ({len(data)} bytes); the file is truncated: "
                             f"download it again")
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    try:
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except ValueError:
        raise FairquantError(f"{path}: header says shape {shape} but the file holds {len(data)} bytes; "
                             f"the file is truncated or damaged: download it again") from None


def _idx_file(raw: Path, stem: str, base: Path) -> Path:
    """The IDX file ``stem`` (plain or .gz) in ``raw``, resolved inside the resolved dataset root ``base``."""
    for candidate in (raw / stem, raw / f"{stem}.gz"):
        if candidate.exists():
            return require_inside(base, candidate, str(candidate), candidate.name)
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
    base = real_root(root)
    images = {"train": _idx_file(raw, "train-images-idx3-ubyte", base),
              "test": _idx_file(raw, "t10k-images-idx3-ubyte", base)}
    labels = {"train": _idx_file(raw, "train-labels-idx1-ubyte", base),
              "test": _idx_file(raw, "t10k-labels-idx1-ubyte", base)}
    images = {k: _read_idx(v, 3) for k, v in images.items()}
    labels = {k: _read_idx(v, 1) for k, v in labels.items()}
    for split in ("train", "test"):
        if labels[split].ndim != 1 or len(labels[split]) != len(images[split]):
            raise FairquantError(f"{raw}: {split} has {len(images[split])} images but labels of shape "
                                 f"{labels[split].shape}; the IDX files do not match: download both again")
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


def _read_cifar_pickle(path: Path, what: str, base: Path) -> dict:
    """The dict a CIFAR pickle holds; ``path`` must resolve inside the resolved dataset root ``base``."""
    resolved = require_inside(base, _require(path, what), str(path), path.name)
    with open(resolved, "rb") as handle:
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


def _read_cifar_batch(path: Path, label_key: str = "labels", what: str = "CIFAR-10 python batch", *,
                      base: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 32 x 32 x 3, labels) of one batch; ``base`` is the resolved dataset root (the batch's own
    folder by default)."""
    batch = _read_cifar_pickle(path, what, base or real_root(path.parent))
    if "data" not in batch or label_key not in batch:
        raise FairquantError(f"{path}: not a {what} (no 'data' or {label_key!r} entry)")
    try:
        data = _pixel_bytes(np.asarray(batch["data"]), path, what).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.asarray(batch[label_key])
    except (ValueError, TypeError) as exc:
        raise FairquantError(f"{path}: not a {what} ({exc})") from None
    if labels.size and labels.dtype.kind not in "iu":  # floats would be truncated to a wrong class silently
        raise FairquantError(f"{path}: {label_key} are {labels.dtype}, not integer class indices; not a {what}")
    labels = labels.astype(np.int64)
    if labels.shape != (len(data),):
        raise FairquantError(f"{path}: {len(data)} images but {labels.size} labels; the file is damaged")
    return data, labels


def _pixel_bytes(data: np.ndarray, path: Path, what: str) -> np.ndarray:
    """CIFAR's pixels as uint8, refused when they are not integers 0..255 (a cast would wrap or truncate them)."""
    if data.size and data.dtype.kind not in "iu":
        raise FairquantError(f"{path}: 'data' holds {data.dtype} values, not 8-bit pixels; not a {what}: download it "
                             f"again")
    if data.size and (data.min() < 0 or data.max() > 255):
        raise FairquantError(f"{path}: 'data' holds values {data.min()}..{data.max()}, outside the pixels' 0..255; "
                             f"not a {what}: download it again")
    return data.astype(np.uint8)


def _check_label_range(labels: dict[str, np.ndarray], classes: list[str], source: Path) -> None:
    for name, values in labels.items():
        if values.size and (values.min() < 0 or values.max() >= len(classes)):
            raise FairquantError(f"{source}: {name} labels outside 0..{len(classes) - 1}; the files are damaged")


@reader("cifar10")
def load_cifar10(root: Path, params: DataParams) -> RawDataset:
    folder = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    base = real_root(root)
    train = [_read_cifar_batch(folder / f"data_batch_{i}", base=base) for i in range(1, 6)]
    test_x, test_y = _read_cifar_batch(folder / "test_batch", base=base)
    images = {"train": np.concatenate([x for x, _ in train]), "test": test_x}
    labels = {"train": np.concatenate([y for _, y in train]), "test": test_y}
    _check_label_range(labels, CIFAR10_CLASSES, folder)
    return _class_dataset(images, labels, CIFAR10_CLASSES, params)


@reader("cifar100")
def load_cifar100(root: Path, params: DataParams) -> RawDataset:
    """CIFAR-100 as torchvision ships it: ``cifar-100-python/{train,test,meta}``; the class is the fine label
    (100 classes) or, with data.cifar100_labels: coarse, the 20 superclasses."""
    folder = root / "cifar-100-python" if (root / "cifar-100-python").is_dir() else root
    what, base = "CIFAR-100 python file", real_root(root)
    meta = _read_cifar_pickle(folder / "meta", what, base)
    names_key = f"{params.cifar100_labels}_label_names"
    if names_key not in meta:
        raise FairquantError(f"{folder / 'meta'}: no {names_key!r} entry; not CIFAR-100's meta file")
    classes = [_text(name) for name in meta[names_key]]
    if len(set(classes)) != len(classes):
        raise FairquantError(f"{folder / 'meta'}: {names_key} repeats a name; not CIFAR-100's meta file")
    label_key = f"{params.cifar100_labels}_labels"
    train_x, train_y = _read_cifar_batch(folder / "train", label_key, what, base=base)
    test_x, test_y = _read_cifar_batch(folder / "test", label_key, what, base=base)
    labels = {"train": train_y, "test": test_y}
    _check_label_range(labels, classes, folder)
    return _class_dataset({"train": train_x, "test": test_x}, labels, classes, params)
