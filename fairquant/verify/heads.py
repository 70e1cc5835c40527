"""Margin heads for face-embedding training: CosFace (Wang et al. 2018) and ArcFace (Deng et al. 2019).

Both are a softmax over identities on scaled cosines between the L2-normalised embedding and per-identity
class centres, with a margin on the true class only: CosFace subtracts ``m`` from its cosine, ArcFace adds ``m``
(radians) to its angle. Written here (pytorch-metric-learning's ArcFaceLoss takes its margin in degrees)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class MarginHead(nn.Module):
    def __init__(self, embedding_dim: int, identities: int, loss: str = "cosface", scale: float = 32.0,
                 margin: float = 0.35):
        super().__init__()
        if loss not in ("cosface", "arcface"):
            raise ValueError(f"unknown margin loss {loss!r}; choose cosface or arcface")
        self.loss, self.scale, self.margin = loss, scale, margin
        self.weight = nn.Parameter(torch.empty(identities, embedding_dim))
        nn.init.normal_(self.weight, std=0.01)

    def cosines(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(embeddings.float()), F.normalize(self.weight)).clamp(-1 + 1e-7, 1 - 1e-7)

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor, margin: float | None = None) -> torch.Tensor:
        """Scaled cosines with the margin applied to each row's true identity (``margin`` overrides the head's:
        0 during a softmax warm-up)."""
        m = self.margin if margin is None else margin
        cos = self.cosines(embeddings)
        target = cos.gather(1, labels[:, None])
        if self.loss == "cosface":
            adjusted = target - m
        else:
            # cos(theta + m); past theta = pi - m the angle would wrap and the logit grow again, so insightface's
            # fallback keeps it monotonic there: cos(theta) - m sin(m)
            sin = torch.sqrt(1 - target ** 2)
            wrapped = target * math.cos(m) - sin * math.sin(m)
            adjusted = torch.where(target > math.cos(math.pi - m), wrapped, target - m * math.sin(m))
        return self.scale * cos.scatter(1, labels[:, None], adjusted)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, margin: float | None = None) -> torch.Tensor:
        return F.cross_entropy(self.logits(embeddings, labels, margin), labels)
