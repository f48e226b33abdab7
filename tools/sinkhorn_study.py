#!/usr/bin/env python
"""How many Sinkhorn iterations the transport plan needs: plans after N iterations against a
long-run reference, on random cost matrices of the benchmark shapes.

For each (Q, K, epsilon) and iteration count it prints one JSON line: the largest plan entry
difference to the reference (``--reference-iters``, default 2000), the relative difference of
the transport value <plan, cost>, and the largest row / column marginal error (rows must sum to
1, instance columns to 1).  Costs are uniform in [0, scale): near-ties everywhere, a hard case
(trained models' costs separate more).

    python tools/sinkhorn_study.py                                    # default grid
    python tools/sinkhorn_study.py --shapes 400x20 --epsilons 0.1 --iters 20 30 50
"""
from __future__ import annotations

import argparse
import json

import torch

from influencer_core.transport import sinkhorn_plan


def measure(q: int, k: int, epsilon: float, iters: list, reference_iters: int, batch: int, scale: float,
            seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    cost = torch.rand(batch, q, k + 1, generator=g) * scale
    valid = torch.ones(batch, k, dtype=torch.bool)
    ref = sinkhorn_plan(cost, valid, epsilon, reference_iters)
    ref_value = (ref * cost).sum((1, 2))
    rows = []
    for n in iters:
        plan = sinkhorn_plan(cost, valid, epsilon, n)
        value = (plan * cost).sum((1, 2))
        rows.append({"Q": q, "K": k, "epsilon": epsilon, "iters": n, "reference_iters": reference_iters,
                     "plan_max_diff": float((plan - ref).abs().max()),
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
    args = ap.parse_args()
    if min(args.iters) < 1 or args.reference_iters < max(args.iters) or min(args.epsilons) <= 0:
        ap.error("need iters >= 1, --reference-iters >= every --iters, epsilons > 0")
    for shape in args.shapes:
        try:
            q, k = (int(v) for v in shape.lower().split("x"))
        except ValueError:
            ap.error(f"--shapes takes QxK, e.g. 400x20, got {shape!r}")
        for eps in args.epsilons:
            for row in measure(q, k, eps, args.iters, args.reference_iters, args.batch, args.scale):
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
