"""Point sampling on mask logits, as Mask2Former/PointRend do it (own implementation)."""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["point_sample", "sample_shared_points", "pixel_index", "gather_pixels", "sample_pixel_coords",
           "uncertain_point_coords", "logit_uncertainty"]


def point_sample(inputs: Tensor, coords: Tensor, align_corners: bool = False) -> Tensor:
    """Bilinearly sample ``inputs`` [N, C, H, W] at ``coords`` [N, M, 2] in [0, 1] (x, y).

    Returns [N, C, M].
    """
    grid = coords.unsqueeze(2).mul(2.0).sub(1.0).to(inputs.dtype)
    return F.grid_sample(inputs, grid, align_corners=align_corners).squeeze(3)


def sample_shared_points(masks: Tensor, coords: Tensor) -> Tensor:
    """Sample every mask of one image at the same points.

    masks: [K, H, W] (logits or binary targets); coords: [M, 2] in [0, 1].
    Returns [K, M] (float).  Masks are treated as channels: one grid_sample.
    """
    if masks.shape[0] == 0:
        return masks.new_zeros((0, coords.shape[0]), dtype=torch.float32)
    return point_sample(masks[None].float(), coords[None])[0]


def logit_uncertainty(logits: Tensor) -> Tensor:
    """Uncertainty of a binary logit: -|x| (highest at the decision boundary)."""
    return -logits.abs()


def uncertain_point_coords(
    logits: Tensor,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    uncertainty: Callable[[Tensor], Tensor] = logit_uncertainty,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Importance-sampled point coordinates per mask.

    logits: [N, 1, H, W]. Draws ``num_points * oversample_ratio`` uniform points,
    keeps the ``importance_sample_ratio * num_points`` most uncertain, and fills
    the rest with fresh uniform points.  Returns [N, num_points, 2] in [0, 1].
    """
    if oversample_ratio < 1:
        raise ValueError(f"oversample_ratio must be >= 1, got {oversample_ratio}")
    if not 0 <= importance_sample_ratio <= 1:
        raise ValueError(f"importance_sample_ratio must be in [0, 1], got {importance_sample_ratio}")
    n = logits.shape[0]
    n_over = int(num_points * oversample_ratio)
    coords = torch.rand(n, n_over, 2, device=logits.device, generator=generator)
    scores = uncertainty(point_sample(logits, coords))  # [N, 1, n_over]
    n_imp = int(importance_sample_ratio * num_points)
    n_rand = num_points - n_imp
    top = torch.topk(scores[:, 0, :], k=n_imp, dim=1).indices
    picked = torch.gather(coords, 1, top.unsqueeze(-1).expand(-1, -1, 2))
    if n_rand > 0:
        extra = torch.rand(n, n_rand, 2, device=logits.device, generator=generator)
        picked = torch.cat([picked, extra], dim=1)
    return picked


def pixel_index(coords: Tensor, height: int, width: int) -> Tensor:
    """Flat index of the pixel containing each point: coords [..., 2] in [0, 1] (x, y) -> [...] int64."""
    ix = (coords[..., 0] * width).long().clamp_(0, width - 1)
    iy = (coords[..., 1] * height).long().clamp_(0, height - 1)
    return iy * width + ix


def gather_pixels(masks: Tensor, coords: Tensor) -> Tensor:
    """Nearest-pixel values of all masks of each image at shared points.

    masks: [B, Q, H, W]; coords: [B, N, 2] in [0, 1]. Returns [B, Q, N].
    One gather (its backward one scatter-add): much cheaper than bilinear
    grid_sample when every query is sampled at the same points.
    """
    b, q, h, w = masks.shape
    idx = pixel_index(coords, h, w)
    return torch.gather(masks.reshape(b, q, h * w), 2, idx[:, None, :].expand(b, q, idx.shape[1]))


def sample_pixel_coords(batch: int, height: int, width: int, num_points: int, device=None) -> Tensor:
    """Centres of ``num_points`` distinct random pixels per image, in raster order.

    Returns [B, N, 2] coords in [0, 1] (x, y), N = min(num_points, H * W).  Raster
    order makes the gather (and its scatter backward) walk memory forward,
    about 3x faster than random order on CPU; the losses do not depend on
    point order.
    """
    n = min(num_points, height * width)
    idx = torch.rand(batch, height * width, device=device).topk(n, dim=1, sorted=False).indices
    idx = idx.sort(dim=1).values
    x = (idx % width).float().add_(0.5).div_(width)
    y = torch.div(idx, width, rounding_mode="floor").float().add_(0.5).div_(height)
    return torch.stack([x, y], dim=-1)
