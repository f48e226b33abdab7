"""Duplicate-rate evaluation: how often a model predicts the same object twice."""
from collections import defaultdict

import torch

from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

__all__ = ["DuplicateRateEvaluator", "duplicate_flags"]


def duplicate_flags(masks: torch.Tensor, scores: torch.Tensor, iou_threshold: float = 0.5) -> torch.Tensor:
    """[N] bool: prediction i overlaps (IoU > threshold) a prediction with a higher score.

    masks: [N, H, W] bool; scores: [N].
    """
    n = masks.shape[0]
    if n < 2:
        return torch.zeros(n, dtype=torch.bool)
    flat = masks.flatten(1).float()
    inter = flat @ flat.T
    area = flat.sum(1)
    iou = inter / (area[:, None] + area[None, :] - inter).clamp(min=1)
    higher = scores[None, :] > scores[:, None]  # [i, j]: j scores higher than i
    return ((iou > iou_threshold) & higher).any(1)


class DuplicateRateEvaluator(DatasetEvaluator):
    """Fraction of instance predictions (score >= ``score_threshold``) whose mask has IoU > 0.5
    with another prediction of higher score.  Reported as ``duplicates/rate`` (percent) and
    ``duplicates/per_image``."""

    def __init__(self, score_threshold: float = 0.5, iou_threshold: float = 0.5):
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.reset()

    def reset(self):
        self._counts = defaultdict(int)

    def process(self, inputs, outputs):
        for out in outputs:
            if "instances" not in out:
                continue
            inst = out["instances"].to("cpu")
            keep = inst.scores >= self.score_threshold
            masks, scores = inst.pred_masks[keep].bool(), inst.scores[keep]
            self._counts["predictions"] += int(keep.sum())
            self._counts["duplicates"] += int(duplicate_flags(masks, scores, self.iou_threshold).sum())
            self._counts["images"] += 1

    def evaluate(self):
        counts = defaultdict(int)
        for part in comm.gather(dict(self._counts), dst=0):
            for k, v in part.items():
                counts[k] += v
        if not comm.is_main_process():
            return {}
        rate = 100.0 * counts["duplicates"] / max(counts["predictions"], 1)
        return {"duplicates": {"rate": rate, "per_image": counts["duplicates"] / max(counts["images"], 1),
                               "predictions_per_image": counts["predictions"] / max(counts["images"], 1)}}
