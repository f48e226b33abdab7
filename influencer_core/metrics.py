"""The duplicate rate: how often a model predicts the same object twice (torch only).

Definition (README): the share of predictions scored at least ``score_threshold`` whose mask
has IoU > ``iou_threshold`` (0.5) with a higher-scored prediction. Both evaluators use it: the
2D ``DuplicateRateEvaluator`` (detectron2) and the 3D ``UnifiedSegMetric`` (mmdet3d).

Tie rule: predictions are ranked by score, descending, and predictions with equal scores by
their index, ascending (a stable sort by descending score). "Higher-scored" means "ranked
earlier": of two equal-scored copies of one mask, the one with the larger index is the
duplicate, so exact copies count even when their scores saturate at the same value.
"""
from typing import Tuple

import torch

__all__ = ["duplicate_counts", "duplicate_flags"]


def _self_iou(masks: torch.Tensor) -> torch.Tensor:
    """[n, n] IoU of boolean masks [n, ...] (any trailing shape, flattened); two empty masks
    have IoU 0."""
    flat = masks.reshape(masks.shape[0], -1).float()
    inter = flat @ flat.T
    area = flat.sum(1)
    return inter / (area[:, None] + area[None, :] - inter).clamp(min=1)


def duplicate_flags(masks: torch.Tensor, scores: torch.Tensor, iou_threshold: float = 0.5) -> torch.Tensor:
    """[n] bool: prediction ``i`` has IoU > ``iou_threshold`` with a prediction ranked before
    it (higher score; equal score and lower index, see the module's tie rule).

    Args:
        masks: [n, ...] bool (or 0/1) masks, e.g. [n, H, W] or [n, N points].
        scores: [n].
        iou_threshold: strict lower bound of a duplicate's IoU.
    """
    n = masks.shape[0]
    scores = torch.as_tensor(scores).reshape(-1)
    if scores.shape[0] != n:
        raise ValueError(f"{n} masks but {scores.shape[0]} scores")
    if n < 2:
        return torch.zeros(n, dtype=torch.bool, device=masks.device)
    scores = scores.to(masks.device)
    iou = _self_iou(masks)
    idx = torch.arange(n, device=masks.device)
    # [i, j]: j is ranked before i
    before = (scores[None, :] > scores[:, None]) | (
        (scores[None, :] == scores[:, None]) & (idx[None, :] < idx[:, None]))
    return ((iou > iou_threshold) & before).any(1)


def duplicate_counts(masks: torch.Tensor, scores: torch.Tensor, score_threshold: float = 0.0,
                     iou_threshold: float = 0.5) -> Tuple[int, int]:
    """(duplicates, predictions) of one image / scene: ``predictions`` counts those scored
    >= ``score_threshold``, ``duplicates`` those among them flagged by :func:`duplicate_flags`
    (computed among the kept predictions only). The duplicate rate of a data set is
    ``sum(duplicates) / max(sum(predictions), 1)``.

    Args:
        masks: [n, ...] bool masks; scores: [n].
    """
    scores = torch.as_tensor(scores).reshape(-1)
    if scores.shape[0] != masks.shape[0]:
        raise ValueError(f"{masks.shape[0]} masks but {scores.shape[0]} scores")
    keep = scores >= score_threshold
    n = int(keep.sum())
    if n < 2:
        return 0, n
    keep_dev = keep.to(masks.device)
    return int(duplicate_flags(masks[keep_dev], scores[keep], iou_threshold).sum()), n
