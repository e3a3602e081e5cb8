"""Finite scalar quantisation as the Cosmos DV tokenizers use it (levels 8,8,8,5,5,5).

Used by the stand-in DV models; the official ones carry the same arithmetic in their graph.
"""

from __future__ import annotations

import torch
from torch import nn

LEVELS = (8, 8, 8, 5, 5, 5)
CODEBOOK_SIZE = 64000  # product of LEVELS


class FiniteScalarQuantizer(nn.Module):
    def __init__(self, levels=LEVELS):
        super().__init__()
        # Integers, as NVIDIA's FSQuantizer keeps them: casting the network to bf16 (as a GPU
        # run does) leaves them exact, and the bounds below are computed in float32 whatever
        # the network's dtype (bf16 levels made 3.5035 into 3.5 and moved about 1% of indices).
        levels_t = torch.tensor(levels, dtype=torch.int64)
        basis = torch.cumprod(torch.tensor((1, *levels[:-1]), dtype=torch.int64), 0)
        self.register_buffer("levels", levels_t.view(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("basis", basis.view(1, -1, 1, 1, 1), persistent=False)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z [B, 6, t, h, w] -> (indices [B, t, h, w] int32, codes [B, 6, t, h, w] in [-1, 1])."""
        half_range = (self.levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_range)
        steps = torch.round(torch.tanh(z + shift) * half_range - offset)
        half_width = torch.floor(self.levels / 2)
        digits = (steps + half_width).to(torch.int64)
        indices = (digits * self.basis).sum(dim=1).to(torch.int32)
        return indices, steps / half_width

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """indices [B, t, h, w] -> codes [B, 6, t, h, w] in [-1, 1]."""
        digits = (indices.unsqueeze(1).to(torch.int64) // self.basis) % self.levels.to(torch.int64)
        half_width = torch.floor(self.levels / 2)
        return (digits.to(half_width.dtype) - half_width) / half_width
