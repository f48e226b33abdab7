"""Mask-matrix Influencer Loss (the reference formulation).

Queries produce mask logits over points (pixels or superpoints).  For every
ground-truth instance ``k`` and query ``q`` the *log-profile*

    S[k, q] = mean_{i in instance k} log(sigmoid(x[q, i]) + eps)

is the log of the geometric mean exp(S) (the *profile*, in [0, 1]) of the query's
probabilities over the instance.

* attractive  = mean_k  -T * logsumexp_q(S[k, q] / T)
* repulsive   = mean_{k != l} relu(margin - ||exp(S[k]) - exp(S[l])||_2)
  (``rep_space="log_profile"``: between S[k] and S[l] instead)
* background  = mean_{q, i in background} sigmoid(x[q, i])
* loss        = attr_weight * attractive + rep_weight * repulsive + bg_weight * background

A batch's loss is the mean of the per-image losses.  This formulation has a
degenerate minimum (duplicate queries, or a query covering the union of the
instances, score lower than the one-to-one answer); it is shipped as is, for
comparison.  See ``docs/losses.md``.
"""
from __future__ import annotations

import functools

from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .targets import MaskBatch, pack_masks
from .validation import check_number, mask_value_flag

__all__ = ["MaskInfluencerLoss", "log_profiles", "influencer_terms", "REP_SPACES"]

#: where the repulsion measures distances: between the instance profiles exp(S) in [0, 1]
#: (the reference documents' form, default) or between the log-profiles S
REP_SPACES = ("profile", "log_profile")


def _full_precision(fn):
    """Run an autograd Function's forward/backward with autocast off (inputs are float32)."""

    @functools.wraps(fn)
    def wrapped(ctx, *args):
        with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
            return fn(ctx, *args)

    return wrapped


