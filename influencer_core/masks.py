"""Mask math shared by every criterion: BCE, dice and IoU of query masks against instance masks.

All functions take masks flattened to points ([Q, N] logits, [K, N] binary targets, or batched
[B, Q, P] / [B, K, P]); they are used by the Hungarian matchers and the matching-free criteria.

Pairwise ("every query against every instance") forms are products over the points; the
fused :func:`pair_stats` gives the same BCE / dice statistics for a batch in one blocked pass
with an analytic gradient:

For logits x [B, Q, P], binary targets t [B, K, P] and real-point mask
pv [B, P], returns

* xt  [B, Q, K] = x @ t^T
* sp  [B, Q]    = sum_i pv_i softplus(x_i)
* pt  [B, Q, K] = sigmoid(x) @ t^T
* ps  [B, Q]    = sum_i pv_i sigmoid(x_i)

from which every query's mean BCE and dice against every instance follow
(``bce = (sp - xt) / n``, ``dice = 1 - (2 pt + 1) / (ps + |t| + 1)``): two
products over the points instead of K separate losses.  Forward and backward
work block by block over points (cache-resident temporaries on CPU); nothing
of size [B, Q, P] is kept between them.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .mask_influencer import _full_precision


__all__ = [
    "pair_stats",
    "pairwise_sigmoid_ce",
    "pairwise_dice",
    "pairwise_class_cost",
    "sigmoid_ce_per_mask",
    "dice_per_mask",
    "mask_iou",
    "pairwise_mask_iou",
    "batched_mask_iou",
]


_SOFTPLUS_FLOOR = -80.0


def _row_chunk(x: Tensor) -> int:
    """Queries per block so a [B, block, P] slab stays in cache on CPU; GPUs take one block."""
    b, q, p = x.shape
    if x.is_cuda:
        return max(q, 1)
    return max(1, (1 << 20) // max(b * p, 1))


class _PairStats(torch.autograd.Function):
    @staticmethod
    @_full_precision
    def forward(ctx, x: Tensor, t: Tensor, pv: Tensor):
        b, q, p = x.shape
        k = t.shape[1]
        t_ext = torch.cat([t, pv.unsqueeze(1)], 1)  # [B, K+1, P]: the targets and the real-point mask
        t_ext_T = t_ext.transpose(1, 2).contiguous()
        xt = torch.bmm(x, t_ext_T)  # [B, Q, K+1]: x @ t^T and x @ pv
        pt = x.new_empty(b, q, k + 1)
        sp = x.new_empty(b, q, 1)
        pv_col = pv.unsqueeze(-1)
        rows = _row_chunk(x)
        for q0 in range(0, q, rows):
            qs = slice(q0, min(q, q0 + rows))
            # softplus(x) = x - log sigmoid(x), from the sigmoid the products need anyway (log is
            # several times cheaper than logsigmoid on CPU); below x = -80 sigmoid would underflow,
            # and softplus(x) < 2e-35 there, so x is clamped first
            xc = x[:, qs].clamp(min=_SOFTPLUS_FLOOR)
            prob = torch.sigmoid(xc)
            pt[:, qs] = torch.bmm(prob, t_ext_T)
            sp[:, qs] = torch.bmm(xc.sub_(prob.log_()), pv_col)
        ctx.save_for_backward(x, t_ext)
        return xt[..., :k], sp[..., 0], pt[..., :k], pt[..., k]

    @staticmethod
    @_full_precision
    def backward(ctx, g_xt: Tensor, g_sp: Tensor, g_pt: Tensor, g_ps: Tensor):
        x, t_ext = ctx.saved_tensors
        b, q, p = x.shape
        g_prob = torch.cat([g_pt, g_ps.unsqueeze(-1)], 2)  # [B, Q, K+1]
        g_lin = torch.cat([g_xt, g_xt.new_zeros(b, q, 1)], 2)
        g_sp = g_sp.unsqueeze(-1)  # [B, Q, 1]
        if x.is_cuda or not SKIP_ZERO_ROWS:
            return _grad_rows(x, g_prob, g_lin, g_sp, t_ext), None, None
        # CPU: a query whose statistics all have zero gradient (the transport loss gives one no
        # mask gradient when it owns no instance mass) has a zero gradient row, so only the
        # others are computed (finding them is a host-side read, free on CPU, skipped on GPU)
        active = (g_prob.abs().amax(-1) + g_lin.abs().amax(-1) + g_sp[..., 0].abs()) > 0  # [B, Q]
        counts = active.sum(1).tolist()
        if sum(counts) > 0.9 * b * q:
            return _grad_rows(x, g_prob, g_lin, g_sp, t_ext), None, None
        grad = torch.zeros_like(x)
        for i, n in enumerate(counts):  # per image: its own rows and targets
            if n == 0:
                continue
            rows = active[i].nonzero().squeeze(1)
            g = _grad_rows(x[i].index_select(0, rows)[None], g_prob[i, rows][None], g_lin[i, rows][None],
                           g_sp[i, rows][None], t_ext[i:i + 1])
            grad[i].index_copy_(0, rows, g[0])
        return grad, None, None


#: CPU backward of :func:`pair_stats` skips the queries whose gradient is zero
SKIP_ZERO_ROWS = True


def _grad_rows(x: Tensor, g_prob: Tensor, g_lin: Tensor, g_sp: Tensor, t_ext: Tensor) -> Tensor:
    """dL/dx [B, M, P] of :class:`_PairStats` for logits x [B, M, P], block by block over rows:
    ``g_lin @ t + p * (g_sp pv + (1 - p) * (g_prob @ [t; pv]))`` (g_prob = [g_pt | g_ps],
    g_lin = [g_xt | 0] [B, M, K+1], g_sp [B, M, 1], t_ext = [t; pv] [B, K+1, P])."""
    k = t_ext.shape[1] - 1
    pv = t_ext[:, k:]  # [B, 1, P]
    grad = torch.empty_like(x)
    m = x.shape[1]
    rows = _row_chunk(x)
    for q0 in range(0, m, rows):
        qs = slice(q0, min(m, q0 + rows))
        prob = torch.sigmoid(x[:, qs])
        part = torch.bmm(g_prob[:, qs], t_ext)
        part.mul_(1 - prob).addcmul_(g_sp[:, qs], pv).mul_(prob)
        grad[:, qs] = part.baddbmm_(g_lin[:, qs], t_ext)
    return grad


def pair_stats(x: Tensor, t: Tensor, pv: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x @ t^T, sum softplus(x), sigmoid(x) @ t^T, sum sigmoid(x)); see the module docstring.

    x: [B, Q, P] logits (computed in float32); t: [B, K, P] {0,1}; pv: [B, P] {0,1}.
    """
    return _PairStats.apply(x.float(), t.float(), pv.float())


