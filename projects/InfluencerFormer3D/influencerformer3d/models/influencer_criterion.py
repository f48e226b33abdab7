"""Matching-free ``InfluencerCriterion`` for OneFormer3D-style models: a thin adapter over
influencer_core (``variant='ot'``: :class:`~influencer_core.OTInfluencerCriterion`,
``'reference'``: :class:`~influencer_core.ReferenceInfluencerCriterion`).

The adapter renames OneFormer3D's keys, maps its arguments onto the core's options and applies
``loss_weight``; the loop over decoder layers, the transport plan, every loss and the
objectness term are the core's.
"""
from __future__ import annotations

import warnings
from typing import Dict, Sequence

from torch import Tensor

from influencer_core import OTInfluencerCriterion, ReferenceInfluencerCriterion, criterion_options
from influencer_core.validation import check_flag, check_number

from ..registry import register_model
from .criterion_inputs import CoreCriterionAdapter

__all__ = ["InfluencerCriterion", "VARIANTS", "DEFAULTS", "CORE_ONLY"]

VARIANTS = {"ot": OTInfluencerCriterion, "reference": ReferenceInfluencerCriterion}

#: the project's 3D values where they differ from the core's (2D, Mask2Former-scaled) defaults;
#: a config states only what depends on its dataset (num_classes, non_object_weight).
#: The 'ot' plan is near-hard (epsilon 0.002 from the first iteration, 300 Sinkhorn iterations so
#: that it converges at that epsilon, upstream's -p(class) cost): on the 3D study with 150
#: training rooms it gave 53.9 mAP on 40 fresh rooms against 49.3 for the earlier soft plan
#: (epsilon annealed 0.1 -> 0.002, 50 iterations, CE class cost) and 54.5 for Hungarian, ahead
#: of the soft plan on each of three seeds (docs/convergence_3d.md).  The exclusion term is off
#: (the core's 0): no significant mAP change on 40 fresh rooms, fewer duplicates when on.
DEFAULTS = dict(mask_weight=1.0, dice_weight=1.0, epsilon=0.002, sinkhorn_iters=300, class_cost="prob",
                bg_weight=0.1, score_weight=0.5, score_iou_thr=0.5)

#: ``fix_dice_loss_weight`` when a config does not set it: upstream's S3DIS and ScanNet configs
#: set ``True``, and the near-hard plan above was measured with it
_AUTO = "auto"

#: core options a 3D config sets another way or that do not apply to superpoints
CORE_ONLY = {
    "class_weight": "loss_weight[0]",
    "influencer_weight": "loss_weight[1]",
    "no_object_weight": "non_object_weight",
    "reuse_final_plan": "iter_matcher=False",
    "deep_supervision": "always on: OneFormer3D supervises every decoder layer",
    "num_points": "image mode only (superpoints use every point)",
    "oversample_ratio": "image mode only",
    "importance_sample_ratio": "image mode only",
}


def _options(variant: str) -> set:
    return set(criterion_options(VARIANTS[variant])) - set(CORE_ONLY)