def _chunk_size(x: Tensor) -> int:
    """Points per block so a [B, Q, block] slab stays in cache on CPU; GPUs take one block."""
    b, q, p = x.shape
    if x.is_cuda:
        return max(p, 1)
    return max(512, (1 << 20) // max(b * q, 1))


class _LogProfile(torch.autograd.Function):
    """Fused ``S = W @ log(sigmoid(x) + eps)^T`` and ``bg = sigmoid(x) @ w_bg``.

    x: [B, Q, P] float32 logits; inst_w: [B, K, P] instance masks divided by their
    sizes (zero rows for padding); bg_w: [B, P] background mask divided by its size.
    Returns S [B, K, Q] and bg [B, Q].

    Works block by block over points (cache-resident temporaries) and keeps one
    [B, Q, P] tensor for backward: the derivative factor, p (1 - p) / (p + eps)
    on instance points and p (1 - p) on background points.  Instance and
    background points are disjoint, so backward is one [Q, K+1] x [K+1, P]
    product times that factor.
    """

    @staticmethod
    @_full_precision
    def forward(ctx, x: Tensor, inst_w: Tensor, bg_w: Tensor, eps: float, reuse: bool = True):
        b, q, p = x.shape
        need_grad = ctx.needs_input_grad[0]
        prof = x.new_zeros(b, inst_w.shape[1], q)
        bg = x.new_zeros(b, q, 1)
        factor = torch.empty_like(x) if need_grad else None
        if need_grad:
            is_bg = (bg_w > 0).to(x.dtype).unsqueeze(1)  # [B, 1, P]
            not_bg = 1.0 - is_bg
            den_const = is_bg + eps * not_bg  # den = p + eps off background, 1 on it
        chunk = _chunk_size(x)
        for c0 in range(0, p, chunk):
            sl = slice(c0, min(p, c0 + chunk))
            prob = torch.sigmoid(x[:, :, sl])
            bg.baddbmm_(prob, bg_w[:, sl, None])
            if need_grad:
                deriv = torch.addcmul(prob, prob, prob, value=-1.0)  # p (1 - p)
                torch.div(deriv, torch.addcmul(den_const[:, :, sl], prob, not_bg[:, :, sl]), out=factor[:, :, sl])
            logp = prob.add_(eps).log_()
            prof.baddbmm_(inst_w[:, :, sl], logp.transpose(1, 2))
        ctx.save_for_backward(inst_w, bg_w)
        ctx.factor = factor
        ctx.reuse = reuse
        return prof, bg.squeeze(-1)

    @staticmethod
    @_full_precision
    def backward(ctx, g_prof: Tensor, g_bg: Tensor):
        inst_w, bg_w = ctx.saved_tensors
        factor = ctx.factor
        if factor is None:
            raise RuntimeError(
                "the influencer profile op was already backpropagated once; its buffers are reused for the "
                "gradient, so backward twice (retain_graph=True) is not supported: recompute the loss instead"
            )
        if ctx.reuse:
            ctx.factor = None
        else:
            factor = factor.clone()
        g_all = torch.cat([g_prof.transpose(1, 2), g_bg.unsqueeze(-1)], dim=2)  # [B, Q, K+1]
        w_all = torch.cat([inst_w, bg_w.unsqueeze(1)], dim=1)  # [B, K+1, P]
        # the factor's storage becomes the gradient: no second [B, Q, P] allocation
        p = factor.shape[-1]
        chunk = _chunk_size(factor)
        for c0 in range(0, p, chunk):
            sl = slice(c0, min(p, c0 + chunk))
            factor[:, :, sl].mul_(torch.bmm(g_all, w_all[:, :, sl]))
        return factor, None, None, None, None


def log_profiles(logits: Tensor, inst_w: Tensor, bg_w: Tensor, eps: float,
                 reuse_buffer: bool = True) -> Tuple[Tensor, Tensor]:
    """Profiles S [B, K, Q] and background mean probabilities [B, Q] (see _LogProfile).

    ``reuse_buffer=False`` allows several backward passes through the result
    (``retain_graph=True``, gradcheck) at the cost of one more [B, Q, P] tensor.
    """
    return _LogProfile.apply(logits.float(), inst_w.float(), bg_w.float(), float(eps), reuse_buffer)


def influencer_terms(
    prof: Tensor,
    bg_mean: Tensor,
    valid: Tensor,
    has_bg: Tensor,
    temperature: float,
    margin: float,
    query_valid: Optional[Tensor] = None,
    rep_space: str = "profile",
) -> Tuple[Tensor, Tensor, Tensor]:
    """Per-image attractive, repulsive and background terms, each [B].

    prof: [B, K, Q] log-profiles S; bg_mean: [B, Q]; valid: [B, K] bool (real instances);
    has_bg: [B] bool (image has background points); query_valid: [B, Q] bool or None (images
    with fewer real queries than Q: padding queries take no part in any term); rep_space:
    ``"profile"`` - repulsion between the profiles exp(S) in [0, 1] (the reference form),
    ``"log_profile"`` - between the log-profiles S (unbounded; an earlier reading).
    """
    validf = valid.to(prof.dtype)
    n_inst = validf.sum(1)
    if query_valid is not None:
        qv = query_valid.unsqueeze(1)
        scaled = torch.where(qv, prof / temperature, torch.full_like(prof, float("-inf")))
        attr_k = -temperature * torch.logsumexp(scaled, dim=2)
        prof = torch.where(qv, prof, torch.zeros_like(prof))  # padding adds nothing to the distances
    else:
        attr_k = -temperature * torch.logsumexp(prof / temperature, dim=2)  # [B, K]
    attractive = (attr_k * validf).sum(1) / n_inst.clamp(min=1)

    # padding queries were zeroed above: exp(0) = 1 on both sides, so they add nothing either way
    rep_prof = prof.exp() if rep_space == "profile" else prof
    diff = rep_prof.unsqueeze(2) - rep_prof.unsqueeze(1)  # [B, K, K, Q]
    dist = diff.pow(2).sum(-1).clamp(min=1e-12).sqrt()
    k = prof.shape[1]
    off_diag = ~torch.eye(k, dtype=torch.bool, device=prof.device)
    pair = (valid.unsqueeze(2) & valid.unsqueeze(1) & off_diag).to(prof.dtype)
    n_pairs = pair.sum((1, 2))
    repulsive = (torch.relu(margin - dist) * pair).sum((1, 2)) / n_pairs.clamp(min=1)

    if query_valid is not None:
        qvf = query_valid.to(bg_mean.dtype)
        bg_q = (bg_mean * qvf).sum(1) / qvf.sum(1).clamp(min=1)
    else:
        bg_q = bg_mean.mean(1)
    background = bg_q * has_bg.to(prof.dtype)
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
        rep_space: str = "profile",
    ):
        super().__init__()
        owner = type(self).__name__
        if rep_space not in REP_SPACES:
            raise ValueError(f"{owner}: rep_space must be one of {REP_SPACES}, got {rep_space!r}")
        self.rep_space = rep_space
        for name, value in (("attr_weight", attr_weight), ("rep_weight", rep_weight), ("bg_weight", bg_weight),
                            ("rep_margin", rep_margin)):
            check_number(owner, name, value, low=0)
        check_number(owner, "temperature", temperature, low=0, low_open=True)
        check_number(owner, "eps", eps, low=0, low_open=True, hint="it keeps log(p + eps) finite")
        self.attr_weight = attr_weight
        self.rep_weight = rep_weight
        self.bg_weight = bg_weight
        self.rep_margin = rep_margin
        self.temperature = temperature
        self.eps = eps

    def extra_repr(self) -> str:
        return (
            f"attr_weight={self.attr_weight}, rep_weight={self.rep_weight}, bg_weight={self.bg_weight}, "
            f"rep_margin={self.rep_margin}, temperature={self.temperature}, eps={self.eps}, "
            f"rep_space={self.rep_space!r}"
        )

    def profiles(self, logits: Tensor, targets: MaskBatch) -> Tuple[Tensor, Tensor]:
        """S [B, K, Q] and per-query background mean probability [B, Q]."""
        return log_profiles(logits, targets.inst_weights(), targets.bg_weights(), self.eps)

    def forward(
        self,
        logits: Tensor,
        masks: Union[Tensor, Sequence[Tensor], MaskBatch],
        return_per_image: bool = False,
        query_valid: Optional[Tensor] = None,
    ) -> Dict[str, Tensor]:
        """``return_per_image`` adds ``per_image`` [B] and the detached ``profiles`` [B, K, Q];
        ``query_valid`` [B, Q] bool marks real queries when images have different counts."""
        single = logits.dim() == 2
        if single:
            logits = logits.unsqueeze(0)
            if isinstance(masks, Tensor):
                masks = masks.unsqueeze(0)
        if logits.dim() != 3:
            raise ValueError(f"logits must be [Q, P] or [B, Q, P], got shape {tuple(logits.shape)}")
        if isinstance(masks, MaskBatch):
            targets = masks
        else:
            # one rule with the criteria: binary masks only (a host sync; criteria pass a checked MaskBatch)
            raw = [masks] if isinstance(masks, Tensor) else list(masks)
            if any(isinstance(m, Tensor) and bool(mask_value_flag(m)) for m in raw):
                raise ValueError("MaskInfluencerLoss: masks hold values other than 0 and 1: pass binary masks - bool, "
                                 "or 0/1 - e.g. masks > 127 for 0/255 PNG masks, masks > 0.5 for soft ones")
            targets = pack_masks(masks, logits.shape[-1], logits.device)
        if targets.batch_size != logits.shape[0]:
            raise ValueError(
                f"{targets.batch_size} target sets for {logits.shape[0]} images: pass one [K, P] mask tensor per image"
            )
        prof, bg = self.profiles(logits, targets)
        attr, rep, bgt = influencer_terms(
            prof, bg, targets.valid, targets.has_bg, self.temperature, self.rep_margin, query_valid, self.rep_space
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
            out["profiles"] = prof.detach()
        return out
