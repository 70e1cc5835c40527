"""Calibration sets any compressor can name, and an estimate of each set's protected-group composition.

- ``train``: random training images (:func:`fairquant.data.prepare.calibration_indices`).
- ``balanced``: equal counts per protected group x label cell, from the training split.
- ``synthetic``: every image in a folder, unlabelled (the StyleGAN faces of "Compressed Models Decompress Race
  Biases"; the default folder holds the generator's unlabelled faces, drawn with another seed and another group mix).
- ``distilled``: data-free, ZeroQ (Cai et al. 2020): inputs optimised so that the statistics they produce at
  every BatchNorm match the fp32 model's running statistics.

No set ever takes a validation or test image: the labelled sets draw from the training split and are checked
(:func:`assert_training_rows`), and a folder image with the pixels of a validation or test image is refused.
The composition of every set is estimated by a group classifier (logistic regression on the fp32 model's
penultimate features) trained on the training split, as "Compressed Models Decompress Race Biases" did for its
synthetic faces; its accuracy on the validation split is reported next to the estimate, and the true mix where
labels exist.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from fairquant.data.prepare import assert_training_rows, decode_image
from fairquant.errors import FairquantError
from fairquant.fairness.metrics import group_labels
from fairquant.io import ImageRows
from fairquant.models import INPUT_MEAN, INPUT_STD, to_input

SETS = ("train", "balanced", "synthetic", "distilled")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}


def cells_of(table: pd.DataFrame, rows: np.ndarray, protected: list[str]) -> np.ndarray:
    """Each row's protected group x label cell: the group label, then the label, e.g. '1 & y=0'."""
    part = table.set_index("row").loc[np.asarray(rows)].reset_index()
    return (pd.Series(group_labels(part, protected)).astype(str) + " & y=" + part["y_true"].astype(str)).to_numpy()


def balanced_rows(table: pd.DataFrame, protected: list[str], size: int, seed: int) -> np.ndarray:
    """``size // cells`` random training images from every protected group x label cell."""
    train_rows = table.loc[table["split"] == "train", "row"].to_numpy()
    cells = cells_of(table, train_rows, protected)
    names, counts = np.unique(cells, return_counts=True)
    per_cell = size // len(names)
    if per_cell == 0:
        raise FairquantError(f"calibration.size={size} is smaller than the {len(names)} group x label cells of "
                             f"the balanced set; raise it to at least {len(names)}")
    short = [f"'{name}' has {count}" for name, count in zip(names, counts) if count < per_cell]
    if short:
        raise FairquantError(f"the balanced set needs {per_cell} training images per group x label cell but "
                             f"{', '.join(short)}; lower calibration.size to at most {counts.min() * len(names)}")
    rng = np.random.default_rng(seed)
    rows = np.sort(np.concatenate([rng.choice(train_rows[cells == name], per_cell, replace=False) for name in names]))
    assert_training_rows(table, rows)
    return rows


def pixel_hash(pixels: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes(), digest_size=16).hexdigest()


def held_out_hashes(table: pd.DataFrame, images: np.ndarray, chunk: int = 1024) -> dict[str, str]:
    """Pixel hash -> 'test image <sample_id>' for every validation and test image of the prepared store."""
    from fairquant.io import read_rows

    held_out = table[table["split"] != "train"].sort_values("row")
    hashes = {}
    for start in range(0, len(held_out), chunk):
        part = held_out.iloc[start:start + chunk]
        for pixels, split, sample in zip(read_rows(images, part["row"].to_numpy()), part["split"], part["sample_id"]):
            hashes[pixel_hash(pixels)] = f"{split} image {sample}"
    return hashes


