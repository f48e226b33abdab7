"""Condensation-form Influencer Loss (per-point embeddings and betas).

Every point ``i`` carries an embedding ``x_i`` [D] and a condensation logit
``beta_i``.  The *influencer* of instance ``k`` is its point with the highest
beta.  Terms (each a per-image mean, then a mean over images):

* attractive = mean_k mean_{i in k} ||x_i - x_{infl(k)}||^2
* repulsive  = mean_{k != l} relu(margin - ||x_{infl(k)} - x_{infl(l)}||_2)
* beta       = mean_i BCE(beta_i, [i in an instance]) over every point (``beta_target="points"``,
  the reference form), or mean_k BCE(beta_{infl(k)}, 1) + mean_{i in background} BCE(beta_i, 0)
  (``"influencers"``: only each influencer is pushed to 1)

The influencer choice (an argmax) carries no gradient; embeddings get it
through the distances, betas through the BCE.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .validation import check_flag, check_number

__all__ = ["InfluencerLoss", "BETA_TARGETS"]

#: what the beta term pushes to 1: every instance point (the reference form, default) or only
#: each instance's influencer
BETA_TARGETS = ("points", "influencers")


class InfluencerLoss(nn.Module):
    """Condensation Influencer Loss.

    forward(embeddings [N, D] or [B, N, D], beta_logits [N] or [B, N],
            instance_ids [N] or [B, N] integer, -1 for background,
            num_instances: int, optional upper bound on ids + 1)
    -> {'loss', 'attractive', 'repulsive', 'beta'}; only 'loss' carries gradient.

    ``ignore_index`` (e.g. 255): points with that id are neither instance nor background (they
    take no loss).  Without ``num_instances`` the bound is read from ``instance_ids.max()`` (a
    host sync).  ``check_values``: ids must lie in [0, num_instances) or be -1 / ``ignore_index``
    (read back once at the end of the call; ``False`` keeps the loss sync-free when
    ``num_instances`` is given).
    """

    def __init__(
        self,
        attr_weight: float = 1.0,
        rep_weight: float = 1.0,
        beta_weight: float = 1.0,
        rep_margin: float = 1.0,
        ignore_index: Optional[int] = None,
        check_values: bool = True,
        beta_target: str = "points",
    ):
        super().__init__()
        owner = type(self).__name__
        if beta_target not in BETA_TARGETS:
            raise ValueError(f"{owner}: beta_target must be one of {BETA_TARGETS}, got {beta_target!r}")
        self.beta_target = beta_target
        for name, value in (("attr_weight", attr_weight), ("rep_weight", rep_weight), ("beta_weight", beta_weight),
                            ("rep_margin", rep_margin)):
            check_number(owner, name, value, low=0)
        check_number(owner, "ignore_index", ignore_index, integer=True, optional=True)
        if ignore_index == -1:
            raise ValueError(f"{owner}: ignore_index -1 is the background id: pick an id no instance uses, e.g. 255 "
                             "or -100")
        check_flag(owner, "check_values", check_values)
        self.attr_weight = attr_weight
        self.rep_weight = rep_weight
        self.beta_weight = beta_weight
        self.rep_margin = rep_margin
        self.ignore_index = ignore_index
        self.check_values = check_values

    def forward(
        self,
        embeddings: Tensor,
        beta_logits: Tensor,
        instance_ids: Tensor,
        num_instances: Optional[int] = None,
    ) -> Dict[str, Tensor]:
        if embeddings.dim() == 2:
            embeddings, beta_logits, instance_ids = embeddings[None], beta_logits[None], instance_ids[None]
        if (embeddings.dim() != 3 or beta_logits.shape != embeddings.shape[:2]
                or instance_ids.shape != beta_logits.shape):
            raise ValueError(
                "expected embeddings [B, N, D], beta_logits [B, N] and instance_ids [B, N]; got "
                f"{tuple(embeddings.shape)}, {tuple(beta_logits.shape)}, {tuple(instance_ids.shape)}"
            )
        if instance_ids.dtype.is_floating_point or instance_ids.dtype == torch.bool:
            raise TypeError(f"instance_ids must be an integer tensor (-1 for background), got {instance_ids.dtype}: "
                            "convert with .long()")
        # contiguous: the flat views below need it (a CNN's permuted [B, H, W, D] output is not)
        x = embeddings.float().contiguous()
        beta = beta_logits.float().contiguous()
        ids = instance_ids.long().contiguous()
        b, n, _ = x.shape
        ignored = ids == self.ignore_index if self.ignore_index is not None else torch.zeros_like(ids, dtype=torch.bool)
        if num_instances is None:
            k = int(torch.where(ignored, -1, ids).max().clamp(min=-1)) + 1
        else:
            check_number("InfluencerLoss", "num_instances", num_instances, low=0, integer=True)
            k = int(num_instances)
        k = max(k, 1)
        # ids >= k would land in another image's slots, other negatives are undefined: flag, then
        # compute on ids made safe so nothing indexes out of range before the flag is read
        odd = ~ignored & ((ids >= k) | (ids < -1))
        bad = odd.any() if self.check_values else None
        background = ids == -1
        ids = torch.where(ignored | odd, torch.full_like(ids, -1), ids)

        fg = ids >= 0
        # Global instance slot per point: image b, instance j -> b * k + j; background -> dummy slot.
        dummy = b * k
        slot = torch.where(fg, ids + torch.arange(b, device=ids.device)[:, None] * k, torch.full_like(ids, dummy))
        slot = slot.view(-1)
        flat_beta = beta.view(-1).detach()
        best = torch.full((dummy + 1,), float("-inf"), device=x.device)
        best = best.scatter_reduce(0, slot, flat_beta, reduce="amax", include_self=True)
        is_best = (flat_beta == best[slot]) & fg.view(-1)
        idx = torch.arange(b * n, device=x.device)
        big = torch.full((dummy + 1,), b * n, device=x.device, dtype=torch.long)
        infl = big.scatter_reduce(0, slot, torch.where(is_best, idx, torch.full_like(idx, b * n)), reduce="amin")
        infl = infl[:dummy].view(b, k)  # flat point index of each instance's influencer
        present = infl < b * n  # [B, K]
        infl_safe = infl.clamp(max=b * n - 1)

        flat_x = x.reshape(b * n, -1)
        x_inf = flat_x[infl_safe.view(-1)].view(b, k, -1)  # [B, K, D]
        presf = present.float()

        # attractive: per-instance mean squared distance of its points to its influencer
        d2 = (flat_x - flat_x[infl_safe.view(-1)[slot.clamp(max=dummy - 1)]]).pow(2).sum(-1)
        d2 = d2 * fg.view(-1).float()
        per_inst = torch.zeros(dummy + 1, device=x.device).index_add(0, slot, d2)[:dummy].view(b, k)
        counts = torch.zeros(dummy + 1, device=x.device).index_add(0, slot, fg.view(-1).float())[:dummy].view(b, k)
        n_inst = presf.sum(1)
        attractive = (per_inst / counts.clamp(min=1) * presf).sum(1) / n_inst.clamp(min=1)

        # repulsive: hinge between the influencers of different instances of one image
        diff = x_inf.unsqueeze(2) - x_inf.unsqueeze(1)
        dist = diff.pow(2).sum(-1).clamp(min=1e-12).sqrt()
        off = ~torch.eye(k, dtype=torch.bool, device=x.device)
        pair = (present.unsqueeze(2) & present.unsqueeze(1) & off).float()
        repulsive = (torch.relu(self.rep_margin - dist) * pair).sum((1, 2)) / pair.sum((1, 2)).clamp(min=1)

        bgf = background.float()
        if self.beta_target == "points":  # every labelled point: instance -> 1, background -> 0
            counted = (fg.float() + bgf)
            bce = F.binary_cross_entropy_with_logits(beta, fg.float(), reduction="none")
            beta_term = (bce * counted).sum(1) / counted.sum(1).clamp(min=1)
        else:  # influencers -> 1, background points -> 0
            beta_inf = beta.view(-1)[infl_safe.view(-1)].view(b, k)
            pos = F.binary_cross_entropy_with_logits(beta_inf, torch.ones_like(beta_inf), reduction="none")
            pos = (pos * presf).sum(1) / n_inst.clamp(min=1)
            neg = F.binary_cross_entropy_with_logits(beta, torch.zeros_like(beta), reduction="none")
            neg = (neg * bgf).sum(1) / bgf.sum(1).clamp(min=1)
            beta_term = pos + neg

        per_image = self.attr_weight * attractive + self.rep_weight * repulsive + self.beta_weight * beta_term
        if bad is not None and bool(bad):
            odd = instance_ids.long()[odd].unique()[:5].tolist()
            hint = ("pass num_instances >= the largest id + 1" if num_instances is not None and max(odd) >= k
                    else "ids are 0..K-1 per image, -1 for background; set ignore_index for an ignore label")
            raise ValueError(f"InfluencerLoss: instance_ids {odd} outside [0, {k}) (num_instances = {k}): {hint}")
        return {
            "loss": per_image.mean(),
            "attractive": attractive.mean().detach(),
            "repulsive": repulsive.mean().detach(),
            "beta": beta_term.mean().detach(),
        }
