"""Mask-matrix Influencer Loss (the reference formulation).

Queries produce mask logits over points (pixels or superpoints).  For every
ground-truth instance ``k`` and query ``q`` the *profile*

    S[k, q] = mean_{i in instance k} log(sigmoid(x[q, i]) + eps)

is the log geometric mean of the query's probabilities over the instance.

* attractive  = mean_k  -T * logsumexp_q(S[k, q] / T)
* repulsive   = mean_{k != l} relu(margin - ||S[k] - S[l]||_2)
* background  = mean_{q, i in background} sigmoid(x[q, i])
* loss        = attr_weight * attractive + rep_weight * repulsive + bg_weight * background

A batch's loss is the mean of the per-image losses.  This formulation has a
degenerate minimum (duplicate queries, or a query covering the union of the
instances, score lower than the one-to-one answer); it is shipped as is, for
comparison.  See ``docs/losses.md``.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .targets import MaskBatch, pack_masks

__all__ = ["MaskInfluencerLoss", "log_profiles", "influencer_terms"]


class _LogProfile(torch.autograd.Function):
    """Fused ``S = W @ log(sigmoid(x) + eps)^T`` and ``bg = sigmoid(x) @ w_bg``.

    x: [B, Q, P] float32 logits; inst_w: [B, K, P] instance masks divided by their
    sizes (zero rows for padding); bg_w: [B, P] background mask divided by its size.
    Returns S [B, K, Q] and bg [B, Q].  The backward pass recomputes the sigmoid
    from ``x`` instead of storing [B, Q, P] intermediates.
    """

    @staticmethod
    def forward(ctx, x: Tensor, inst_w: Tensor, bg_w: Tensor, eps: float):
        p = torch.sigmoid(x)
        bg = torch.bmm(p, bg_w.unsqueeze(-1)).squeeze(-1)
        logp = p.add_(eps).log_()
        prof = torch.bmm(inst_w, logp.transpose(1, 2))
        ctx.save_for_backward(x, inst_w, bg_w)
        ctx.eps = eps
        return prof, bg

    @staticmethod
    def backward(ctx, g_prof: Tensor, g_bg: Tensor):
        x, inst_w, bg_w = ctx.saved_tensors
        eps = ctx.eps
        # d/dx log(p + eps) = p (1 - p) / (p + eps);  d/dx p = p (1 - p).
        # Instance and background points are disjoint, so one [Q, K+1] x [K+1, P]
        # product gives the upstream gradient of every point.
        g_all = torch.cat([g_prof.transpose(1, 2), g_bg.unsqueeze(-1)], dim=2)
        w_all = torch.cat([inst_w, bg_w.unsqueeze(1)], dim=1)
        grad = torch.bmm(g_all, w_all)
        p = torch.sigmoid(x)
        # factor = p(1-p)/(p+eps) on instance points, p(1-p) on background points.
        is_bg = (bg_w > 0).unsqueeze(1)
        denom = torch.where(is_bg, torch.ones_like(p), p + eps)
        grad.mul_(p).mul_(p.neg_().add_(1.0)).div_(denom)
        return grad, None, None, None


def log_profiles(logits: Tensor, inst_w: Tensor, bg_w: Tensor, eps: float) -> Tuple[Tensor, Tensor]:
    """Profiles S [B, K, Q] and background mean probabilities [B, Q] (see _LogProfile)."""
    return _LogProfile.apply(logits.float(), inst_w.float(), bg_w.float(), float(eps))


def influencer_terms(
    prof: Tensor,
    bg_mean: Tensor,
    valid: Tensor,
    has_bg: Tensor,
    temperature: float,
    margin: float,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Per-image attractive, repulsive and background terms, each [B].

    prof: [B, K, Q] profiles; bg_mean: [B, Q]; valid: [B, K] bool (real instances);
    has_bg: [B] bool (image has background points).
    """
    validf = valid.to(prof.dtype)
    n_inst = validf.sum(1)
    attr_k = -temperature * torch.logsumexp(prof / temperature, dim=2)  # [B, K]
    attractive = (attr_k * validf).sum(1) / n_inst.clamp(min=1)

    diff = prof.unsqueeze(2) - prof.unsqueeze(1)  # [B, K, K, Q]
    dist = diff.pow(2).sum(-1).clamp(min=1e-12).sqrt()
    k = prof.shape[1]
    off_diag = ~torch.eye(k, dtype=torch.bool, device=prof.device)
    pair = (valid.unsqueeze(2) & valid.unsqueeze(1) & off_diag).to(prof.dtype)
    n_pairs = pair.sum((1, 2))
    repulsive = (torch.relu(margin - dist) * pair).sum((1, 2)) / n_pairs.clamp(min=1)

    background = bg_mean.mean(1) * has_bg.to(prof.dtype)
    return attractive, repulsive, background


