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
products over the points instead of K separate losses.  On CPU, forward and
backward work in cache-sized blocks (each logit is read from memory once per
pass; the backward computes only the rows that have a gradient); GPUs take
whole tensors.  Nothing of size [B, Q, P] is kept between forward and backward.
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


#: logits per block and thread of the CPU passes (1 MB of float32) and points per block and
#: thread: a block's sigmoid, log and products run while it sits in the cores' caches, so each
#: [B, Q, P] logit is read from memory once; with more threads blocks grow so that every op
#: still has a block's worth of work per thread (measured on 1 and 2 threads)
_BLOCK_ELEMS = 1 << 18
_POINT_BLOCK = 4096


def _block_elems() -> int:
    return _BLOCK_ELEMS * max(1, torch.get_num_threads())


def _blocks(b: int, q: int, p: int):
    """(point slices, row slices) of the CPU passes over a [b, q, p] tensor."""
    cols = min(p, _POINT_BLOCK * max(1, torch.get_num_threads()))
    rows = max(1, min(q, _block_elems() // max(b * cols, 1)))
    return ([slice(p0, min(p, p0 + cols)) for p0 in range(0, p, cols)],
            [slice(q0, min(q, q0 + rows)) for q0 in range(0, q, rows)])


def _stats(x: Tensor, t_ext: Tensor, whole: bool = None):
    """[B, K+1, Q] products with [t; pv] of x and sigmoid(x), and the [B, Q] softplus sums.

    softplus(x) = x - log sigmoid(x), from the sigmoid the products need anyway; below x = -88
    sigmoid underflows (log = -inf). ``whole`` (default: on GPUs, where blocks would only add
    launches): one pass over whole tensors with x clamped at -80 first (softplus < 2e-35 there).
    Otherwise (CPU): cache-sized blocks, each logit read from memory once, no clamp pass; the
    rows where sigmoid underflowed are redone with the clamp afterwards (a host read, free on CPU).
    """
    whole = x.is_cuda if whole is None else whole
    b, q, p = x.shape
    k = t_ext.shape[1] - 1
    xt = x.new_zeros(b, k + 1, q)
    pt = x.new_zeros(b, k + 1, q)
    sp = x.new_zeros(b, 1, q)
    col_blocks, row_blocks = ([slice(None)], [slice(None)]) if whole else _blocks(b, q, p)
    for ps in col_blocks:
        tb = t_ext[:, :, ps]
        pvb = tb[:, k:]
        for qs in row_blocks:
            xb = x[:, qs, ps]
            # [K+1, rows] = t @ x^T: with K+1 small this orientation is the fast one for the BLAS
            xt[:, :, qs].baddbmm_(tb, xb.mT)
            if whole:
                xb = xb.clamp(min=_SOFTPLUS_FLOOR)
            prob = torch.sigmoid(xb)
            pt[:, :, qs].baddbmm_(tb, prob.mT)
            soft = torch.sub(xb, prob.log_(), out=prob)
            sp[:, :, qs].baddbmm_(pvb, soft.mT)
    sp = sp[:, 0]
    if not whole:
        bad = ~torch.isfinite(sp)
        if bad.any():
            bi, qi = bad.nonzero(as_tuple=True)
            xc = x[bi, qi].clamp(min=_SOFTPLUS_FLOOR)  # [n, P]
            sp[bi, qi] = ((xc - torch.sigmoid(xc).log()) * t_ext[bi, k]).sum(-1)
    return xt, pt, sp


class _PairStats(torch.autograd.Function):
    @staticmethod
    @_full_precision
    def forward(ctx, x: Tensor, t: Tensor, pv: Tensor):
        k = t.shape[1]
        t_ext = torch.cat([t, pv.unsqueeze(1)], 1)  # [B, K+1, P]: the targets and the real-point mask
        xt, pt, sp = _stats(x, t_ext)
        ctx.save_for_backward(x, t_ext)
        xt, pt = xt.mT, pt.mT  # [B, Q, K+1]
        return xt[..., :k], sp, pt[..., :k], pt[..., k]

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
        grad = torch.zeros_like(x)  # (zeroing only the skipped rows is slower: index_fill_ is)
        for i, n in enumerate(counts):  # per image: its own rows and targets
            if n:
                rows = active[i].nonzero().squeeze(1)
                _grad_rows(x[i:i + 1], g_prob[i:i + 1, rows], g_lin[i:i + 1, rows], g_sp[i:i + 1, rows],
                          t_ext[i:i + 1], rows=rows, out=grad[i:i + 1])
        return grad, None, None


#: CPU backward of :func:`pair_stats` skips the queries whose gradient is zero
SKIP_ZERO_ROWS = True


def _grad_rows(x: Tensor, g_prob: Tensor, g_lin: Tensor, g_sp: Tensor, t_ext: Tensor,
               rows: Tensor = None, out: Tensor = None, whole: bool = None) -> Tensor:
    """dL/dx [B, Q, P] of :class:`_PairStats`:
    ``g_lin @ t + p * (g_sp pv + (1 - p) * (g_prob @ [t; pv]))``, with g_prob = [g_pt | g_ps] and
    g_lin = [g_xt | 0] [B, Q, K+1], g_sp [B, Q, 1], t_ext = [t; pv] [B, K+1, P].

    In cache-sized blocks of whole rows, or in one block when ``whole`` (default: on GPUs).  With
    ``rows`` [M] (the gradients given for those rows of x only: g_prob / g_lin [B, M, K+1], g_sp
    [B, M, 1]), the result is written into those rows of ``out`` and the other rows are left alone."""
    whole = x.is_cuda if whole is None else whole
    b, q, p = x.shape
    k = t_ext.shape[1] - 1
    pv = t_ext[:, k:]
    m = q if rows is None else rows.shape[0]
    if out is None:
        out = torch.empty_like(x)
    step = m if whole else max(1, _block_elems() // max(b * p, 1))
    for q0 in range(0, m, step):
        qs = slice(q0, min(m, q0 + step))
        xb = x[:, qs] if rows is None else x.index_select(1, rows[qs])
        prob = torch.sigmoid(xb)
        part = torch.bmm(g_prob[:, qs], t_ext)
        # part * (1 - p) + g_sp pv, times p, plus g_lin @ t
        part.addcmul_(part, prob, value=-1).addcmul_(g_sp[:, qs], pv).mul_(prob)
        part.baddbmm_(g_lin[:, qs], t_ext)
        if rows is None:
            out[:, qs] = part
        else:
            out.index_copy_(1, rows[qs], part)
    return out


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
