"""Tiny datasets in their real on-disk formats (UTKFace's file names, FairFace's CSVs, MNIST's IDX files, CIFAR's
pickles, a labelled folder), for the datasets' troubleshooting catalogue."""

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def write_jpg(path: Path, colour=(120, 90, 70), size=(12, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 40), ("t10k", 20)):
        labels = np.arange(n) % 10
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", np.repeat(labels[:, None, None] * 20, 28, 1).repeat(28, 2))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", labels)


def write_utkface(root: Path) -> None:
    for i in range(60):  # 60: with data.seed 0, every race has a test sample
        write_jpg(root / "UTKFace" / f"{20 + i}_{i % 2}_{i % 5}_201701{i:02d}.jpg.chip.jpg", (5 * i, 80, 80))


FAIRFACE_RACES = ["White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern"]


def write_fairface(root: Path) -> None:
    for name, n in (("train", 28), ("val", 14)):
        for i in range(n):
            write_jpg(root / name / f"{i + 1}.jpg", (5 * i, 60, 90))
        frame = pd.DataFrame({"file": [f"{name}/{i + 1}.jpg" for i in range(n)], "age": ["20-29"] * n,
                              "gender": ["Male", "Female"] * (n // 2),
                              "race": [FAIRFACE_RACES[i % 7] for i in range(n)],
                              "service_test": ["True"] * n})
        frame.to_csv(root / f"fairface_label_{name}.csv", index=False)


def write_folder(root: Path) -> None:
    rows = []
    for i in range(24):
        write_jpg(root / "images" / f"{i:03d}.jpg", (10 * i, 50, 50))
        rows.append({"file": f"images/{i:03d}.jpg", "label": str(i % 2), "group": "ab"[(i // 2) % 2],
                     "split": ("train", "train", "val", "test")[(i // 4) % 4 if i < 16 else i % 4]})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)


def write_cifar(root: Path, source: str) -> None:
    from tests.test_multiclass_data import write_cifar10, write_cifar100

    if source == "cifar10":
        write_cifar10(root, np.arange(50) % 10, np.arange(20) % 10)
    else:
        write_cifar100(root, per_class_train=5, per_class_test=1)
