"""Pairwise query-instance mask statistics in one pass (fused, analytic gradient).

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

from .mask_influencer import _chunk_size

__all__ = ["pair_stats"]


class _PairStats(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, t: Tensor, pv: Tensor):
        b, q, p = x.shape
        k = t.shape[1]
        xt = x.new_zeros(b, q, k)
        pt = x.new_zeros(b, q, k)
        sp = x.new_zeros(b, q, 1)
        ps = x.new_zeros(b, q, 1)
        pvc = pv.unsqueeze(-1)  # [B, P, 1]
        chunk = _chunk_size(x)
        for c0 in range(0, p, chunk):
            sl = slice(c0, min(p, c0 + chunk))
            xc = x[:, :, sl]
            tc = t[:, :, sl].transpose(1, 2)
            xt.baddbmm_(xc, tc)
            prob = torch.sigmoid(xc)
            pt.baddbmm_(prob, tc)
            ps.baddbmm_(prob, pvc[:, sl])
            sp.baddbmm_(F.softplus(xc), pvc[:, sl])
        ctx.save_for_backward(x, t, pv)
        return xt, sp.squeeze(-1), pt, ps.squeeze(-1)

    @staticmethod
    def backward(ctx, g_xt: Tensor, g_sp: Tensor, g_pt: Tensor, g_ps: Tensor):
        x, t, pv = ctx.saved_tensors
        b, q, p = x.shape
        grad = torch.empty_like(x)
        g_sp = g_sp.unsqueeze(-1)
        g_ps = g_ps.unsqueeze(-1)
        chunk = _chunk_size(x)
        for c0 in range(0, p, chunk):
            sl = slice(c0, min(p, c0 + chunk))
            prob = torch.sigmoid(x[:, :, sl])
            deriv = torch.addcmul(prob, prob, prob, value=-1.0)  # p (1 - p)
            tc = t[:, :, sl]
            pvc = pv[:, None, sl]
            # d/dx: xt -> t ; sp -> pv * p ; pt -> t * p(1-p) ; ps -> pv * p(1-p)
            from_pt = torch.bmm(g_pt, tc).add_(g_ps * pvc).mul_(deriv)
            out = torch.bmm(g_xt, tc).add_(from_pt).addcmul_(g_sp * pvc, prob)
            grad[:, :, sl] = out
        return grad, None, None


def pair_stats(x: Tensor, t: Tensor, pv: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x @ t^T, sum softplus(x), sigmoid(x) @ t^T, sum sigmoid(x)); see the module docstring.

    x: [B, Q, P] logits (computed in float32); t: [B, K, P] {0,1}; pv: [B, P] {0,1}.
    """
    return _PairStats.apply(x.float(), t.float(), pv.float())
