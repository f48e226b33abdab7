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

from .mask_influencer import _full_precision


__all__ = ["pair_stats"]


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
        logsig = x.new_empty(b, q, 1)
        pv_col = pv.unsqueeze(-1)
        rows = _row_chunk(x)
        for q0 in range(0, q, rows):
            qs = slice(q0, min(q, q0 + rows))
            xc = x[:, qs]
            pt[:, qs] = torch.bmm(torch.sigmoid(xc), t_ext_T)
            logsig[:, qs] = torch.bmm(F.logsigmoid(xc), pv_col)
        ctx.save_for_backward(x, t_ext)
        sp = xt[..., k] - logsig[..., 0]  # softplus(x) = x - log sigmoid(x)
        return xt[..., :k], sp, pt[..., :k], pt[..., k]

    @staticmethod
    @_full_precision
    def backward(ctx, g_xt: Tensor, g_sp: Tensor, g_pt: Tensor, g_ps: Tensor):
        x, t_ext = ctx.saved_tensors
        b, q, p = x.shape
        k = t_ext.shape[1] - 1
        # dx = g_xt @ t + p * (g_sp pv + (1 - p) * ([g_pt | g_ps] @ [t; pv]))
        g_prob = torch.cat([g_pt, g_ps.unsqueeze(-1)], 2)
        g_lin = torch.cat([g_xt, g_xt.new_zeros(b, q, 1)], 2)
        pv = t_ext[:, k:]  # [B, 1, P]
        grad = torch.empty_like(x)
        rows = _row_chunk(x)
        for q0 in range(0, q, rows):
            qs = slice(q0, min(q, q0 + rows))
            prob = torch.sigmoid(x[:, qs])
            part = torch.bmm(g_prob[:, qs], t_ext)
            part.mul_(1 - prob).addcmul_(g_sp[:, qs, None], pv).mul_(prob)
            grad[:, qs] = part.baddbmm_(g_lin[:, qs], t_ext)
        return grad, None, None


def pair_stats(x: Tensor, t: Tensor, pv: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x @ t^T, sum softplus(x), sigmoid(x) @ t^T, sum sigmoid(x)); see the module docstring.

    x: [B, Q, P] logits (computed in float32); t: [B, K, P] {0,1}; pv: [B, P] {0,1}.
    """
    return _PairStats.apply(x.float(), t.float(), pv.float())
