"""Instance criteria for OneFormer3D-style models (mmdet3d plugin), thin wrappers over influencer_core.

Both criteria are drop-ins for OneFormer3D's ``InstanceCriterion``: ``criterion(pred, insts)``
returns ``{'inst_loss': scalar}`` where

* ``pred``: ``cls_preds`` (list over scenes of [Q_i, C+1]), ``scores`` (list of [Q_i, 1] or of
  ``None``, or ``None``), ``masks`` (list of [Q_i, P_i] superpoint logits) and optionally
  ``aux_outputs`` (list of dicts with the same keys, earlier decoder layers);
* ``insts``: list over scenes of InstanceData-like objects (or dicts) with ``sp_masks`` [K_i, P_i]
  (bool or {0, 1} float) and ``labels_3d`` [K_i].

OneFormer3D's models return the criterion's dict as their loss dict and mmengine sums every
key containing ``'loss'``, so only ``inst_loss`` is returned; detached statistics of the last
call are kept in ``criterion.last_stats``.  Neither criterion is an ``nn.Module`` (as upstream),
so a model's ``state_dict`` / checkpoint layout is unchanged.  Inputs are never modified.

All loss math (pairwise costs, assignment, BCE, dice, transport, influencer terms, IoU) is
``influencer_core``'s; this module only routes OneFormer3D's data structures to it.
"""
from __future__ import annotations

import importlib.util
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from influencer_core import MaskBatch
from influencer_core.criterion import (
    HungarianCriterion,
    OTInfluencerCriterion,
    ReferenceInfluencerCriterion,
)
from influencer_core.hungarian import (
    dice_per_mask,
    linear_assignment,
    mask_iou,
    pairwise_mask_iou,
    pairwise_class_cost,
    pairwise_dice,
    pairwise_sigmoid_ce,
    sigmoid_ce_per_mask,
)
from influencer_core.transport import sinkhorn_plan

try:  # registration only when mmdet3d is importable; the classes work without it
    from mmdet3d.registry import MODELS
except ImportError:  # pragma: no cover
    MODELS = None

__all__ = ["InfluencerCriterion", "HungarianInstanceCriterion"]


# ---------------------------------------------------------------------------------------------
# input helpers (no math)
# ---------------------------------------------------------------------------------------------
def _field(inst, name):
    if isinstance(inst, dict):
        return inst[name]
    return getattr(inst, name)


def _optional_field(inst, name):
    if isinstance(inst, dict):
        return inst.get(name, None)
    getter = getattr(inst, "get", None)
    if callable(getter):  # mmengine data elements
        return getter(name, None)
    return getattr(inst, name, None)


def _num_insts(inst) -> int:
    return int(_field(inst, "labels_3d").shape[0])


def _layers(pred: Dict) -> List[Dict]:
    """The final prediction followed by the auxiliary ones (as OneFormer3D iterates them)."""
    return [pred] + list(pred.get("aux_outputs", None) or [])


def _scores(layer: Dict, n: int) -> List[Optional[Tensor]]:
    scores = layer.get("scores", None)
    return [None] * n if scores is None else list(scores)


def _check(layer: Dict, insts: Sequence, num_classes: int) -> None:
    for key in ("cls_preds", "masks"):
        if key not in layer:
            raise KeyError(f"pred lacks '{key}': expected OneFormer3D decoder outputs (cls_preds, scores, masks)")
    if len(layer["cls_preds"]) != len(insts) or len(layer["masks"]) != len(insts):
        raise ValueError(f"{len(layer['cls_preds'])} predictions for {len(insts)} scenes")
    for i, (cls, m, inst) in enumerate(zip(layer["cls_preds"], layer["masks"], insts)):
        if cls.shape[-1] != num_classes + 1:
            raise ValueError(f"scene {i}: cls_preds has {cls.shape[-1]} columns, expected num_classes + 1 = "
                             f"{num_classes + 1}")
        if m.shape[0] != cls.shape[0]:
            raise ValueError(f"scene {i}: {m.shape[0]} mask rows but {cls.shape[0]} class rows")
        sp = _field(inst, "sp_masks")
        if sp.shape[0] != _num_insts(inst):
            raise ValueError(f"scene {i}: {sp.shape[0]} sp_masks but {_num_insts(inst)} labels_3d")
        if sp.shape[0] and sp.shape[1] != m.shape[1]:
            raise ValueError(f"scene {i}: sp_masks cover {sp.shape[1]} superpoints, masks {m.shape[1]}")


