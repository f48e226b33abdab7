"""OneFormer3D's Hungarian ``InstanceCriterion`` as an mmdet3d model: a thin adapter over
:class:`influencer_core.OneFormer3DHungarianCriterion` (all matching and loss math is there)."""
from __future__ import annotations

from typing import Dict

from torch import Tensor

from influencer_core import OneFormer3DHungarianCriterion

from ..registry import register_model
from .criterion_inputs import CoreCriterionAdapter

__all__ = ["HungarianInstanceCriterion"]

_COSTS = {"QueryClassificationCost": "class_cost", "MaskBCECost": "mask_cost", "MaskDiceCost": "dice_cost"}
_MATCHERS = {"HungarianMatcher": "hungarian", "SparseMatcher": "sparse"}


# OneFormer3D's name only where OneFormer3D itself is absent (registering it first would make
# ``import oneformer3d`` fail on the duplicate name)
@register_model("InstanceCriterion", only_without="oneformer3d")
@register_model("HungarianInstanceCriterion")
class HungarianInstanceCriterion(CoreCriterionAdapter):
    """Drop-in for OneFormer3D's ``InstanceCriterion`` (same arguments; registered as
    ``InstanceCriterion`` where OneFormer3D is not installed).

    ``matcher``: ``dict(type='HungarianMatcher', costs=[...])`` (one-to-one) or
    ``dict(type='SparseMatcher', costs=[...], topk=k)`` (ScanNet: each instance takes up to
    ``k`` queries lying inside it, ``query_masks`` in the ground truth); costs
    ``QueryClassificationCost``, ``MaskBCECost``, ``MaskDiceCost`` with weights.
    ``loss_weight``: ``[cls, bce, dice, score]``; ``check_values``: the core's value checks (one host sync
    per call, see ``influencer_core.validation``); ``hybrid_capacity`` (ours): with a hybrid query
    group (``QueryDecoder(num_hybrid_queries=...)``) every instance is repeated that often for
    its matching (H-DETR's one-to-many branch).  Returns ``{'inst_loss': scalar}``, the sum
    over the final and every auxiliary layer; semantics in the core class's docstring.  Not an
    ``nn.Module`` (as upstream), so a model's checkpoint layout is unchanged; the final layer's
    detached losses of the last call are kept in ``last_stats``.
    """

    def __init__(self, matcher, loss_weight, non_object_weight, num_classes,
                 fix_dice_loss_weight, iter_matcher, fix_mean_loss=False, check_values=True, hybrid_capacity=3):
        mtype = matcher.get("type", "HungarianMatcher")
        if mtype not in _MATCHERS:
            raise NotImplementedError(f"matcher type {mtype!r}: use 'HungarianMatcher' or 'SparseMatcher'")
        if mtype == "SparseMatcher" and "topk" not in matcher:
            raise ValueError("SparseMatcher needs topk (queries matched per instance), e.g. topk=1")
        costs = {name: 0.0 for name in _COSTS.values()}
        for cost in matcher.get("costs", []):
            if cost["type"] not in _COSTS:
                raise ValueError(f"unknown matching cost {cost['type']!r}; known: {list(_COSTS)}")
            costs[_COSTS[cost["type"]]] += float(cost["weight"])
        if len(loss_weight) != 4:
            raise ValueError(f"loss_weight must be [cls, bce, dice, score], got {loss_weight}")
        self.loss_weight = list(loss_weight)
        self.num_classes = num_classes
        self.matcher_type = mtype
        self.core = OneFormer3DHungarianCriterion(
            num_classes, class_weight=loss_weight[0], mask_weight=loss_weight[1], dice_weight=loss_weight[2],
            score_weight=loss_weight[3], no_object_weight=non_object_weight, matcher=_MATCHERS[mtype],
            topk=matcher.get("topk", None), fix_dice_loss_weight=fix_dice_loss_weight, fix_mean_loss=fix_mean_loss,
            iter_matcher=iter_matcher, check_values=check_values, hybrid_capacity=hybrid_capacity, **costs)
        self.last_stats: Dict[str, Tensor] = {}

    @property
    def topk(self):
        return self.core.topk