@register_model("InfluencerCriterion")
class InfluencerCriterion(CoreCriterionAdapter):
    """Drop-in for OneFormer3D's ``InstanceCriterion``: ``criterion(pred, insts)`` returns
    ``{'inst_loss': scalar}`` summed over the final and every auxiliary decoder layer.

    Args:
        num_classes: instance classes (``cls_preds`` has ``num_classes + 1`` columns).
        loss_weight: ``[cls, mask_scale]`` (a third element overrides ``score_weight``): the class
            weight of the loss and of the plan's cost, and a factor on the mask terms
            (``'ot'``: mask, dice and exclusion losses; ``'reference'``: the influencer term).
        non_object_weight: CE weight of "no object" (OneFormer3D: 0.05 on S3DIS, 0.1 on ScanNet).
        variant: ``'ot'`` (default) or ``'reference'``.
        iter_matcher: ``False`` supervises every layer with the final layer's plan ('ot'), as
            OneFormer3D reuses its matching.
        fix_dice_loss_weight: ('ot') weigh the dice loss of each layer as OneFormer3D's
            ``InstanceCriterion`` with the same flag does, so a config that swaps the criterion
            keeps the baseline's loss balance: ``True`` x4 in the final layer and x4/B in the
            auxiliary ones (B scenes in the batch; the default for 'ot', as upstream's S3DIS and
            ScanNet configs), ``False`` xB and x1 (upstream's final layer sums its scenes' dice),
            ``None`` x1 everywhere.  Only the loss changes, not the plan's cost (as upstream's
            matcher keeps its dice cost).
        **options: any option of the variant's core class (see its docstring), e.g. ``epsilon``,
            ``sinkhorn_iters``, ``exclusion_weight``, ``class_target``, ``aux_capacity``,
            ``score_weight``, ``score_iou_thr`` ('ot'); ``attr_weight``, ``rep_weight``,
            ``bg_weight``, ``rep_margin``, ``temperature`` ('reference').  Defaults: the core's,
            except :data:`DEFAULTS`.  Options of the other variant are ignored with a warning
            (configs that switch ``variant`` keep working); unknown names are an error.

    Not an ``nn.Module`` (as upstream), so a model's checkpoint layout is unchanged; the final
    layer's detached losses of the last call are kept in ``last_stats``.
    """

    def __init__(self, num_classes: int, loss_weight: Sequence[float] = (0.5, 1.0),
                 non_object_weight: float = 0.1, variant: str = "ot", iter_matcher: bool = True,
                 matcher=None, fix_dice_loss_weight=_AUTO, fix_mean_loss=None, **options):
        loss_weight = list(loss_weight)
        if len(loss_weight) not in (2, 3):
            raise ValueError(f"loss_weight must be [cls, mask_scale] (optionally + score), got {loss_weight}")
        for i, w in enumerate(loss_weight):
            check_number("InfluencerCriterion", f"loss_weight[{i}]", w, low=0)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
        mine, other = _options(variant), set().union(*(_options(v) for v in VARIANTS if v != variant))
        unknown = sorted(set(options) - mine - other)
        if unknown:
            settable = sorted(mine | other | {"loss_weight", "non_object_weight", "variant", "iter_matcher"})
            hint = "; ".join(f"{k}: set by {CORE_ONLY[k]}" for k in unknown if k in CORE_ONLY)
            raise TypeError(f"InfluencerCriterion got unknown options {unknown}{' (' + hint + ')' if hint else ''}; "
                            f"options: {settable}")
        ignored = sorted(set(options) - mine)
        if ignored:
            warnings.warn(f"InfluencerCriterion(variant={variant!r}) ignores {ignored} (options of another variant)")
        kwargs = {k: v for k, v in DEFAULTS.items() if k in mine}
        kwargs.update({k: v for k, v in options.items() if k in mine})
        if len(loss_weight) == 3:
            kwargs["score_weight"] = float(loss_weight[2])
        self.loss_weight = loss_weight
        self.num_classes = num_classes
        self.variant = variant
        self.iter_matcher = iter_matcher
        if variant == "ot":
            self.core = OTInfluencerCriterion(num_classes, class_weight=float(loss_weight[0]),
                                              no_object_weight=non_object_weight,
                                              reuse_final_plan=not iter_matcher, **kwargs)
            scale = float(loss_weight[1])
            self.scale = {"loss_mask": scale, "loss_dice": scale, "loss_exclusion": scale}
        else:
            self.core = ReferenceInfluencerCriterion(num_classes, class_weight=float(loss_weight[0]),
                                                     influencer_weight=float(loss_weight[1]),
                                                     no_object_weight=non_object_weight, **kwargs)
            self.scale = {}
        if fix_dice_loss_weight == _AUTO:
            fix_dice_loss_weight = True if variant == "ot" else None
        if fix_dice_loss_weight is not None:
            check_flag("InfluencerCriterion", "fix_dice_loss_weight", fix_dice_loss_weight)
            if variant != "ot":
                warnings.warn("InfluencerCriterion(variant='reference') has no dice loss: "
                              "fix_dice_loss_weight is ignored")
        self.fix_dice_loss_weight = fix_dice_loss_weight if variant == "ot" else None
        self.last_stats: Dict[str, Tensor] = {}

    def scale_for(self, losses: Dict[str, Tensor], batch: int) -> Dict[str, float]:
        """``self.scale`` and, with ``fix_dice_loss_weight``, OneFormer3D's per-layer dice factors."""
        if self.fix_dice_loss_weight is None:
            return self.scale
        final, aux = (4.0, 4.0 / batch) if self.fix_dice_loss_weight else (float(batch), 1.0)
        base = self.scale.get("loss_dice", 1.0)
        out = dict(self.scale)
        # the hybrid query group's layers weigh like the main ones (loss_dice_hy: a final layer)
        out.update({k: base * (final if k in ("loss_dice", "loss_dice_hy") else aux)
                    for k in losses if k.startswith("loss_dice")})
        return out

    # annealing from a hook: ``criterion.epsilon = ...``, ``criterion.aux_capacity = ...`` (the ot
    # variant's; for the reference variant the getters raise AttributeError, so hasattr is False)
    @property
    def epsilon(self) -> float:
        return self.core.epsilon

    @epsilon.setter
    def epsilon(self, value: float) -> None:
        self.core.epsilon = value

    @property
    def aux_capacity(self) -> float:
        return self.core.aux_capacity

    @aux_capacity.setter
    def aux_capacity(self, value: float) -> None:
        self.core.aux_capacity = value
