"""OneFormer3D's Hungarian instance criterion (the 3D baseline), on the core's loop and mask math.

Inputs as every :class:`~influencer_core.criterion.SetCriterion`, point mode: per scene
``pred_logits`` [Q_b, C+1], ``pred_masks`` [Q_b, P_b] superpoint logits, optional
``pred_scores`` [Q_b, 1]; targets ``labels`` [K_b], ``masks`` [K_b, P_b] and, for sparse
matching, ``query_masks`` [K_b, Q_b] bool.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .criterion import SetCriterion, checked_hybrid_capacity
from .masks import dice_per_mask, mask_iou, pairwise_class_cost, pairwise_dice, pairwise_sigmoid_ce, sigmoid_ce_per_mask
from .matching import linear_assignment, sparse_match
from .validation import check_flag, check_number

__all__ = ["OneFormer3DHungarianCriterion"]


class OneFormer3DHungarianCriterion(SetCriterion):
    """OneFormer3D's ``InstanceCriterion`` semantics.

    Matching per scene (no gradient): ``class_cost * (-p_class) + mask_cost * BCE + dice_cost *
    dice`` (mean BCE over the superpoints, dice with +1 smoothing); ``matcher='hungarian'``:
    scipy's one-to-one assignment, ``'sparse'``: every instance takes the (at most) ``topk``
    queries of lowest cost among those inside it (targets' ``query_masks``), see
    :func:`~influencer_core.matching.sparse_match`.  Scenes without instances match nothing.
    Losses per layer:

    * ``loss_ce``: per scene CE over all queries (unmatched -> no object, no-object weight
      ``no_object_weight``, weighted mean), mean over scenes;
    * ``loss_mask`` / ``loss_dice``: per scene with matches, mean over matched pairs; summed over
      scenes; BCE / B; dice / B **only in the auxiliary layers** (upstream's final layer sums);
      ``fix_dice_loss_weight``: dice / B * 4; ``fix_mean_loss``: both * B / (scenes with matches);
    * ``loss_score`` (layers with ``pred_scores``): MSE of the matched queries' scores to the IoU
      of their binarised masks with the instance, pairs with IoU > 0.5; summed over scenes / B.

    ``iter_matcher=False``: the auxiliary layers reuse the final layer's matching. A hybrid query
    group (``outputs['hybrid']``) is matched against every instance repeated ``hybrid_capacity``
    times (H-DETR's one-to-many branch; :meth:`SetCriterion.hybrid_losses`).
    """

    loss_weights = {"loss_ce": "class_weight", "loss_mask": "mask_weight", "loss_dice": "dice_weight"}
    optional_weights = {"loss_score": "score_weight"}
    uses_points = False

    def __init__(self, num_classes: int, class_weight: float = 0.5, mask_weight: float = 1.0,
                 dice_weight: float = 1.0, score_weight: float = 0.5, no_object_weight: float = 0.1,
                 class_cost: float = 0.5, mask_cost: float = 1.0, dice_cost: float = 1.0,
                 matcher: str = "hungarian", topk: Optional[int] = None, fix_dice_loss_weight: bool = False,
                 fix_mean_loss: bool = False, iter_matcher: bool = True, check_values: bool = True,
                 hybrid_capacity: int = 3):
        super().__init__(num_classes, class_weight, no_object_weight, num_points=0, deep_supervision=True,
                         check_values=check_values)
        owner = type(self).__name__
        self.hybrid_capacity = checked_hybrid_capacity(owner, hybrid_capacity, integer=True)
        self.check_weights(mask_weight=mask_weight, dice_weight=dice_weight, score_weight=score_weight,
                           class_cost=class_cost, mask_cost=mask_cost, dice_cost=dice_cost)
        if matcher not in ("hungarian", "sparse"):
            raise ValueError(f"{owner}: matcher must be 'hungarian' or 'sparse', got {matcher!r}")
        if matcher == "sparse" and topk is None:
            raise ValueError(f"{owner}: the sparse matcher needs topk >= 1 (queries matched per instance), got None")
        check_number(owner, "topk", topk, low=1, integer=True, optional=True)
        for name, flag in (("fix_dice_loss_weight", fix_dice_loss_weight), ("fix_mean_loss", fix_mean_loss),
                           ("iter_matcher", iter_matcher)):
            check_flag(owner, name, flag)
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.score_weight = score_weight
        self.class_cost, self.mask_cost, self.dice_cost = class_cost, mask_cost, dice_cost
        self.matcher = matcher
        self.topk = None if topk is None else int(topk)
        self.fix_dice_loss_weight = fix_dice_loss_weight
        self.fix_mean_loss = fix_mean_loss
        self.iter_matcher = iter_matcher

    @torch.no_grad()
    def match(self, layer: Dict, targets: Sequence[Dict]) -> List[Tuple[Tensor, Tensor]]:
        """Per scene (query ids, instance ids) int64 pairs."""
        costs = []
        for cls, m, t in zip(layer["pred_logits"], layer["pred_masks"], targets):
            labels = t["labels"].to(cls.device)
            if labels.numel() == 0:
                costs.append(cls.new_zeros(cls.shape[0], 0, dtype=torch.float32))
                continue
            tgt = t["masks"].to(m.device).float()
            costs.append(self.class_cost * pairwise_class_cost(cls, labels)
                         + self.mask_cost * pairwise_sigmoid_ce(m, tgt)
                         + self.dice_cost * pairwise_dice(m, tgt))
        if self.matcher == "hungarian":
            return linear_assignment(costs)
        out = []
        for i, (cost, t) in enumerate(zip(costs, targets)):
            query_masks = t.get("query_masks", None)
            if query_masks is None:
                raise KeyError(f"scene {i}: the sparse matcher needs query_masks [K, Q] (instance x query "
                               "membership) in the ground truth; ScanNetOneFormer3D sets them when it "
                               "selects queries")
            if tuple(query_masks.shape) != (cost.shape[1], cost.shape[0]):
                raise ValueError(f"scene {i}: query_masks has shape {tuple(query_masks.shape)}, expected "
                                 f"(instances, queries) = ({cost.shape[1]}, {cost.shape[0]})")
            out.append(sparse_match(cost, query_masks.to(cost.device), self.topk))
        return out

    def layer_losses(self, layer, targets, state, index):
        if index == 0 or self.iter_matcher:
            indices = self.match(layer, targets)
            if index == 0:
                state["final_indices"] = indices
        else:
            indices = state["final_indices"]
        cls_preds, masks = list(layer["pred_logits"]), list(layer["pred_masks"])
        scores = layer.get("pred_scores", None)
        scores = [None] * len(masks) if scores is None else list(scores)
        b = len(masks)
        cls_losses = []
        for cls, t, (iq, ik) in zip(cls_preds, targets, indices):
            target = torch.full((cls.shape[0],), self.num_classes, dtype=torch.long, device=cls.device)
            target[iq] = t["labels"].to(cls.device)[ik]
            cls_losses.append(self.class_loss(cls[None], target[None]))
        cls_loss = torch.stack(cls_losses).mean()
        zero = cls_loss.new_zeros(())

        bce, dice, score_losses = [], [], []
        for m, s, t, (iq, ik) in zip(masks, scores, targets, indices):
            # no instance (upstream's test), or - sparse matching only - no query inside any of
            # them, where upstream's mean over zero pairs would give NaN
            if t["labels"].shape[0] == 0 or iq.numel() == 0:
                continue
            pred_mask = m[iq]
            tgt_mask = t["masks"].to(m.device)[ik].float()
            bce.append(sigmoid_ce_per_mask(pred_mask, tgt_mask).mean())
            dice.append(dice_per_mask(pred_mask, tgt_mask).mean())
            if s is None:
                continue
            with torch.no_grad():
                iou = mask_iou(pred_mask, tgt_mask)
            keep = iou > 0.5
            if bool(keep.any()):  # upstream's rule (a host sync; the baseline is kept faithful)
                score_losses.append(F.mse_loss(s[iq][keep, 0], iou[keep].to(s.dtype)))
        if bce:
            bce_loss = torch.stack(bce).sum() / b
            dice_loss = torch.stack(dice).sum() / (1 if index == 0 else b)
            if self.fix_dice_loss_weight:
                dice_loss = dice_loss / b * 4
            if self.fix_mean_loss:
                bce_loss = bce_loss * b / len(bce)
                dice_loss = dice_loss * b / len(dice)
        else:
            bce_loss = dice_loss = zero
        out = {"loss_ce": cls_loss, "loss_mask": bce_loss, "loss_dice": dice_loss}
        if any(s is not None for s in scores):
            out["loss_score"] = torch.stack(score_losses).sum() / b if score_losses else zero
        return out
