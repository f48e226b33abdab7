#!/usr/bin/env python
"""How the criteria's cost grows with queries Q and instances K (one decoder layer, points fixed).

For every (Q, K) on the grid, ``hungarian``, ``ot`` (the core's defaults) and ``ot-3d`` (the 3D
plugin's near-hard plan) each run forward + backward in a process of their own (so the peak
memory is that point's alone); Hungarian's time is split into the cost matrix,
``linear_sum_assignment`` and the losses.  Writes a JSON with every point and the growth
exponents (least-squares slope of log time against log Q at each K, and against log K at each
Q), and a PNG of time against Q.

    python tools/scaling_study.py --out-dir scaling                      # full grid, 2 threads
    python tools/scaling_study.py --queries 50 400 --instances 5 20 --points 2000 --repeats 1

This answers where matching becomes the bottleneck (the seeds' "O(N^3)") and whether the
transport loss grows that way: it does not; both criteria pay mostly for the pairwise costs
over every point, see docs/results.md for a measured run.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time


def _point_options() -> dict:
    """benchmark_criterion.py's POINT_OPTIONS (read from its file: scripts are not a package)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmark_criterion.py")
    spec = importlib.util.spec_from_file_location("_benchmark_criterion_options", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.POINT_OPTIONS


POINT_OPTIONS = _point_options()

QUERIES = [50, 100, 200, 400, 800, 1600, 3200]
INSTANCES = [5, 20, 100, 300]
#: criterion names of the study -> (registered criterion, options): ``ot`` with the core's defaults
#: (what the 2D configs start from), ``ot-3d`` with the 3D plugin's near-hard plan (300 Sinkhorn
#: iterations at epsilon 0.002), the settings benchmark_criterion.py times at the S3DIS case
PRESETS = {"hungarian": ("hungarian", {}), "ot": ("ot", {}), "ot-3d": ("ot", POINT_OPTIONS["ot"])}
CRITERIA = list(PRESETS)
STYLES = {"hungarian": "o-", "ot": "s-", "ot-3d": "^-"}


def measure(criterion: str, q: int, k: int, points: int, repeats: int, threads: int, seed: int = 0) -> dict:
    """Median ms of forward + backward (and Hungarian's split) at one grid point, peak RSS in MB."""
    import torch

    import influencer_core.criterion as core
    from influencer_core import build_criterion

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(seed)
    c = 13
    owner = torch.randint(-1, k, (points,), generator=g)
    targets = [{"labels": torch.randint(0, c, (k,), generator=g), "masks": owner[None] == torch.arange(k)[:, None]}]
    logits = torch.randn(1, q, c + 1, generator=g).requires_grad_()
    masks = (torch.randn(1, q, points, generator=g) * 3).requires_grad_()
    name, options = PRESETS[criterion]
    crit = build_criterion(name, num_classes=c, deep_supervision=False, **options)
    split = {"assignment": 0.0, "match": 0.0}
    if criterion == "hungarian":  # time the solver and the whole matching inside the criterion
        solve, match = core.linear_assignment, crit.match

        def timed_solve(costs):
            t0 = time.perf_counter()
            out = solve(costs)
            split["assignment"] += time.perf_counter() - t0
            return out

        def timed_match(layer, tgts):
            t0 = time.perf_counter()
            out = match(layer, tgts)
            split["match"] += time.perf_counter() - t0
            return out

        core.linear_assignment = timed_solve
        crit.match = timed_match
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = []
    for i in range(repeats + 1):  # the first call warms up
        logits.grad = masks.grad = None
        split.update(assignment=0.0, match=0.0)
        t0 = time.perf_counter()
        crit.total_loss(crit({"pred_logits": logits, "pred_masks": masks}, targets)).backward()
        total = time.perf_counter() - t0
        if i:
            rows.append((total, split["match"], split["assignment"]))
    med = lambda j: 1000 * statistics.median(r[j] for r in rows)  # noqa: E731
    out = {"criterion": criterion, "options": options, "Q": q, "K": k, "P": points, "threads": threads,
           "repeats": repeats, "ms": round(med(0), 2),
           "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base, 1)}
    if criterion == "hungarian":
        out.update(cost_matrix_ms=round(med(1) - med(2), 2), assignment_ms=round(med(2), 2),
                   losses_ms=round(med(0) - med(1), 2))
    return out


def slope(xs, ys) -> float:
    """Least-squares slope of log y against log x (the growth exponent)."""
    lx, ly = [math.log(x) for x in xs], [math.log(max(y, 1e-6)) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    den = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / den if den else float("nan")


def exponents(results: list) -> dict:
    out = {}
    for crit in CRITERIA:
        rows = [r for r in results if r["criterion"] == crit]
        if not rows:
            continue
        for key in ["ms"] + (["cost_matrix_ms", "assignment_ms", "losses_ms"] if crit == "hungarian" else []):
            by_k, by_q = {}, {}
            for k in sorted({r["K"] for r in rows}):
                pts = sorted((r["Q"], r[key]) for r in rows if r["K"] == k)
                if len(pts) > 1:
                    by_k[str(k)] = round(slope(*zip(*pts)), 2)
            for q in sorted({r["Q"] for r in rows}):
                pts = sorted((r["K"], r[key]) for r in rows if r["Q"] == q)
                if len(pts) > 1:
                    by_q[str(q)] = round(slope(*zip(*pts)), 2)
            out[f"{crit}/{key}"] = {"in_Q_at_K": by_k, "in_K_at_Q": by_q}
    return out


def plot(results: list, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted({r["K"] for r in results})
    fig, axes = plt.subplots(1, len(ks), figsize=(4 * len(ks), 3.6), squeeze=False, sharey=True)
    for ax, k in zip(axes[0], ks):
        for crit, style in STYLES.items():
            pts = sorted((r["Q"], r["ms"]) for r in results if r["criterion"] == crit and r["K"] == k)
            if pts:
                ax.plot(*zip(*pts), style, label=crit)
        pts = sorted((r["Q"], r["assignment_ms"]) for r in results if r["criterion"] == "hungarian" and r["K"] == k)
        if pts:
            ax.plot(*zip(*pts), "x--", label="hungarian: assignment only")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"K = {k}")
        ax.set_xlabel("queries Q")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("forward + backward, ms")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(f"one layer, P = {results[0]['P']} points, {results[0]['threads']} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, nargs="+", default=QUERIES)
    ap.add_argument("--instances", type=int, nargs="+", default=INSTANCES)
    ap.add_argument("--criteria", nargs="+", choices=CRITERIA, default=CRITERIA,
                    help="ot: the core's defaults; ot-3d: the 3D plugin's near-hard plan")
    ap.add_argument("--points", type=int, default=8000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out-dir", default="scaling")
    ap.add_argument("--reuse", action="store_true", help="keep the points already in OUT_DIR/scaling.json")
    ap.add_argument("--single", nargs=3, metavar=("CRITERION", "Q", "K"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    for name in ("queries", "instances"):
        if min(getattr(args, name)) < 1:
            ap.error(f"--{name} must be >= 1")
    if args.points < 1 or args.repeats < 1:
        ap.error("--points and --repeats must be >= 1")
    if args.single:
        crit, q, k = args.single
        print(json.dumps(measure(crit, int(q), int(k), args.points, args.repeats, args.threads)))
        return

    os.makedirs(args.out_dir, exist_ok=True)
    path = os.path.join(args.out_dir, "scaling.json")
    done = {}
    if args.reuse and os.path.exists(path):
        with open(path) as f:
            for r in json.load(f)["points"]:
                if r["P"] == args.points and r["threads"] == args.threads:
                    done[(r["criterion"], r["Q"], r["K"])] = r
    results = []
    for k in args.instances:
        for q in args.queries:
            for crit in args.criteria:
                if (crit, q, k) in done:
                    results.append(done[(crit, q, k)])
                    continue
                cmd = [sys.executable, os.path.abspath(__file__), "--single", crit, str(q), str(k),
                       "--points", str(args.points), "--repeats", str(args.repeats), "--threads", str(args.threads)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    sys.stderr.write(proc.stderr)
                    raise SystemExit(f"{crit} at Q={q} K={k} failed")
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                print(json.dumps(res), flush=True)
                results.append(res)
                with open(path, "w") as f:  # after every point: an interrupted study continues (--reuse)
                    json.dump({"points": results}, f, indent=1)
    summary = {"points": results, "growth_exponents": exponents(results)}
    with open(path, "w") as f:
        json.dump(summary, f, indent=1)
    plot(results, os.path.join(args.out_dir, "scaling.png"))
    print(json.dumps(summary["growth_exponents"], indent=1))
    print(f"wrote {path} and {os.path.join(args.out_dir, 'scaling.png')}")


if __name__ == "__main__":
    main()