def pairwise_sigmoid_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean binary cross-entropy of every query against every target.

    logits [Q, N], targets [K, N] in {0, 1} -> [Q, K].
    Uses BCE(x, t) = softplus(x) - x * t, so it is one matmul.
    """
    x = logits.float()
    t = targets.float()
    n = max(x.shape[1], 1)
    return (F.softplus(x).sum(1, keepdim=True) - x @ t.T) / n


def pairwise_dice(logits: Tensor, targets: Tensor) -> Tensor:
    """Dice loss 1 - (2|p t| + 1) / (|p| + |t| + 1) of every pair: [Q, N] x [K, N] -> [Q, K]."""
    p = logits.float().sigmoid()
    t = targets.float()
    num = 2 * (p @ t.T)
    den = p.sum(1)[:, None] + t.sum(1)[None, :]
    return 1 - (num + 1) / (den + 1)


def pairwise_class_cost(class_logits: Tensor, labels: Tensor) -> Tensor:
    """-softmax probability of each target's class: [Q, C+1], [K] -> [Q, K]."""
    return -class_logits.float().softmax(-1)[:, labels]


def sigmoid_ce_per_mask(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean binary cross-entropy per matched pair: [M, N], [M, N] -> [M]."""
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none").mean(1)


def dice_per_mask(logits: Tensor, targets: Tensor) -> Tensor:
    """Dice loss per matched pair (+1 smoothing): [M, N], [M, N] -> [M]."""
    p = logits.float().sigmoid()
    t = targets.float()
    num = 2 * (p * t).sum(1)
    den = p.sum(1) + t.sum(1)
    return 1 - (num + 1) / (den + 1)


def mask_iou(logits: Tensor, targets: Tensor, threshold: float = 0.5) -> Tensor:
    """IoU of the binarised prediction (sigmoid >= threshold) with the target: [M, N] -> [M]."""
    pred = (logits.float().sigmoid() >= threshold).float()
    t = (targets.float() > 0.5).float()
    inter = (pred * t).sum(1)
    union = pred.sum(1) + t.sum(1) - inter
    return inter / (union + 1e-6)


def pairwise_mask_iou(logits: Tensor, targets: Tensor, threshold: float = 0.5) -> Tensor:
    """IoU of every binarised prediction with every target: [Q, P], [K, P] -> [Q, K].

    Equals ``mask_iou`` on all (q, k) pairs, as one product over the points."""
    pred = (logits.float().sigmoid() >= threshold).float()
    t = (targets.float() > 0.5).float()
    inter = pred @ t.T
    union = pred.sum(1, keepdim=True) + t.sum(1)[None] - inter
    return inter / (union + 1e-6)


def batched_mask_iou(logits: Tensor, targets: Tensor, point_valid: Tensor, threshold: float = 0.5) -> Tensor:
    """``pairwise_mask_iou`` of a padded batch: [B, Q, P] logits, [B, K, P] targets, [B, P] real
    points -> [B, Q, K].  Padded points are neither predicted nor target."""
    pv = point_valid.float().unsqueeze(1)
    pred = (logits.float().sigmoid() >= threshold).float() * pv
    t = (targets.float() > 0.5).float() * pv
    inter = torch.bmm(pred, t.transpose(1, 2))
    union = pred.sum(2, keepdim=True) + t.sum(2).unsqueeze(1) - inter
    return inter / (union + 1e-6)
