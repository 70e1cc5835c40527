"""ViT-small ("Beyond Naive Quantization" quantizes it) written with plain nn.Linear layers, so that every
compressor reaches all of them.

torchvision's VisionTransformer keeps its attention's input projection as a raw parameter of
nn.MultiheadAttention, out of reach of anything that wraps Conv2d/Linear modules; here each block's attention
is a ``qkv`` Linear, torch's scaled-dot-product attention (fp32, no weights) and a ``proj`` Linear, and its MLP
is ``fc1`` -> GELU -> ``fc2``. Pre-norm blocks (LayerNorm before attention and before the MLP), a class token,
learned position embeddings, a strided Conv2d patch embedding, ViT-S dimensions: width 384, 6 heads, MLP 1536,
depth 12 (about 21 M parameters).

The patch size follows the image size (:func:`fairquant.params.base.vit_patch_size`: a side of 8 patches, so
64 tokens plus the class token at any image size the patches tile).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fairquant.errors import FairquantError
from fairquant.params.base import vit_image_size_problem, vit_patch_size

WIDTH, HEADS, MLP_WIDTH, DEPTH = 384, 6, 1536, 12


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        mixed = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(mixed.transpose(1, 2).reshape(batch, tokens, width))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then + mlp(norm2(x))."""

    def __init__(self, width: int, heads: int, hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = Mlp(width, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """Patches -> class token + position embeddings -> pre-norm blocks -> LayerNorm -> ``head`` on the class
    token. The head is the last Linear registered (the calibration group probe reads the last Linear's input)."""

    def __init__(self, *, image_size: int, outputs: int = 1, width: int = WIDTH, heads: int = HEADS,
                 hidden: int = MLP_WIDTH, depth: int = DEPTH, image_size_key: str = "prepare.image_size"):
        super().__init__()
        problem = vit_image_size_problem(image_size, image_size_key)
        if problem:
            raise FairquantError(problem)
        self.image_size, self.patch_size = image_size, vit_patch_size(image_size)
        tokens = (image_size // self.patch_size) ** 2 + 1
        self.patch_embed = nn.Conv2d(3, width, kernel_size=self.patch_size, stride=self.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, width))
        self.blocks = nn.Sequential(*(Block(width, heads, hidden) for _ in range(depth)))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.head = nn.Linear(width, outputs)
        self._initialise()

    def _initialise(self) -> None:
        # the original ViT's: truncated-normal position embeddings and class token, Xavier-uniform Linear weights
        # with zero biases (the default Kaiming-uniform init makes a 12-block residual stream grow)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embed(x).flatten(2).transpose(1, 2)  # (N, tokens - 1, width)
        tokens = torch.cat([self.cls_token.expand(patches.shape[0], -1, -1), patches], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(tokens))[:, 0])


def vit_small(*, image_size: int, outputs: int = 1, image_size_key: str = "prepare.image_size") -> VisionTransformer:
    """ViT-S (width 384, 6 heads, MLP 1536, depth 12) for ``image_size`` px inputs, ``outputs`` logits (or the
    embedding width on the verification branch). ``image_size_key`` names the params key in the error when the
    patches do not tile the image."""
    return VisionTransformer(image_size=image_size, outputs=outputs, image_size_key=image_size_key)
