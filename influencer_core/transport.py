"""Entropic optimal transport between queries and instances (+ a "no object" sink).

Sinkhorn with epsilon scaling and a fixed iteration count (log domain while epsilon falls,
stabilised scaling steps at the final epsilon): no host sync, batched over images with padded
instances.
"""
from __future__ import annotations


import torch
from torch import Tensor

from .validation import check_number

__all__ = ["SINKHORN_METHODS", "assignment_marginals", "sinkhorn_plan"]

_NEG = -1e9  # stands for log(0) without producing NaN in logsumexp
# exp() of arguments far below float32's range takes a slow path on CPU (about 20x per element);
# terms below exp(-80) change no float32 sum that contains the maximum term exp(0) = 1
_EXP_FLOOR = -80.0


def _logsumexp(x: Tensor, dim: int) -> Tensor:
    """``torch.logsumexp`` for finite inputs, with the negligible terms clamped to exp(-80)."""
    m = x.amax(dim, keepdim=True)
    return (x - m).clamp_(min=_EXP_FLOOR).exp_().sum(dim).log_() + m.squeeze(dim)


def assignment_marginals(valid: Tensor, num_queries: int, capacity=1.0, query_valid: Tensor = None) -> tuple:
    """Row and column masses for Q queries -> K instances + no-object.

    valid: [B, K] bool.  Every query has mass 1.  Each instance takes
    min(capacity, Q / K_b) (so K > Q still balances), the no-object column the
    rest.  capacity: float or [B] tensor (> 1: one-to-many).  query_valid: [B, Q]
    bool for images with fewer real queries than Q (padding rows get mass 0 and
    Q_b real queries replace Q).
    Returns (log_row [B, Q], log_col [B, K+1]).
    """
    validf = valid.float()
    k = validf.sum(1, keepdim=True)  # [B, 1]
    cap = torch.as_tensor(capacity, dtype=torch.float32, device=valid.device).reshape(-1, 1)
    if query_valid is not None:
        num_queries = query_valid.float().sum(1, keepdim=True)  # [B, 1]
    per_inst = torch.minimum(num_queries / k.clamp(min=1), cap)
    col_inst = validf * per_inst
    col_none = (num_queries - (col_inst.sum(1, keepdim=True))).clamp(min=0)
    col = torch.cat([col_inst, col_none], dim=1)
    log_col = torch.where(col > 0, col.clamp(min=1e-30).log(), torch.full_like(col, _NEG))
    if query_valid is None:
        log_row = torch.zeros(valid.shape[0], num_queries, device=valid.device)
    else:
        zero = torch.zeros((), device=valid.device)
        log_row = torch.where(query_valid, zero, torch.full((), _NEG, device=valid.device))
    return log_row, log_col


#: Scaling iterations between two absorptions of the scalings into the log-domain duals: short
#: enough that the scalings stay far inside float32's range, long enough that absorbing is rare.
ABSORB_EVERY = 10
#: The warm-up lowers epsilon in at least this many steps, so that one step lowers it by a factor
#: of about 2 at most (cost spans over epsilon are below ~1e5): a kernel computed with the duals
#: of the step before then keeps every row and column far above float32's smallest numbers.
WARM_STEPS = 16
_TINY = 1e-30
#: the solvers of :func:`sinkhorn_plan` (``method``); the first is the default
SINKHORN_METHODS = ("log", "scaling")