def _pad_points(masks: Sequence[Tensor], p: int) -> Tensor:
    """Stack [Q, P_i] logits of scenes with the same Q into [n, Q, p] (zero padding; the padded
    points are excluded by the packed targets' ``point_valid``)."""
    out = masks[0].new_zeros(len(masks), masks[0].shape[0], p)
    for j, m in enumerate(masks):
        out[j, :, : m.shape[1]] = m
    return out


def _query_groups(cls_preds: Sequence[Tensor]) -> List[List[int]]:
    """Scenes grouped by query count (ScanNet samples a random number of queries per scene)."""
    groups: Dict[int, List[int]] = {}
    for i, c in enumerate(cls_preds):
        groups.setdefault(int(c.shape[0]), []).append(i)
    return list(groups.values())


def _sub_batch(packed: MaskBatch, idx: List[int]) -> MaskBatch:
    sel = torch.as_tensor(idx, device=packed.masks.device)
    return MaskBatch(packed.masks[sel], packed.valid[sel], packed.point_valid[sel])


def _register(cls, name: str):
    if MODELS is not None and name not in MODELS.module_dict:
        MODELS.register_module(name=name, module=cls)
    return cls


# ---------------------------------------------------------------------------------------------
# InfluencerCriterion (matching-free)
# ---------------------------------------------------------------------------------------------
class InfluencerCriterion:
    """Matching-free instance criterion, drop-in for OneFormer3D's ``InstanceCriterion``.

    Args:
        loss_weight: ``[cls, influencer_scale]`` (a third element, if given, overrides
            ``score_weight``).  Per decoder layer the loss is
            ``cls * loss_ce + influencer_scale * mask_loss + score_weight * score_loss``.
        num_classes: instance classes (``cls_preds`` has ``num_classes + 1`` columns).
        non_object_weight: CE weight of the "no object" class (OneFormer3D S3DIS: 0.05).
        variant: ``'ot'`` (default) - :class:`influencer_core.OTInfluencerCriterion`: class, BCE,
            dice and no-object losses from one entropic transport plan (``epsilon``,
            ``sinkhorn_iters``, ``mask_weight``, ``dice_weight``, ``exclusion_weight``,
            ``class_target``: ``'mass'`` or ``'query'``, ``aux_capacity``, ``exclusion_overlap``:
            see the core class);
            mask_loss = ``mask_weight * loss_mask + dice_weight * loss_dice +
            exclusion_weight * loss_exclusion``; the plan's cost uses ``cls`` as class weight.
            ``'reference'`` - :class:`influencer_core.MaskInfluencerLoss` (``attr_weight``,
            ``rep_weight``, ``bg_weight``, ``rep_margin``, ``temperature``) as mask_loss, class
            targets from each instance's best-profile query.
        score_weight: weight of the objectness (``scores``) MSE; OneFormer3D uses 0.5.
        score_iou_thr: as OneFormer3D, only (query, instance) pairs with IoU > thr supervise the
            score (``None``: all pairs).
        iter_matcher: accepted for config compatibility; with ``'ot'`` and ``False`` the
            auxiliary layers reuse the final layer's plan (as OneFormer3D reuses its matching).

    Objectness target ('ot'): ``t_q = sum_k plan[q,k] IoU(q,k) / m_q`` with
    ``m_q = sum_k plan[q,k]`` over pairs passing the IoU filter; the squared error is weighted
    by ``m_q`` (per scene: weighted mean; summed over scenes / number of scenes, as upstream).
    'reference': IoU of each claimed query with the instance that claims it.
    """

    def __init__(self, num_classes: int, loss_weight: Sequence[float] = (0.5, 1.0),
                 non_object_weight: float = 0.1, variant: str = "ot",
                 attr_weight: float = 1.0, rep_weight: float = 1.0, bg_weight: float = 1.0,
                 rep_margin: float = 1.0, temperature: float = 1.0,
                 mask_weight: float = 1.0, dice_weight: float = 1.0, exclusion_weight: float = 0.0,
                 epsilon: float = 0.05, sinkhorn_iters: int = 50, class_target: str = "query",
                 aux_capacity: float = 1.0, exclusion_overlap: float = 0.5,
                 score_weight: float = 0.5, score_iou_thr: Optional[float] = 0.5,
                 iter_matcher: bool = True, matcher=None, fix_dice_loss_weight=None, fix_mean_loss=None):
        loss_weight = list(loss_weight)
        if len(loss_weight) not in (2, 3):
            raise ValueError(f"loss_weight must be [cls, influencer_scale] (optionally + score), got {loss_weight}")
        if variant not in ("ot", "reference"):
            raise ValueError(f"variant must be 'ot' or 'reference', got {variant!r}")
        self.loss_weight = loss_weight
        self.cls_weight = float(loss_weight[0])
        self.influencer_scale = float(loss_weight[1])
        self.score_weight = float(loss_weight[2]) if len(loss_weight) == 3 else float(score_weight)
        self.score_iou_thr = score_iou_thr
        self.num_classes = num_classes
        self.non_object_weight = non_object_weight
        self.variant = variant
        self.iter_matcher = iter_matcher
        if variant == "ot":
            self.core = OTInfluencerCriterion(
                num_classes, class_weight=self.cls_weight, mask_weight=mask_weight, dice_weight=dice_weight,
                exclusion_weight=exclusion_weight, no_object_weight=non_object_weight,
                epsilon=epsilon, sinkhorn_iters=sinkhorn_iters, class_target=class_target,
                aux_capacity=aux_capacity, exclusion_overlap=exclusion_overlap)
        else:
            self.core = ReferenceInfluencerCriterion(
                num_classes, class_weight=self.cls_weight, influencer_weight=self.influencer_scale,
                no_object_weight=non_object_weight, attr_weight=attr_weight, rep_weight=rep_weight,
                bg_weight=bg_weight, rep_margin=rep_margin, temperature=temperature)
        self.last_stats: Dict[str, Tensor] = {}

    # epsilon annealing from a hook: ``criterion.epsilon = ...``
    @property
    def epsilon(self) -> float:
        return self.core.epsilon

    @epsilon.setter
    def epsilon(self, value: float) -> None:
        self.core.epsilon = value

    # ---- shared preparation ---------------------------------------------------------------
    def _state(self, pred: Dict, insts: Sequence) -> Dict:
        """Packed targets and labels for all scenes and layers (one all-reduce of the mask count).

        ``prepare`` reads only the device of ``pred_logits`` and the point counts of ``pred_masks``,
        so scenes with different query counts can share it.
        """
        targets = [{"labels": _field(t, "labels_3d"), "masks": _field(t, "sp_masks")} for t in insts]
        return self.core.prepare({"pred_logits": pred["cls_preds"][0][None], "pred_masks": list(pred["masks"])},
                                 targets)

    def __call__(self, pred: Dict, insts: Sequence) -> Dict[str, Tensor]:
        layers = _layers(pred)
        for layer in layers:
            _check(layer, insts, self.num_classes)
        state = self._state(pred, insts)
        if self.variant == "ot":
            per_layer = self._ot_losses(layers, insts, state)
        else:
            per_layer = [self._reference_losses(layer, insts, state) for layer in layers]
        total = None
        for parts in per_layer:
            layer_total = (self.cls_weight * parts["cls"] + self.influencer_scale * parts["mask"]
                           + self.score_weight * parts["score"])
            total = layer_total if total is None else total + layer_total
        self.last_stats = {k: torch.as_tensor(v).detach() for k, v in per_layer[0].items()}
        return {"inst_loss": total}

    # ---- 'ot' ------------------------------------------------------------------------------
    def _ot_losses(self, layers: List[Dict], insts: Sequence, state: Dict) -> List[Dict[str, Tensor]]:
        core: OTInfluencerCriterion = self.core
        packed: MaskBatch = state["targets"]
        p_all = packed.masks.shape[-1]
        k_pad = packed.masks.shape[1]
        n_layers = len(layers)
        eos = core.no_object_weight
        acc = [dict(ce_num=0.0, ce_den=0.0, mask=0.0, dice=0.0, excl=0.0, mass=0.0) for _ in layers]
        plans_by_layer: List[Dict[int, Tensor]] = [dict() for _ in layers]  # scene -> [Q_i, K_pad + 1]
        for idx in _query_groups(layers[0]["cls_preds"]):
            sub = dict(state, targets=_sub_batch(packed, idx), labels=state["labels"][idx])
            costs = []
            for layer in layers:
                logits = torch.stack([layer["cls_preds"][i] for i in idx])
                x = _pad_points([layer["masks"][i] for i in idx], p_all)
                costs.append(core.pair_costs(logits, x, sub["targets"], sub["labels"]))
            valid = sub["targets"].valid
            if self.iter_matcher or n_layers == 1:
                plans = sinkhorn_plan(torch.cat([core.cost_matrix(c) for c in costs], 0),
                                      valid.repeat(n_layers, 1), core.epsilon, core.sinkhorn_iters,
                                      capacity=core.layer_capacities(n_layers, valid)).chunk(n_layers, 0)
            else:  # OneFormer3D's iter_matcher=False: every layer uses the final layer's assignment
                plans = [core.plan(costs[0], valid)] * n_layers
            for li, (c, plan) in enumerate(zip(costs, plans)):
                out = core.losses_from_plan(c, plan, sub)
                # combine query groups exactly as one batch: CE is a weighted mean over queries,
                # the mask terms are already sums divided by the batch's number of masks
                den = (plan[..., :k_pad] * valid.float().unsqueeze(1)).sum() + eos * plan[..., k_pad].sum()
                a = acc[li]
                a["ce_num"] = a["ce_num"] + out["loss_ce"] * den
                a["ce_den"] = a["ce_den"] + den
                a["mask"] = a["mask"] + out["loss_mask"]
                a["dice"] = a["dice"] + out["loss_dice"]
                a["excl"] = a["excl"] + out["loss_exclusion"]
                a["mass"] = a["mass"] + (plan[..., :k_pad] * valid.float().unsqueeze(1)).sum()
                for j, i in enumerate(idx):
                    plans_by_layer[li][i] = plan[j]
        results = []
        n_valid = packed.valid.sum().clamp(min=1)
        for li, layer in enumerate(layers):
            a = acc[li]
            mask_loss = core.mask_weight * a["mask"] + core.dice_weight * a["dice"]
            if core.exclusion_weight:
                mask_loss = mask_loss + core.exclusion_weight * a["excl"]
            score = self._ot_score_loss(layer, insts, plans_by_layer[li], k_pad)
            results.append({
                "cls": a["ce_num"] / a["ce_den"].clamp(min=1e-6),
                "mask": mask_loss,
                "score": score,
                "bce": a["mask"], "dice": a["dice"],
                "assigned_mass": (a["mass"] / n_valid),
            })
        return results

    @staticmethod
    def _keep_graph(scores: Sequence[Optional[Tensor]]) -> Tensor:
        """Zero that depends on every score tensor (no unused parameters under DDP)."""
        terms = [s.sum() * 0.0 for s in scores if s is not None]
        return torch.stack(terms).sum() if terms else 0.0

    @staticmethod
    def _weighted_mse(score: Tensor, target: Tensor, weight: Tensor) -> Tensor:
        """Per-scene mean squared error weighted by the queries' assigned mass."""
        total_w = weight.sum()
        err = F.mse_loss(score.float(), target, reduction="none")
        return (weight * err).sum() / total_w.clamp(min=1e-6)

    def _ot_score_loss(self, layer: Dict, insts: Sequence, plans: Dict[int, Tensor], k_pad: int):
        scores = _scores(layer, len(insts))
        total = self._keep_graph(scores)
        for i, (s, inst) in enumerate(zip(scores, insts)):
            k = _num_insts(inst)
            if s is None or k == 0:
                continue
            with torch.no_grad():
                masks = layer["masks"][i].detach()
                iou = pairwise_mask_iou(masks, _field(inst, "sp_masks").to(masks.device))  # [Q, K]
                pi = plans[i][:, :k]
                if self.score_iou_thr is not None:
                    pi = pi * (iou > self.score_iou_thr).float()
                mass = pi.sum(1)
                target = (pi * iou).sum(1) / mass.clamp(min=1e-12)
            # no host sync: with no supervised pair the weights are all zero and so is the term
            total = total + self._weighted_mse(s[:, 0], target, mass)
        return total / len(insts)

    # ---- 'reference' -----------------------------------------------------------------------
    def _reference_losses(self, layer: Dict, insts: Sequence, state: Dict) -> Dict[str, Tensor]:
        core: ReferenceInfluencerCriterion = self.core
        packed: MaskBatch = state["targets"]
        p_all = packed.masks.shape[-1]
        k_pad = packed.masks.shape[1]
        infl_sum = 0.0
        cls_logits, cls_targets = [], []
        claimed: Dict[int, Tensor] = {}
        scores = _scores(layer, len(insts))
        for idx in _query_groups(layer["cls_preds"]):
            sub_packed = _sub_batch(packed, idx)
            labels = state["labels"][idx]
            x = _pad_points([layer["masks"][i] for i in idx], p_all)
            res = core.mask_loss(x, sub_packed, return_per_image=True)
            infl_sum = infl_sum + res["per_image"].sum()
            q = x.shape[1]
            cls_targets.append(core.claim_classes(res["profiles"], sub_packed.valid, labels, q).reshape(-1))
            cls_logits.append(torch.stack([layer["cls_preds"][i] for i in idx]).reshape(-1, self.num_classes + 1))
            if any(scores[i] is not None for i in idx):
                # the instance claiming each query: the same rule with instance indices (negative,
                # so "unclaimed" = num_classes stays distinguishable) in place of labels
                ids = torch.arange(k_pad, device=labels.device).expand_as(labels) - k_pad
                who = core.claim_classes(res["profiles"], sub_packed.valid, ids, q)
                for j, i in enumerate(idx):
                    claimed[i] = who[j]
        loss_ce = core.class_loss(torch.cat(cls_logits)[None], torch.cat(cls_targets)[None])
        total = self._keep_graph(scores)
        for i, (s, inst) in enumerate(zip(scores, insts)):
            if s is None or _num_insts(inst) == 0:
                continue
            who = claimed[i]
            q_idx = torch.nonzero(who < 0, as_tuple=True)[0]
            if q_idx.numel() == 0:
                continue
            k_idx = who[q_idx] + k_pad
            with torch.no_grad():
                tgt = mask_iou(layer["masks"][i].detach()[q_idx],
                               _field(inst, "sp_masks").to(q_idx.device)[k_idx])
                keep = torch.ones_like(tgt, dtype=torch.bool) if self.score_iou_thr is None else tgt > self.score_iou_thr
            if bool(keep.any()):
                total = total + F.mse_loss(s[q_idx[keep], 0].float(), tgt[keep])
        return {"cls": loss_ce, "mask": infl_sum / len(insts), "score": total / len(insts)}


