"""Padding of per-image targets into batched tensors (no host sync)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = ["MaskBatch", "pack_masks", "pad_logits"]


@dataclass
class MaskBatch:
    """Binary instance masks of B images, padded.

    masks: [B, K, P] float {0, 1}; valid: [B, K] bool (a real instance with >= 1
    point); point_valid: [B, P] bool (real points, False on padding).
    """

    masks: Tensor
    valid: Tensor
    point_valid: Tensor

    @property
    def batch_size(self) -> int:
        return self.masks.shape[0]

    def sizes(self) -> Tensor:
        """Points per instance, [B, K]."""
        return self.masks.sum(-1)

    def inst_weights(self) -> Tensor:
        """Masks divided by their sizes, [B, K, P] (zero rows for padding)."""
        return self.masks / self.sizes().clamp(min=1).unsqueeze(-1)

    def background(self) -> Tensor:
        """[B, P] bool: real points in no instance."""
        return self.point_valid & ~(self.masks > 0).any(1)

    @property
    def has_bg(self) -> Tensor:
        return self.background().any(1)

    def bg_weights(self) -> Tensor:
        bg = self.background().to(self.masks.dtype)
        return bg / bg.sum(-1, keepdim=True).clamp(min=1)


def _check_mask(m: Tensor, b: int, num_points: Optional[int]) -> None:
    if m.dim() != 2:
        raise ValueError(f"target masks of image {b} must be [K, P], got shape {tuple(m.shape)}")
    if num_points is not None and m.shape[1] > num_points:
        raise ValueError(
            f"target masks of image {b} have {m.shape[1]} points but the logits have {num_points}: "
            "sample or flatten targets at the prediction's resolution"
        )


def pack_masks(
    masks: Union[Tensor, Sequence[Tensor]],
    num_points: Optional[int] = None,
    device: Optional[torch.device] = None,
    dtype: torch.dtype = torch.float32,
) -> MaskBatch:
    """Pack [B, K, P] or a list of [K_b, P_b] binary masks into a :class:`MaskBatch`.

    Images with fewer points than ``num_points`` are padded (padding points are
    neither instance nor background).
    """
    if isinstance(masks, Tensor):
        if masks.dim() != 3:
            raise ValueError(f"masks must be [B, K, P] or a list of [K, P], got shape {tuple(masks.shape)}")
        masks = list(masks.unbind(0))
    masks = list(masks)
    for b, m in enumerate(masks):
        _check_mask(m, b, num_points)
    if not masks:
        raise ValueError("no images in the target list")
    device = device or masks[0].device
    p = num_points if num_points is not None else max(m.shape[1] for m in masks)
    k = max(m.shape[0] for m in masks)
    out = torch.zeros(len(masks), k, p, dtype=dtype, device=device)
    point_valid = torch.zeros(len(masks), p, dtype=torch.bool, device=device)
    for b, m in enumerate(masks):
        out[b, : m.shape[0], : m.shape[1]] = (m.to(device) > 0.5) if m.dtype.is_floating_point else (m.to(device) != 0)
        point_valid[b, : m.shape[1]] = True
    valid = out.sum(-1) > 0
    return MaskBatch(out, valid, point_valid)


def pad_logits(logits: Sequence[Tensor], value: float = 0.0) -> Tensor:
    """Stack a list of [Q_b, P_b] logits into [B, max Q, max P] (padding filled with ``value``;
    criteria mark padding queries with their ``query_valid`` mask)."""
    q = max(x.shape[0] for x in logits)
    p = max(x.shape[1] for x in logits)
    out = logits[0].new_full((len(logits), q, p), value)
    for b, x in enumerate(logits):
        out[b, : x.shape[0], : x.shape[1]] = x
    return out
