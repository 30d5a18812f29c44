"""Multi-Hypothesis Transformer (MHT): K refined copies ``F_J^k`` of the joint features ``F_J``.

Every hypothesis k is the sequence of ``T * J`` tokens ``F_J + pe_T + pe_J + he_K[k]`` (temporal, kinematic and
hypothesis embeddings), refined by a pre-norm transformer encoder. Hypotheses never attend to each other: K is
folded into the batch (row ``b * K + k``), so the cost is linear in K.
"""

from __future__ import annotations

import torch
from torch import nn


class MultiHypothesisTransformer(nn.Module):
    """``F_J (B, T, J, E)`` -> ``F_J^k (B, K, T, J, E)``.

    The embeddings start as standard normals (as BlurHandNet's KTFormer position embeddings), so the K
    hypotheses differ from the first step on; ``he_k`` rows that are equal give identical hypotheses.
    """

    def __init__(self, embed_dim: int, num_hypotheses: int, num_blocks: int, num_heads: int,
                 mlp_ratio: float = 4.0, dropout: float = 0.0, num_frames: int = 3, num_joints: int = 21) -> None:
        super().__init__()
        self.num_hypotheses = num_hypotheses
        self.pe_t = nn.Parameter(torch.randn(num_frames, embed_dim))  # (T, E)
        self.pe_j = nn.Parameter(torch.randn(num_joints, embed_dim))  # (J, E)
        self.he_k = nn.Parameter(torch.randn(num_hypotheses, embed_dim))  # (K, E)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(embed_dim, num_heads, dim_feedforward=round(embed_dim * mlp_ratio),
                                       dropout=dropout, activation="gelu", batch_first=True, norm_first=True)
            for _ in range(num_blocks)
        )
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``features (B, T, J, E)`` -> ``(B, K, T, J, E)``."""
        b, t, j, e = features.shape
        k = self.num_hypotheses
        pos = self.pe_t[:, None, :] + self.pe_j[None, :, :]  # (T, J, E)
        x = (features + pos)[:, None] + self.he_k[None, :, None, None, :]  # (B, K, T, J, E)
        x = x.reshape(b * k, t * j, e)  # (B*K, T*J, E): row b*K + k
        for block in self.blocks:
            x = block(x)
        return self.norm(x).reshape(b, k, t, j, e)  # (B, K, T, J, E)
