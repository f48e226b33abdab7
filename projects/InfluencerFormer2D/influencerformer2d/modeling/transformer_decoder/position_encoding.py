"""Fixed 2D sine/cosine positional encoding (DETR / Mask2Former style)."""
import math
from typing import Optional

import torch
from torch import Tensor, nn

__all__ = ["PositionEmbeddingSine"]


class PositionEmbeddingSine(nn.Module):
    """Sine positional encoding of a feature map, ``[B, 2 * num_pos_feats, H, W]``.

    Each pixel's row and column index (counted from 1 over the non-padded pixels) is optionally
    rescaled to ``(0, scale]``, divided by ``temperature ** (2 * (i // 2) / num_pos_feats)``
    for ``i < num_pos_feats``, and channel ``i`` is the sine (even ``i``) or cosine (odd ``i``)
    of it.  The ``num_pos_feats`` row channels come first, then the column channels.  Only the
    shape, device of ``x`` are read; the result is float32.
    """

    def __init__(self, num_pos_feats: int = 64, temperature: float = 10000, normalize: bool = False,
                 scale: Optional[float] = None):
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError("scale needs normalize=True")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        b, _, h, w = x.shape
        if mask is None:
            mask = torch.zeros((b, h, w), dtype=torch.bool, device=x.device)
        keep = (~mask).to(torch.float32)
        rows = keep.cumsum(1)  # [B, H, W], 1-based
        cols = keep.cumsum(2)
        if self.normalize:
            eps = 1e-6
            rows = rows / (rows[:, -1:, :] + eps) * self.scale
            cols = cols / (cols[:, :, -1:] + eps) * self.scale

        i = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.device)
        freq = self.temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / self.num_pos_feats)
        even = (torch.arange(self.num_pos_feats, device=x.device) % 2) == 0

        def encode(coord):
            phase = coord[..., None] / freq  # [B, H, W, F]
            return torch.where(even, phase.sin(), phase.cos())

        return torch.cat((encode(rows), encode(cols)), dim=3).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (f"num_pos_feats={self.num_pos_feats}, temperature={self.temperature}, "
                f"normalize={self.normalize}, scale={self.scale}")
