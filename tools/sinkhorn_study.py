#!/usr/bin/env python
"""How many Sinkhorn iterations the transport plan needs: plans after N iterations against a
long-run reference, on random cost matrices of the benchmark shapes.

For each (Q, K, epsilon) and iteration count it prints one JSON line: the largest plan entry
difference to the reference (``--reference-iters``, default 2000), the relative difference of
the transport value <plan, cost>, and the largest row / column marginal error (rows must sum to
1, instance columns to 1); ``--method`` picks the solver measured.  Costs are uniform in [0,
scale): near-ties everywhere, a hard case (trained models' costs separate more). ``--costs
structured``: each instance has one to three good queries (cost ~ U(0.3, 0.7)) among poor ones
(~ U(1.5, 2.2)) and "no object" is cheap (~ U(0, 0.05)), the near-degenerate shape of a model
with duplicate queries, where small epsilon converges slowest.  ``row_l1_max``: the largest L1
distance of a query's row to the reference.

    python tools/sinkhorn_study.py                                    # default grid
    python tools/sinkhorn_study.py --shapes 400x20 --epsilons 0.1 --iters 20 30 50
    python tools/sinkhorn_study.py --costs structured --shapes 32x12 --epsilons 0.02 0.005 0.002 \
        --iters 50 100 200 300 --batch 32 --reference-iters 4000
"""
from __future__ import annotations

import argparse
import json

import torch

from influencer_core.transport import SINKHORN_METHODS, sinkhorn_plan


def structured_costs(batch: int, q: int, k: int, g: torch.Generator) -> torch.Tensor:
    """[batch, q, k+1]: one to three good queries per instance among poor ones, cheap "no object"."""
    cost = 1.5 + 0.7 * torch.rand(batch, q, k, generator=g)
    good = torch.rand(batch, q, k, generator=g).argsort(1) < torch.randint(1, 4, (batch, 1, k), generator=g)
    cost = torch.where(good, 0.3 + 0.4 * torch.rand(batch, q, k, generator=g), cost)
    return torch.cat([cost, 0.05 * torch.rand(batch, q, 1, generator=g)], 2)


def measure(q: int, k: int, epsilon: float, iters: list, reference_iters: int, batch: int, scale: float,
            seed: int = 0, costs: str = "uniform", method: str = SINKHORN_METHODS[0]) -> list:
    g = torch.Generator().manual_seed(seed)
    if costs == "structured":
        cost = structured_costs(batch, q, k, g)
    else:
        cost = torch.rand(batch, q, k + 1, generator=g) * scale
    valid = torch.ones(batch, k, dtype=torch.bool)
    ref = sinkhorn_plan(cost, valid, epsilon, reference_iters, method="log")
    ref_value = (ref * cost).sum((1, 2))
    rows = []
    for n in iters:
        plan = sinkhorn_plan(cost, valid, epsilon, n, method=method)
        value = (plan * cost).sum((1, 2))
        rows.append({"Q": q, "K": k, "epsilon": epsilon, "iters": n, "reference_iters": reference_iters,
                     "costs": costs, "method": method, "plan_max_diff": float((plan - ref).abs().max()),
                     "row_l1_max": float((plan - ref).abs().sum(2).max()),
                     "value_rel_diff": float(((value - ref_value).abs() / ref_value.abs()).max()),
                     "row_marginal_err": float((plan.sum(2) - 1).abs().max()),
                     "col_marginal_err": float((plan.sum(1)[:, :k] - 1).abs().max())})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=["400x20", "100x7", "100x50"], help="QxK")
    ap.add_argument("--epsilons", type=float, nargs="+", default=[0.5, 0.1, 0.05, 0.01])
    ap.add_argument("--iters", type=int, nargs="+", default=[10, 20, 30, 50, 100, 200])
    ap.add_argument("--reference-iters", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=8, help="random cost matrices per shape")
    ap.add_argument("--scale", type=float, default=5.0, help="costs are uniform in [0, scale)")
    ap.add_argument("--costs", choices=["uniform", "structured"], default="uniform",
                    help="random cost matrices: uniform, or a few good queries per instance")
    ap.add_argument("--method", choices=SINKHORN_METHODS, default=SINKHORN_METHODS[0],
                    help="the solver measured (the reference is always the log-domain one, run long)")
    args = ap.parse_args()
    if min(args.iters) < 1 or args.reference_iters < max(args.iters) or min(args.epsilons) <= 0:
        ap.error("need iters >= 1, --reference-iters >= every --iters, epsilons > 0")
    for shape in args.shapes:
        try:
            q, k = (int(v) for v in shape.lower().split("x"))
        except ValueError:
            ap.error(f"--shapes takes QxK, e.g. 400x20, got {shape!r}")
        for eps in args.epsilons:
            for row in measure(q, k, eps, args.iters, args.reference_iters, args.batch, args.scale,
                               costs=args.costs, method=args.method):
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
