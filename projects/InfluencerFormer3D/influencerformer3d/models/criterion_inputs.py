"""OneFormer3D's criterion inputs in influencer_core's vocabulary (renaming only, no math).

``pred``: ``cls_preds`` (list over scenes of [Q_i, C+1]), ``scores`` (list of [Q_i, 1] or of
``None``, or ``None``), ``masks`` (list of [Q_i, P_i] superpoint logits), optionally
``aux_outputs`` (list of dicts with the same keys, earlier decoder layers) and ``hybrid`` (the
same dict for a training-only query group).  ``insts``: list over
scenes of InstanceData-like objects (or dicts) with ``sp_masks`` [K_i, P_i], ``labels_3d`` [K_i]
and, for sparse matching, ``query_masks`` [K_i, Q_i].
"""
from __future__ import annotations

from typing import Dict, List, Sequence

from torch import Tensor

from ..structures import get_field, get_optional_field

__all__ = ["CoreCriterionAdapter", "core_outputs", "core_targets"]


def _layer(layer: Dict, where: str) -> Dict:
    for key in ("cls_preds", "masks"):
        if key not in layer:
            raise KeyError(f"{where} lacks '{key}': expected OneFormer3D decoder outputs (cls_preds, scores, masks)")
    return {"pred_logits": list(layer["cls_preds"]), "pred_masks": list(layer["masks"]),
            "pred_scores": layer.get("scores", None)}


def core_outputs(pred: Dict) -> Dict:
    """OneFormer3D decoder outputs -> influencer_core outputs (same tensors, renamed keys)."""
    out = _layer(pred, "pred")
    out["aux_outputs"] = [_layer(aux, f"pred['aux_outputs'][{i}]")
                          for i, aux in enumerate(pred.get("aux_outputs", None) or [])]
    if pred.get("hybrid", None) is not None:  # training-only query group (one-to-many loss)
        out["hybrid"] = core_outputs(pred["hybrid"])
    return out


def core_targets(insts: Sequence) -> List[Dict]:
    """Per-scene ground truth -> influencer_core targets (``labels``, ``masks``, ``query_masks``)."""
    out = []
    for inst in insts:
        t = {"labels": get_field(inst, "labels_3d"), "masks": get_field(inst, "sp_masks")}
        query_masks = get_optional_field(inst, "query_masks")
        if query_masks is not None:
            t["query_masks"] = query_masks
        out.append(t)
    return out


class CoreCriterionAdapter:
    """OneFormer3D's criterion call on an influencer_core criterion ``self.core``:
    ``criterion(pred, insts)`` -> ``{'inst_loss': scalar}`` (every layer's weighted losses, the
    per-loss factors ``self.scale`` applied); ``last_stats`` keeps the final layer's detached
    losses of the last call.  Not an ``nn.Module`` (as upstream), so a model's checkpoint layout
    is unchanged."""

    core = None
    scale: Dict[str, float] = {}

    def scale_for(self, losses: Dict[str, Tensor], batch: int) -> Dict[str, float]:
        """Per-loss factors of one call with ``batch`` scenes (default: ``self.scale``)."""
        return self.scale

    def __call__(self, pred: Dict, insts: Sequence) -> Dict[str, Tensor]:
        losses = self.core(core_outputs(pred), core_targets(insts))
        self.last_stats = {k: v.detach() for k, v in losses.items() if not k[-1].isdigit()}
        return {"inst_loss": self.core.total_loss(losses, self.scale_for(losses, len(insts)))}
