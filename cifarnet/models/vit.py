"""A vision transformer sized for 32x32 images: ViT-Lite-7/4 of Hassani et al. 2021
("Escaping the Big Data Paradigm with Compact Transformers", Table 1: 3.72 M parameters):
4x4 patches (64 tokens) embedded to 256 dimensions by a strided convolution, a class token and
learned position embeddings, 7 pre-norm encoder layers (4 heads, MLP ratio 2, GELU), a final
LayerNorm and a linear head on the class token. `dropout` (0.1) is nn.TransformerEncoderLayer's:
on the attention weights and after each sub-layer, and here also on the embedded tokens.

Shapes: (N, 3, 32, 32) -> patches (N, 256, 8, 8) -> tokens (N, 64, 256) -> with the class
token (N, 65, 256) -> encoder (N, 65, 256) -> class token (N, 256) -> logits (N, classes).
"""

from __future__ import annotations

import torch
from torch import nn

from cifarnet.models import register_model


class VisionTransformer(nn.Module):
    def __init__(
        self,
        num_classes: int = 100,
        image_size: int = 32,
        patch_size: int = 4,
        dim: int = 256,
        depth: int = 7,
        heads: int = 4,
        mlp_ratio: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch {patch_size}")
        tokens = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(3, dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens + 1, dim))
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim,
                heads,
                mlp_ratio * dim,
                dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (N, tokens, dim)
        # x.shape[0], not len(x): len() returns a Python int, which fixes the exported batch
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.dropout(x + self.pos_embed)
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x[:, 0]))


@register_model("vit_lite_7_4", "ViT-Lite-7/4: patch 4, 7 layers, 256 wide, 4 heads, MLP 512")
def vit_lite_7_4(num_classes: int = 100, dropout: float = 0.1) -> VisionTransformer:
    return VisionTransformer(num_classes, dropout=dropout)
