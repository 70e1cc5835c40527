"""A face-embedding model you already trained (an arcface_torch ``backbone.pth``, or any state dict of a
verify.model.arch): loaded strictly, audited as it is (verify.train.epochs 0), compressed like a model trained
here. Without a trained margin head, compression fine-tuning starts from a head of identity centres."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from fairquant.errors import FairquantError
from fairquant.models import first_non_finite

# where training frameworks nest the weights: arcface_torch's checkpoint_gpu_<rank>.pt, Lightning / generic
NESTED_KEYS = ("state_dict_backbone", "state_dict", "model")


def _read_state(file: Path, key: str) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise FairquantError(f"{file}: pretrained weights not found; set {key} to a local state dict (e.g. "
                             f"arcface_torch's backbone.pth) or null; nothing is downloaded")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a corrupt or unsafe (pickled code) file
        raise FairquantError(f"{file}: not a loadable state dict with weights_only=True ({type(exc).__name__}); "
                             f"save model.state_dict() with torch.save and set {key} to it") from None
    for nested in NESTED_KEYS:
        if isinstance(state, dict) and isinstance(state.get(nested), dict):
            state = state[nested]
            break
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise FairquantError(f"{file}: not a state dict (name -> tensor); set {key} to one")
    damaged = first_non_finite(state)
    if damaged is not None:
        raise FairquantError(f"{file}: layer {damaged} holds NaN or infinite values; the weights are damaged or "
                             f"diverged: export them again and set {key} to them")
    if state and all(k.startswith("module.") for k in state):  # saved from a DistributedDataParallel wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_backbone(model: nn.Module, path: str | Path, arch: str, key: str = "verify.model.pretrained") -> None:
    """Load ``path`` into ``model`` strictly (every tensor, every shape) with ``weights_only=True``; a mismatch
    names the layer and both shapes."""
    file = Path(path)
    state = _read_state(file, key)
    own = model.state_dict()
    wrong = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if k in own and own[k].shape != v.shape]
    if wrong:
        name, theirs, ours = wrong[0]
        raise FairquantError(f"{file}: layer {name} has shape {list(theirs)} in the file but {list(ours)} in "
                             f"verify.model.arch={arch} ({len(wrong)} layers differ); check verify.model.arch, "
                             f"verify.model.embedding_dim and verify.data.image_size (112 for arcface_torch)")
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        parts = ([f"{len(missing)} tensors of {arch} are missing (first: {missing[0]})"] if missing else []) + \
                ([f"{len(unexpected)} tensors are not in {arch} (first: {unexpected[0]})"] if unexpected else [])
        raise FairquantError(f"{file}: {'; '.join(parts)}; the file is not a {arch} state dict: set "
                             f"verify.model.arch to its architecture")
    model.load_state_dict(state, strict=True)


@torch.no_grad()
def centroid_head(model: nn.Module, images: np.ndarray, rows: np.ndarray, identities: np.ndarray,
                  batch_size: int = 256) -> dict[str, torch.Tensor]:
    """A margin head's state (``weight``: identities x embedding) of each training identity's mean normalised
    embedding: where a trained head's class centres sit, for fine-tuning a model that came without one."""
    from fairquant.verify.embedding import embed

    model.eval()
    embeddings = torch.as_tensor(embed(model, images, batch_size, rows=rows, mirror=False))
    labels = torch.as_tensor(np.asarray(identities, dtype=np.int64))
    sums = torch.zeros(int(labels.max()) + 1, embeddings.shape[1]).index_add_(0, labels, embeddings)
    return {"weight": torch.nn.functional.normalize(sums, dim=1)}


def fp32_head(model_dir: Path, model: nn.Module, images: np.ndarray, rows: np.ndarray, identities: np.ndarray,
              needed: bool) -> dict | None:
    """The fp32 model's margin head: the trained one when verify_train wrote it, else (a model audited as it
    is) identity centres when a compressor fine-tunes (``needed``), else None."""
    from fairquant.compress.checkpoints import HEAD
    from fairquant.io import load_checkpoint

    if (model_dir / HEAD).is_file():
        return load_checkpoint(model_dir / HEAD)["state_dict"]
    return centroid_head(model, images, rows, identities) if needed else None
