"""Hungarian-matching baseline: pairwise costs, the assignment, matched losses.

The math is shared by the 2D (sampled points) and 3D (superpoints) criteria:
every function here takes masks already flattened to points, [Q, N] / [K, N].
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "pairwise_sigmoid_ce",
    "pairwise_dice",
    "pairwise_class_cost",
    "linear_assignment",
    "sigmoid_ce_per_mask",
    "dice_per_mask",
    "mask_iou",
    "pairwise_mask_iou",
]


def pairwise_sigmoid_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean binary cross-entropy of every query against every target.

    logits [Q, N], targets [K, N] in {0, 1} -> [Q, K].
    Uses BCE(x, t) = softplus(x) - x * t, so it is one matmul.
    """
    x = logits.float()
    t = targets.float()
    n = max(x.shape[1], 1)
    return (F.softplus(x).sum(1, keepdim=True) - x @ t.T) / n


def pairwise_dice(logits: Tensor, targets: Tensor) -> Tensor:
    """Dice loss 1 - (2|p t| + 1) / (|p| + |t| + 1) of every pair: [Q, N] x [K, N] -> [Q, K]."""
    p = logits.float().sigmoid()
    t = targets.float()
    num = 2 * (p @ t.T)
    den = p.sum(1)[:, None] + t.sum(1)[None, :]
    return 1 - (num + 1) / (den + 1)


def pairwise_class_cost(class_logits: Tensor, labels: Tensor) -> Tensor:
    """-softmax probability of each target's class: [Q, C+1], [K] -> [Q, K]."""
    return -class_logits.float().softmax(-1)[:, labels]


def linear_assignment(costs: Sequence[Tensor]) -> List[Tuple[Tensor, Tensor]]:
    """Minimum-cost one-to-one assignment of each [Q, K] cost matrix (scipy).

    Moves all matrices to the host in one transfer; returns (query idx, target
    idx) int64 pairs on the costs' device, sorted by query.
    """
    from scipy.optimize import linear_sum_assignment

    if not costs:
        return []
    device = costs[0].device
    sizes = [c.numel() for c in costs]
    flat = torch.cat([c.detach().float().reshape(-1) for c in costs]).cpu().numpy() if sum(sizes) else np.zeros(0)
    out = []
    start = 0
    for c, size in zip(costs, sizes):
        mat = flat[start : start + size].reshape(c.shape)
        start += size
        if not np.isfinite(mat).all():
            raise ValueError("matching cost contains NaN/inf: check the predictions for non-finite logits")
        rows, cols = linear_sum_assignment(mat)
        out.append((torch.as_tensor(rows, dtype=torch.long, device=device),
                    torch.as_tensor(cols, dtype=torch.long, device=device)))
    return out


def sigmoid_ce_per_mask(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean binary cross-entropy per matched pair: [M, N], [M, N] -> [M]."""
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none").mean(1)


def dice_per_mask(logits: Tensor, targets: Tensor) -> Tensor:
    """Dice loss per matched pair (+1 smoothing): [M, N], [M, N] -> [M]."""
    p = logits.float().sigmoid()
    t = targets.float()
    num = 2 * (p * t).sum(1)
    den = p.sum(1) + t.sum(1)
    return 1 - (num + 1) / (den + 1)


def mask_iou(logits: Tensor, targets: Tensor, threshold: float = 0.5) -> Tensor:
    """IoU of the binarised prediction (sigmoid >= threshold) with the target: [M, N] -> [M]."""
    pred = (logits.float().sigmoid() >= threshold).float()
    t = (targets.float() > 0.5).float()
    inter = (pred * t).sum(1)
    union = pred.sum(1) + t.sum(1) - inter
    return inter / (union + 1e-6)


def pairwise_mask_iou(logits: Tensor, targets: Tensor, threshold: float = 0.5) -> Tensor:
    """IoU of every binarised prediction with every target: [Q, P], [K, P] -> [Q, K].

    Equals ``mask_iou`` on all (q, k) pairs, as one product over the points."""
    pred = (logits.float().sigmoid() >= threshold).float()
    t = (targets.float() > 0.5).float()
    inter = pred @ t.T
    union = pred.sum(1, keepdim=True) + t.sum(1)[None] - inter
    return inter / (union + 1e-6)