class MaskInfluencerLoss(nn.Module):
    """Reference mask-matrix Influencer Loss.

    Call with ``logits`` [Q, P] or [B, Q, P] (any float dtype; computed in float32)
    and ``masks`` as a [K, P] tensor, a [B, K, P] tensor, or a list of B tensors
    [K_b, P] (binary; K may be 0 and may exceed Q; masks may overlap).  Also
    accepts a pre-packed :class:`~influencer_core.targets.MaskBatch`.

    Returns ``{'loss', 'attractive', 'repulsive', 'background'}``: scalars, the
    mean over images; only ``loss`` carries gradient.
    """

    def __init__(
        self,
        attr_weight: float = 1.0,
        rep_weight: float = 1.0,
        bg_weight: float = 1.0,
        rep_margin: float = 1.0,
        temperature: float = 1.0,
        eps: float = 1e-6,
    ):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if eps <= 0:
            raise ValueError(f"eps must be > 0 (it keeps log(p + eps) finite), got {eps}")
        self.attr_weight = attr_weight
        self.rep_weight = rep_weight
        self.bg_weight = bg_weight
        self.rep_margin = rep_margin
        self.temperature = temperature
        self.eps = eps

    def extra_repr(self) -> str:
        return (
            f"attr_weight={self.attr_weight}, rep_weight={self.rep_weight}, bg_weight={self.bg_weight}, "
            f"rep_margin={self.rep_margin}, temperature={self.temperature}, eps={self.eps}"
        )

    def profiles(self, logits: Tensor, targets: MaskBatch) -> Tuple[Tensor, Tensor]:
        """S [B, K, Q] and per-query background mean probability [B, Q]."""
        return log_profiles(logits, targets.inst_weights(), targets.bg_weights(), self.eps)

    def forward(
        self,
        logits: Tensor,
        masks: Union[Tensor, Sequence[Tensor], MaskBatch],
        return_per_image: bool = False,
    ) -> Dict[str, Tensor]:
        single = logits.dim() == 2
        if single:
            logits = logits.unsqueeze(0)
            if isinstance(masks, Tensor):
                masks = masks.unsqueeze(0)
        if logits.dim() != 3:
            raise ValueError(f"logits must be [Q, P] or [B, Q, P], got shape {tuple(logits.shape)}")
        targets = masks if isinstance(masks, MaskBatch) else pack_masks(masks, logits.shape[-1], logits.device)
        if targets.batch_size != logits.shape[0]:
            raise ValueError(
                f"{targets.batch_size} target sets for {logits.shape[0]} images: pass one [K, P] mask tensor per image"
            )
        prof, bg = self.profiles(logits, targets)
        attr, rep, bgt = influencer_terms(
            prof, bg, targets.valid, targets.has_bg, self.temperature, self.rep_margin
        )
        per_image = self.attr_weight * attr + self.rep_weight * rep + self.bg_weight * bgt
        out = {
            "loss": per_image.mean(),
            "attractive": attr.mean().detach(),
            "repulsive": rep.mean().detach(),
            "background": bgt.mean().detach(),
        }
        if return_per_image:
            out["per_image"] = per_image
        return out