# ---------------------------------------------------------------------------------------------
# HungarianInstanceCriterion (OneFormer3D's InstanceCriterion)
# ---------------------------------------------------------------------------------------------
_SPARSE_INF = 1e8  # cost of (query, instance) pairs excluded by query_masks (as upstream)


@torch.no_grad()
def sparse_match(cost: Tensor, query_masks: Tensor, topk: int):
    """OneFormer3D's ``SparseMatcher`` rule on one scene.

    Args:
        cost: [Q, K] matching cost.
        query_masks: [K, Q] bool, query q may be matched to instance k.
        topk: queries per instance.

    Returns:
        (query ids [M], instance ids [M]) int64, sorted by query then instance: the pairs whose
        cost (``1e8`` outside ``query_masks``) is strictly below the instance's ``topk + 1``-th
        smallest cost; with fewer than ``topk + 1`` queries the threshold is ``1e8`` (all allowed
        pairs), where upstream's ``torch.topk`` would fail.
    """
    if cost.shape[1] == 0:
        empty = torch.zeros(0, dtype=torch.long, device=cost.device)
        return empty, empty
    masked = torch.where(query_masks.T.bool(), cost.float(), cost.new_full((), _SPARSE_INF, dtype=torch.float32))
    if masked.shape[0] > topk:
        thr = masked.topk(topk + 1, dim=0, largest=False, sorted=True).values[-1:]
    else:
        thr = masked.new_full((1, masked.shape[1]), _SPARSE_INF)
    q_idx, k_idx = torch.nonzero(masked < thr, as_tuple=True)
    return q_idx, k_idx


