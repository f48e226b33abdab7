"""Duplicate-rate evaluation: how often a model predicts the same object twice."""
from collections import defaultdict

from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from influencer_core.metrics import duplicate_counts

__all__ = ["DuplicateRateEvaluator"]


class DuplicateRateEvaluator(DatasetEvaluator):
    """Fraction of instance predictions (score >= ``score_threshold``) whose mask has IoU > 0.5
    with a higher-scored prediction (:mod:`influencer_core.metrics`, ties: the lower index
    counts as higher).  Reported as ``duplicates/rate`` (percent) and ``duplicates/per_image``."""

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
            dups, preds = duplicate_counts(inst.pred_masks.bool(), inst.scores, self.score_threshold,
                                           self.iou_threshold)
            self._counts["predictions"] += preds
            self._counts["duplicates"] += dups
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
