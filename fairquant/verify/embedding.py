"""Embeddings as insightface's verification protocol takes them, and pair scores.

An image's embedding is the sum of the raw embeddings of the image and its horizontal mirror, L2-normalised
(insightface ``eval/verification.py``); a pair's score is the cosine of its two embeddings (the protocol's
squared distance is 2 - 2 x score)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from fairquant.io import ImageRows
from fairquant.models import to_input


@torch.no_grad()
def embed(forward: Callable[[torch.Tensor], torch.Tensor], images: np.ndarray, batch_size: int, *,
          rows: np.ndarray | None = None, mirror: bool = True, device: torch.device | str = "cpu") -> np.ndarray:
    """L2-normalised embeddings (N, D) of ``images`` (or ``images[rows]``, read batch by batch); each batch is
    sent to ``device`` (where ``forward``'s model runs: a loaded variant's ``device``)."""
    if rows is not None:
        images = ImageRows(images, rows)
    out = []
    for start in range(0, len(images), batch_size):
        batch = to_input(images[start:start + batch_size]).to(device)
        features = forward(batch).float()
        if mirror:
            features = features + forward(batch.flip(3)).float()
        out.append(F.normalize(features.reshape(len(batch), -1), dim=1).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def pair_scores(embeddings: np.ndarray, row1: np.ndarray, row2: np.ndarray) -> np.ndarray:
    """Cosine similarity of each pair (rows of the normalised ``embeddings``)."""
    return np.einsum("ij,ij->i", embeddings[row1], embeddings[row2]).astype(np.float32)