_COSTS = ("QueryClassificationCost", "MaskBCECost", "MaskDiceCost")


class HungarianInstanceCriterion:
    """OneFormer3D's ``InstanceCriterion`` semantics on influencer_core's functions.

    Matching per scene (no gradient): ``sum_j w_j cost_j`` with ``QueryClassificationCost``
    (-softmax prob of the instance's class), ``MaskBCECost`` (mean sigmoid BCE over the
    superpoints) and ``MaskDiceCost`` (dice with +1 smoothing), scipy's assignment; scenes with
    no instance match nothing.  Per layer:

    * cls: per scene CE over all queries (unmatched -> no object, class weights
      ``[1] * num_classes + [non_object_weight]``, weighted mean), mean over scenes;
    * bce / dice: per scene with instances, mean over matched pairs; summed over scenes, bce
      divided by the number of scenes B; dice divided by B **only in the auxiliary layers**
      (upstream's final layer sums); ``fix_dice_loss_weight``: dice / B * 4;
      ``fix_mean_loss``: both * B / (scenes with instances);
    * score (when ``scores`` are given): MSE between the matched queries' scores and the IoU of
      their binarised masks (sigmoid >= 0.5) with the instance, only pairs with IoU > 0.5;
      summed over scenes / B;
    * ``loss_weight[0] * cls + [1] * bce + [2] * dice + [3] * score``, summed over the final and
      every auxiliary layer; ``iter_matcher``: re-match each auxiliary layer, else reuse the
      final layer's matching.

    ``matcher``: ``dict(type='HungarianMatcher', costs=[...])`` (one-to-one) or
    ``dict(type='SparseMatcher', costs=[...], topk=k)`` (OneFormer3D ScanNet): every instance is
    matched to the (at most) ``k`` queries of lowest cost among the queries lying inside it,
    given per scene as ``query_masks`` [K, Q] (bool); see :func:`sparse_match`.
    """

    def __init__(self, matcher, loss_weight, non_object_weight, num_classes,
                 fix_dice_loss_weight, iter_matcher, fix_mean_loss=False):
        mtype = matcher.get("type", "HungarianMatcher")
        if mtype not in ("HungarianMatcher", "SparseMatcher"):
            raise NotImplementedError(f"matcher type {mtype!r}: use 'HungarianMatcher' or 'SparseMatcher'")
        self.matcher_type = mtype
        self.topk = None
        if mtype == "SparseMatcher":
            if "topk" not in matcher:
                raise ValueError("SparseMatcher needs topk (queries matched per instance), e.g. topk=1")
            self.topk = int(matcher["topk"])
            if self.topk < 1:
                raise ValueError(f"SparseMatcher topk must be >= 1, got {self.topk}")
        self.cost_weights = {name: 0.0 for name in _COSTS}
        for cost in matcher.get("costs", []):
            if cost["type"] not in self.cost_weights:
                raise ValueError(f"unknown matching cost {cost['type']!r}; known: {list(_COSTS)}")
            self.cost_weights[cost["type"]] += float(cost["weight"])
        if len(loss_weight) != 4:
            raise ValueError(f"loss_weight must be [cls, bce, dice, score], got {loss_weight}")
        self.loss_weight = list(loss_weight)
        self.num_classes = num_classes
        self.non_object_weight = non_object_weight
        self.fix_dice_loss_weight = fix_dice_loss_weight
        self.iter_matcher = iter_matcher
        self.fix_mean_loss = fix_mean_loss
        # class_loss (weighted CE with the no-object weight) of influencer_core
        self.core = HungarianCriterion(num_classes, class_weight=1.0, no_object_weight=non_object_weight)
        self.last_stats: Dict[str, Tensor] = {}

    @torch.no_grad()
    def match(self, layer: Dict, insts: Sequence):
        """Per scene (query ids, instance ids) int64 pairs (Hungarian or sparse matching)."""
        costs = []
        w = self.cost_weights
        for cls, m, inst in zip(layer["cls_preds"], layer["masks"], insts):
            labels = _field(inst, "labels_3d").to(cls.device)
            tgt = _field(inst, "sp_masks").to(m.device).float()
            if labels.numel() == 0:
                costs.append(cls.new_zeros(cls.shape[0], 0, dtype=torch.float32))
                continue
            costs.append(w["QueryClassificationCost"] * pairwise_class_cost(cls, labels)
                         + w["MaskBCECost"] * pairwise_sigmoid_ce(m, tgt)
                         + w["MaskDiceCost"] * pairwise_dice(m, tgt))
        if self.matcher_type == "HungarianMatcher":
            return linear_assignment(costs)
        out = []
        for i, (cost, inst) in enumerate(zip(costs, insts)):
            query_masks = _optional_field(inst, "query_masks")
            if query_masks is None:
                raise KeyError(f"scene {i}: SparseMatcher needs query_masks [K, Q] (instance x query "
                               "membership) in the ground truth; ScanNetOneFormer3D sets them when it "
                               "selects queries")
            if tuple(query_masks.shape) != (cost.shape[1], cost.shape[0]):
                raise ValueError(f"scene {i}: query_masks has shape {tuple(query_masks.shape)}, expected "
                                 f"(instances, queries) = ({cost.shape[1]}, {cost.shape[0]})")
            out.append(sparse_match(cost, query_masks.to(cost.device), self.topk))
        return out

    def layer_loss(self, layer: Dict, insts: Sequence, indices, final: bool):
        cls_preds, masks = layer["cls_preds"], layer["masks"]
        scores = _scores(layer, len(insts))
        b = len(masks)
        cls_losses = []
        for cls, inst, (iq, ik) in zip(cls_preds, insts, indices):
            target = torch.full((cls.shape[0],), cls.shape[1] - 1, dtype=torch.long, device=cls.device)
            target[iq] = _field(inst, "labels_3d").to(cls.device)[ik]
            cls_losses.append(self.core.class_loss(cls[None], target[None]))
        cls_loss = torch.stack(cls_losses).mean()

        bce, dice, score_losses = [], [], []
        for m, s, inst, (iq, ik) in zip(masks, scores, insts, indices):
            # no instance (upstream's test), or - SparseMatcher only - no query inside any of
            # them, where upstream's mean over zero pairs would give NaN
            if _num_insts(inst) == 0 or iq.numel() == 0:
                continue
            pred_mask = m[iq]
            tgt_mask = _field(inst, "sp_masks").to(m.device)[ik].float()
            bce.append(sigmoid_ce_per_mask(pred_mask, tgt_mask).mean())
            dice.append(dice_per_mask(pred_mask, tgt_mask).mean())
            if s is None:
                continue
            with torch.no_grad():
                iou = mask_iou(pred_mask, tgt_mask)
            keep = iou > 0.5
            if bool(keep.any()):
                score_losses.append(F.mse_loss(s[iq][keep, 0], iou[keep].to(s.dtype)))
        score_loss = torch.stack(score_losses).sum() / b if score_losses else 0
        if bce:
            bce_loss = torch.stack(bce).sum() / b
            dice_loss = torch.stack(dice).sum() / (1 if final else b)
            if self.fix_dice_loss_weight:
                dice_loss = dice_loss / b * 4
            if self.fix_mean_loss:
                bce_loss = bce_loss * b / len(bce)
                dice_loss = dice_loss * b / len(dice)
        else:
            bce_loss = dice_loss = 0
        lw = self.loss_weight
        total = lw[0] * cls_loss + lw[1] * bce_loss + lw[2] * dice_loss + lw[3] * score_loss
        return total, dict(cls=cls_loss, bce=bce_loss, dice=dice_loss, score=score_loss)

    def __call__(self, pred: Dict, insts: Sequence) -> Dict[str, Tensor]:
        _check(pred, insts, self.num_classes)
        indices = self.match(pred, insts)
        loss, stats = self.layer_loss(pred, insts, indices, final=True)
        if "aux_outputs" in pred:
            for aux in pred["aux_outputs"] or []:
                _check(aux, insts, self.num_classes)
                aux_indices = self.match(aux, insts) if self.iter_matcher else indices
                loss = loss + self.layer_loss(aux, insts, aux_indices, final=False)[0]
        self.last_stats = {k: (v.detach() if isinstance(v, Tensor) else torch.tensor(float(v)))
                           for k, v in stats.items()}
        return {"inst_loss": loss}


_register(InfluencerCriterion, "InfluencerCriterion")
_register(HungarianInstanceCriterion, "HungarianInstanceCriterion")
# The OneFormer3D name, only where OneFormer3D itself is absent (registering it first would make
# ``import oneformer3d`` fail on the duplicate name) and the name is free.
if importlib.util.find_spec("oneformer3d") is None:
    _register(HungarianInstanceCriterion, "InstanceCriterion")
