"""One-to-one and sparse assignment of queries to instances (the matchers of the baselines)."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from .validation import NonFiniteCostError

__all__ = ["linear_assignment", "sparse_match"]


def linear_assignment(costs: Sequence[Tensor]) -> List[Tuple[Tensor, Tensor]]:
    """Minimum-cost one-to-one assignment of each [Q, K] cost matrix (scipy).

    Moves all matrices to the host in one transfer; returns (query idx, target
    idx) int64 pairs on the costs' device, sorted by query.
    """
    from scipy.optimize import linear_sum_assignment

    if not costs:
        return []
    device = costs[0].device
    sizes = [c.numel() for c in costs]
    flat = torch.cat([c.detach().float().reshape(-1) for c in costs]).cpu().numpy() if sum(sizes) else np.zeros(0)
    out = []
    start = 0
    for b, (c, size) in enumerate(zip(costs, sizes)):
        mat = flat[start : start + size].reshape(c.shape)
        start += size
        if not np.isfinite(mat).all():
            raise NonFiniteCostError(f"matching cost of image {b} contains NaN/inf: check the predictions for "
                                     "non-finite logits")
        rows, cols = linear_sum_assignment(mat)
        out.append((torch.as_tensor(rows, dtype=torch.long, device=device),
                    torch.as_tensor(cols, dtype=torch.long, device=device)))
    return out


SPARSE_INF = 1e8  # cost of (query, instance) pairs outside ``query_masks`` (as OneFormer3D)


@torch.no_grad()
def sparse_match(cost: Tensor, query_masks: Tensor, topk: int) -> Tuple[Tensor, Tensor]:
    """OneFormer3D's ``SparseMatcher`` rule on one scene.

    cost [Q, K]; query_masks [K, Q] bool (query q may take instance k); topk: queries per
    instance.  Returns (query ids [M], instance ids [M]) int64, sorted by query then instance:
    the pairs whose cost (``SPARSE_INF`` outside ``query_masks``) is strictly below the
    instance's ``topk + 1``-th smallest cost; with fewer than ``topk + 1`` queries the threshold
    is ``SPARSE_INF`` (all allowed pairs), where upstream's ``torch.topk`` would fail.
    """
    if cost.shape[1] == 0:
        empty = torch.zeros(0, dtype=torch.long, device=cost.device)
        return empty, empty
    masked = torch.where(query_masks.T.bool(), cost.float(), cost.new_full((), SPARSE_INF, dtype=torch.float32))
    if masked.shape[0] > topk:
        thr = masked.topk(topk + 1, dim=0, largest=False, sorted=True).values[-1:]
    else:
        thr = masked.new_full((1, masked.shape[1]), SPARSE_INF)
    q_idx, k_idx = torch.nonzero(masked < thr, as_tuple=True)
    return q_idx, k_idx