@torch.no_grad()
def sinkhorn_plan(cost: Tensor, valid: Tensor, epsilon: float, iters: int = 50,
                  eps_start: float = None, capacity=1.0, query_valid: Tensor = None,
                  relax: float = None, method: str = "log") -> Tensor:
    """Transport plan [B, Q, K+1] minimising <plan, cost> - epsilon * H(plan).

    cost: [B, Q, K+1] (last column = no object; padded instance columns are
    ignored through ``valid`` [B, K]).  Rows sum to 1; column k sums to
    min(capacity, Q/K) for real instances (capacity: float or [B]), the last
    column to the remainder.  query_valid: [B, Q] bool, padding queries (rows of
    zero mass, see :func:`assignment_marginals`).
    relax = tau > 0: relaxed column marginals (rows stay exact).  An instance takes *at least*
    its capacity and more where several queries are cheap for it, the excess penalised by
    ``tau * KL(col_k | capacity)``; the no-object column gives up that mass under the same
    penalty.  (Relaxing the instances both ways lets the cheap no-object column starve them
    early in training, when every instance cost is high: nothing is learned.)  The update is
    the exact one damped by ``rho = tau / (tau + eps)`` (the KL proximal step), for an instance
    only where that raises its mass: ``g_k = max(g, rho g)``, ``g_none = rho g``.  As eps -> 0,
    rho -> 1 and the plan becomes the exact one.  None (default): exact columns.
    The regulariser is lowered geometrically from ``eps_start`` (default: the
    cost range) to ``epsilon`` over the first half of the iterations
    (epsilon scaling), which makes small epsilon converge in few iterations.

    ``method``: ``"scaling"`` runs the iterations on the scalings u = exp(f / eps), v =
    exp(g / eps) of a kernel that already contains the current log-domain duals (stabilised
    Sinkhorn), absorbing them into the duals every ``ABSORB_EVERY`` iterations; epsilon is then
    lowered in steps of up to that many iterations, at least ``WARM_STEPS`` of them.  One iteration
    is two small matrix products instead of two log-sum-exps over the kernel (about a third of the
    operations: Sinkhorn is bound by per-operation overhead at these sizes).  ``"log"`` (default):
    epsilon lowered every iteration of the warm-up, in the log domain; the iterations at the final
    epsilon then run as the same scaling steps, which give the log-domain iterates up to rounding
    (closer to a float64 log-domain run than float32 log-sum-exps are).  ``relax``, and warm-ups
    shorter than ``WARM_STEPS``, stay in the log domain throughout.  Both methods converge to the
    same plan; the default stays "log" because on the 3D study two seeds trained with "scaling"
    (whose coarser warm-up takes another path) ended 2.5 and 6.1 mAP below the same seeds with
    "log" (docs/convergence_3d.md), which is not ruled out as noise yet.
    """
    if epsilon <= 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    if relax is not None and not relax > 0:
        raise ValueError(f"relax must be > 0 (None: exact column marginals), got {relax}")
    check_number("sinkhorn_plan", "iters", iters, low=1, integer=True)
    if method not in SINKHORN_METHODS:
        raise ValueError(f"method must be one of {SINKHORN_METHODS}, got {method!r}")
    cost = cost.float()
    b, q, k1 = cost.shape
    log_row, log_col = assignment_marginals(valid, q, capacity, query_valid)
    col_ok = torch.cat([valid, torch.ones(b, 1, dtype=torch.bool, device=valid.device)], 1)
    ok = col_ok[:, None, :] if query_valid is None else col_ok[:, None, :] & query_valid[:, :, None]
    big = torch.where(ok, cost, torch.zeros_like(cost))
    if eps_start is None:
        span = (big.amax(dim=(1, 2)) - big.amin(dim=(1, 2))).max()
        eps_start_t = span.clamp(min=epsilon)
    else:
        eps_start_t = torch.full((), max(eps_start, epsilon), device=cost.device)
    # Work on [B, K+1, Q]: both updates then reduce either over the short middle dimension or
    # over the long contiguous one, about twice as fast on CPU as reducing rows of K+1 entries.
    big = big.transpose(1, 2).contiguous()
    warm = iters // 2  # (one iteration: at the final epsilon)
    ratio = torch.log(epsilon / eps_start_t)
    if relax is not None or (method == "log" and warm < WARM_STEPS):
        mask = torch.where(col_ok[:, :, None], torch.zeros_like(big), torch.full_like(big, _NEG))
        return _log_domain(big, mask, log_row, log_col, epsilon, iters, warm, eps_start_t, ratio, relax)
    # "log": the duals absorbed after every iteration of the warm-up (epsilon changes every one),
    # which gives the log-domain iterates; a warm-up of at least WARM_STEPS iterations keeps one
    # step of epsilon within a factor ~2, as the scaling steps need (shorter ones: log domain above)
    block = 1 if method == "log" else max(1, min(ABSORB_EVERY, warm // WARM_STEPS))
    # under autocast the products would run in half precision, where the scalings overflow
    with torch.autocast(device_type=big.device.type, enabled=False):
        return _scaling(big, col_ok, log_row, log_col, epsilon, iters, warm, eps_start_t, ratio, block)


def _scaling(big, col_ok, log_row, log_col, epsilon, iters, warm, eps_start_t, ratio, block) -> Tensor:
    """Stabilised scaling iterations, epsilon lowered every ``block`` iterations of the warm-up;
    ``big`` [B, K+1, Q]. Returns the plan [B, Q, K+1]."""
    b, k1, q = big.shape
    # u, v and the marginals are kept as [B, 1, n] row vectors: every product is then one bmm of
    # a row vector with a matrix (the fast form) and no view is made inside the loop
    row, col = log_row.exp()[:, None, :], log_col.exp()[:, None, :]  # exact zeros for padding
    keep = col_ok[:, :, None].float()
    f = torch.zeros(b, 1, q, device=big.device)
    g = torch.zeros(b, k1, 1, device=big.device)
    # epsilon of every warm-up iteration at once (the geometric schedule), indexed per step
    eps_all = eps_start_t * torch.exp(ratio * torch.arange(warm, device=big.device) / max(warm, 1))
    it = 0
    while it < warm:  # epsilon of a step: the schedule at its first iteration
        n = min(block, warm - it)
        eps = eps_all[it]
        if it + n >= iters:  # no iteration left at the final epsilon
            return _scaled_steps(big, keep, row, col, f, g, eps, n, plan=True)
        f, g = _scaled_steps(big, keep, row, col, f, g, eps, n)
        it += n
    eps_final = torch.full((), epsilon, device=big.device)
    return _scaled_steps(big, keep, row, col, f, g, eps_final, iters - it, plan=True)


def _scaled_steps(big, keep, row, col, f, g, eps, n, plan=False):
    """``n`` Sinkhorn iterations at one ``eps`` on the scalings of a kernel that contains the duals
    f [B, 1, Q] and g [B, K+1, 1], absorbed into them every ``ABSORB_EVERY`` iterations.  The
    iterates are the log-domain ones (f = eps (log row - LSE((g - C) / eps)), likewise g) up to
    rounding.  Returns the duals, or the plan [B, Q, K+1] when ``plan``."""
    b, k1, q = big.shape
    done = 0
    while True:
        m = min(ABSORB_EVERY, n - done)
        # the kernel with the duals absorbed: near the plan, so its entries stay in [exp(-80), Q]
        kernel = (g + f - big).div_(eps).clamp_(min=_EXP_FLOOR).exp_().mul_(keep)  # [B, K+1, Q]
        kernel_t = kernel.transpose(1, 2)
        # the first u from v = 1 is a column sum: no product needed
        u = row / kernel.sum(1, keepdim=True).clamp_(min=_TINY)  # [B, 1, Q]
        v = col / torch.bmm(u, kernel_t).clamp_(min=_TINY)  # [B, 1, K+1]
        for _ in range(m - 1):
            u = row / torch.bmm(v, kernel).clamp_(min=_TINY)
            v = col / torch.bmm(u, kernel_t).clamp_(min=_TINY)
        done += m
        if plan and done >= n:
            return (kernel_t * u.transpose(1, 2) * v).contiguous()
        f = torch.addcmul(f, eps, u.clamp(min=_TINY).log_())
        g = torch.addcmul(g, eps, v.clamp(min=_TINY).log_().transpose(1, 2))
        if done >= n:
            return f, g


def _log_domain(big, mask, log_row, log_col, epsilon, iters, warm, eps_start_t, ratio, relax) -> Tensor:
    """Log-domain iterations, epsilon lowered every iteration; ``big`` [B, K+1, Q]."""
    b, k1, q = big.shape
    f = torch.zeros(b, q, device=big.device)
    g = torch.zeros(b, k1, device=big.device)
    logk_final = None  # after the warm-up epsilon is constant: the kernel is computed once
    for it in range(iters):
        if it < warm:
            eps = eps_start_t * torch.exp(ratio * (it / warm))
            logk = mask - big / eps
        else:
            eps = epsilon
            if logk_final is None:
                logk_final = mask - big / epsilon
            logk = logk_final
        f = eps * (log_row - _logsumexp(logk + g[:, :, None] / eps, dim=1))
        g = eps * (log_col - _logsumexp(logk + f[:, None, :] / eps, dim=2))
        if relax is not None:  # KL-relaxed columns: the exact update, damped; instances >= capacity
            damped = g * (relax / (relax + eps))
            g = torch.cat([torch.maximum(g[:, :-1], damped[:, :-1]), damped[:, -1:]], 1)
    logk = logk_final if logk_final is not None else mask - big / epsilon
    plan = torch.exp(logk + f[:, None, :] / epsilon + g[:, :, None] / epsilon).transpose(1, 2).contiguous()
    return plan