def folder_images(folder: str | Path, image_size: int,
                  held_out: dict[str, str] | None = None) -> tuple[np.ndarray, dict]:
    """Every image file under ``folder`` (sorted), decoded and resized as the prepared store was; unreadable
    files are skipped and counted. ``held_out`` (:func:`held_out_hashes`): refuse any image with the exact
    pixels of a validation or test image (a copy of one would leak it into calibration)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FairquantError(f"synthetic calibration folder {folder} does not exist; set calibration.synthetic_folder "
                             f"to a folder of face images (for example StyleGAN samples)")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FairquantError(f"synthetic calibration folder {folder} has no image files "
                             f"({', '.join(sorted(IMAGE_SUFFIXES))}); put the faces there or choose another set")
    decoded = [decode_image(path, image_size) for path in files]
    for path, pixels in zip(files, decoded):
        if pixels is not None and held_out and pixel_hash(pixels) in held_out:
            raise FairquantError(f"synthetic calibration image {path} has exactly the pixels of "
                                 f"{held_out[pixel_hash(pixels)]}; remove it from {folder}: calibration must "
                                 f"never see validation or test images")
    good = [pixels for pixels in decoded if pixels is not None]
    skipped = [str(path.relative_to(folder)) for path, pixels in zip(files, decoded) if pixels is None]
    if not good:
        raise FairquantError(f"none of the {len(files)} image files in {folder} could be decoded "
                             f"(first: {skipped[0]}); replace them")
    return np.stack(good), {"files": len(files), "skipped_unreadable": len(skipped), "skipped_first": skipped[:5]}


class _BatchNormStatistics:
    """Forward hooks that record, at every BatchNorm2d, the batch mean and std of its input."""

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        self.observed: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.handles = [layer.register_forward_hook(self._hook) for layer in self.layers]

    def _hook(self, module, inputs, output) -> None:
        x = inputs[0]
        self.observed.append((x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False).add(module.eps).sqrt()))

    def loss(self) -> torch.Tensor:
        total = 0.0
        for layer, (mean, std) in zip(self.layers, self.observed):
            total = total + torch.norm(mean - layer.running_mean) + torch.norm(std - (layer.running_var + layer.eps).sqrt())
        self.observed.clear()
        return total

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def distilled_images(model: nn.Module, size: int, image_size: int, iterations: int, lr: float, seed: int,
                     batch_size: int = 64, progress=None) -> tuple[np.ndarray, dict]:
    """ZeroQ's distilled data: start from noise, optimise the pixels so every BatchNorm's input statistics
    match its running statistics. Pixels are parametrised through a sigmoid so they stay images in [0, 1],
    and the result is stored as uint8 like every other set."""
    stats = _BatchNormStatistics(model)
    if not stats.layers:
        raise FairquantError("the distilled set needs BatchNorm layers in the model (ZeroQ matches their statistics); "
                             "choose another calibration set for this architecture")
    model = model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    out, final_losses = [], []
    try:
        for start in range(0, size, batch_size):
            n = min(batch_size, size - start)
            logits = torch.randn(n, 3, image_size, image_size, generator=generator).requires_grad_(True)
            optimiser = torch.optim.Adam([logits], lr=lr)
            for _ in range(iterations):
                model((torch.sigmoid(logits) - INPUT_MEAN) / INPUT_STD)
                loss = stats.loss()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                if progress:
                    progress(1)
            final_losses.append(loss.item())
            pixels = torch.sigmoid(logits.detach()).permute(0, 2, 3, 1)
            out.append((pixels * 255).round().clamp(0, 255).to(torch.uint8).numpy())
    finally:
        stats.remove()
        for p in model.parameters():
            p.requires_grad_(True)
    return np.concatenate(out), {"iterations": iterations, "lr": lr, "final_bn_loss": float(np.mean(final_losses))}


@torch.no_grad()
def penultimate_features(model: nn.Module, images: np.ndarray, batch_size: int = 256,
                         device: torch.device | str = "cpu") -> np.ndarray:
    """Inputs of the model's head (its last Linear or Conv2d: SqueezeNet's head is a 1x1 convolution, whose input
    map is averaged over space): the features the classifier sees. Batches go to ``device``, where ``model`` is."""
    head = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    captured = []

    def capture(module, inputs, output) -> None:
        x = inputs[0]
        captured.append((x.mean(dim=(2, 3)) if x.dim() == 4 else x.flatten(1)).cpu())

    handle = head.register_forward_hook(capture)
    try:
        model.eval()
        for start in range(0, len(images), batch_size):
            model(to_input(images[start:start + batch_size]).to(device))
    finally:
        handle.remove()
    width = head.in_features if isinstance(head, nn.Linear) else head.in_channels
    return torch.cat(captured).numpy() if captured else np.zeros((0, width), np.float32)


class GroupClassifier:
    """Predicts the protected group from fp32 features (computed on ``device``, where the model is moved); fitted
    on the training split, scored on validation."""

    def __init__(self, model: nn.Module, table: pd.DataFrame, images: np.ndarray, protected: list[str], seed: int,
                 max_train: int = 2000, device: torch.device | str = "cpu"):
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import balanced_accuracy_score
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.model, self.device = model.to(device), device
        train, val = table[table["split"] == "train"], table[table["split"] == "val"]
        if len(train) > max_train:  # a linear probe needs few examples; features of thousands cost seconds each
            train = train.sample(max_train, random_state=seed).sort_values("row")
        self.classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
        # ImageRows: the splits are read batch by batch from the store, never copied whole
        self.classifier.fit(penultimate_features(model, ImageRows(images, train["row"].to_numpy()), device=device),
                            group_labels(train, protected))
        predicted = self.classifier.predict(penultimate_features(model, ImageRows(images, val["row"].to_numpy()),
                                                                device=device))
        truth = group_labels(val, protected)
        self.groups = [str(g) for g in self.classifier.classes_]
        self.quality = {"fitted_on": "train", "val_accuracy": float(np.mean(predicted == truth)),
                        "val_balanced_accuracy": float(balanced_accuracy_score(truth, predicted))}

    def composition(self, images: np.ndarray) -> dict[str, float]:
        predicted = self.classifier.predict(penultimate_features(self.model, images, device=self.device))
        return {g: float(np.mean(predicted == g)) for g in self.groups}


def true_composition(table: pd.DataFrame, rows: np.ndarray, protected: list[str]) -> dict[str, float]:
    groups = group_labels(table.set_index("row").loc[rows].reset_index(), protected)
    return {str(g): float(np.mean(groups == g)) for g in sorted(set(groups))}


CALIBRATION_SETS = ("train", "balanced", "synthetic", "distilled")
RERUN_CALIBRATION = "re-run the calibration stage (dvc repro -f -s calibration@<seed>)"


def _checked_info(folder: Path, rerun: str) -> dict:
    """The set's record: a mapping naming one of the sets (the folder's own, when named after one) and the size."""
    from fairquant.io import read_json_object

    path = folder / "info.json"
    info = read_json_object(path, f"the file is damaged: {rerun}")
    name, image_size = info.get("set"), info.get("image_size")
    if name not in CALIBRATION_SETS or (image_size is not None and type(image_size) is not int):
        raise FairquantError(f"{path}: set {name!r} and image_size {image_size!r} are not one of {CALIBRATION_SETS} "
                             f"and a whole number of pixels; the file is damaged: {rerun}")
    if folder.name in CALIBRATION_SETS and folder.name != name:
        raise FairquantError(f"{folder} holds the '{name}' calibration set, not the '{folder.name}' set its folder "
                             f"is named after (copied from another folder?): {rerun}")
    return info


def _checked_images(folder: Path, info: dict, image_size: int | None, rerun: str) -> np.ndarray:
    from fairquant.io import read_images

    path = folder / "images.npy"
    images = read_images(path)
    size = image_size or info.get("image_size") or (images.shape[1] if images.ndim == 4 else 0)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3) or not len(images):
        raise FairquantError(f"{path} holds {images.dtype} {images.shape}, not uint8 RGB images of {size}x{size} px "
                             f"(the model's input size); the set is damaged or from another run: {rerun}")
    return images


def _checked_cells(folder: Path, count: int, rerun: str) -> np.ndarray:
    path = folder / "cells.npy"
    try:
        cells = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise FairquantError(f"{path}: not a readable array of cell codes ({type(exc).__name__}); the file is "
                             f"damaged: {rerun}") from None
    # integer codes (classification: target x group cells) or names (verification: each image's race)
    if cells.dtype.kind not in "iuU" or cells.shape != (count,):
        raise FairquantError(f"{path} holds {cells.dtype} {cells.shape}, not one cell code or name for each of the "
                             f"set's {count} images; the set is damaged or mixes two runs: {rerun}")
    return cells


def load_set(folder: str | Path, size: int | None, key: str, seed: int = 0, *,
             image_size: int | None = None, rerun: str = RERUN_CALIBRATION) -> tuple[np.ndarray, dict]:
    """A built calibration set (``images.npy`` + ``info.json``): all of it when ``size`` is None, else ``size``
    images drawn at random with ``seed``; from a set with ``cells.npy`` (balanced), as equally from every
    group x label cell as ``size`` allows (cells differ by at most one image). Its record, images and cells are
    checked first; ``image_size``: the model's input size the images must have (default: the set's record);
    ``rerun``: the fix a refusal names (the stage that builds the set)."""
    folder = Path(folder)
    if not (folder / "images.npy").is_file():
        raise FairquantError(f"calibration set {folder} is missing; run `dvc repro calibration` first")
    info = _checked_info(folder, rerun)
    images = _checked_images(folder, info, image_size, rerun)
    if size is None:
        return np.array(images), info  # a copy: torch warns about tensors made from a read-only memory map
    if size > len(images):
        raise FairquantError(f"{key}={size} is larger than the '{info['set']}' calibration set ({len(images)} "
                             f"images); lower it or set it to null to use the whole set")
    rng = np.random.default_rng(seed)
    if not (folder / "cells.npy").is_file():
        return np.asarray(images[np.sort(rng.choice(len(images), size, replace=False))]), info
    cells = _checked_cells(folder, len(images), rerun)
    names = np.unique(cells)
    if size < len(names):
        raise FairquantError(f"{key}={size} is smaller than the {len(names)} group x label cells of the "
                             f"'{info['set']}' set; raise it to at least {len(names)} or set it to null")
    per_cell = np.full(len(names), size // len(names))
    per_cell[rng.choice(len(names), size % len(names), replace=False)] += 1
    picked = np.concatenate([rng.choice(np.flatnonzero(cells == name), k, replace=False)
                             for name, k in zip(names, per_cell)])
    return np.asarray(images[np.sort(picked)]), info


def held_out_check_images(prepared: str | Path, count: int, seed: int) -> np.ndarray:
    """Up to ``count`` seeded random validation images: inputs a compressed model was not calibrated on, for
    checking its kernels (not for fitting anything)."""
    from fairquant.data.prepare import load_prepared
    from fairquant.io import read_rows

    table, images, _ = load_prepared(prepared)
    rows = table.loc[table["split"] == "val", "row"].to_numpy()
    rows = np.sort(np.random.default_rng(seed).choice(rows, min(count, rows.size), replace=False))
    return read_rows(images, rows)
