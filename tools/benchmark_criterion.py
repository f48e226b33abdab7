#!/usr/bin/env python
"""Time forward+backward of each criterion at the COCO and S3DIS shapes.

Prints one JSON object per (criterion, case) and a table.  Each measurement
runs in its own process so peak memory is that case's alone.

    python tools/benchmark_criterion.py                      # all cases, 2 threads
    python tools/benchmark_criterion.py --cases coco-k7 --repeats 3
    python tools/benchmark_criterion.py --device cuda --json-out bench.json
    python tools/benchmark_criterion.py --check-overhead     # cost of the input value checks
    python tools/benchmark_criterion.py --rounds 3           # criteria in turn, 3 times (drift hits all)
    python tools/benchmark_criterion.py --upstream-mask2former ~/src/Mask2Former \
        --upstream-oneformer3d ~/src/oneformer3d                # upstream's criteria beside ours

Cases: coco-k7 / coco-k50 (B=2, Q=100, 133 classes, 10 layers, 256x256 masks,
12544 points) and s3dis (B=2, Q=400, 13 classes, P=30000 superpoints, K=20,
4 layers).  ``speedup_vs_hungarian`` compares against the Hungarian baseline
measured in the same run; with ``--upstream-*`` (a local clone of the upstream repository,
read by tools/upstream_criteria.py) upstream's own criterion is timed on the same inputs and
``speedup_vs_upstream`` compares against it.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


CASES = {
    "coco-k7": dict(kind="image", B=2, Q=100, C=133, L=10, H=256, K=7),
    "coco-k50": dict(kind="image", B=2, Q=100, C=133, L=10, H=256, K=50),
    "s3dis": dict(kind="points", B=2, Q=400, C=13, L=4, P=30000, K=20),
}

#: ``ot`` at the point case is timed with the 3D plugin's settings (InfluencerCriterion's
#: DEFAULTS and OneFormer3D's S3DIS weights; tests/tools checks they agree): the near-hard plan's
#: 300 Sinkhorn iterations are part of what a 3D user pays
POINT_OPTIONS = {"ot": dict(epsilon=0.002, sinkhorn_iters=300, class_cost="prob", mask_weight=1.0,
                            dice_weight=1.0, class_weight=0.5, no_object_weight=0.05)}


def make_inputs(case: dict, device: str, seed: int = 0):
    """Random predictions and blob-shaped targets of the case's shape."""
    import torch

    g = torch.Generator().manual_seed(seed)
    B, Q, C, L, K = case["B"], case["Q"], case["C"], case["L"], case["K"]
    if case["kind"] == "image":
        H = case["H"]
        shape = (B, Q, H, H)
        yy, xx = torch.meshgrid(torch.arange(H), torch.arange(H), indexing="ij")
        targets = []
        for _ in range(B):
            c = torch.rand(K, 2, generator=g) * H
            r = 8 + torch.rand(K, generator=g) * H / 6
            m = ((yy[None] - c[:, 0, None, None]) ** 2 + (xx[None] - c[:, 1, None, None]) ** 2) < r[:, None, None] ** 2
            targets.append({"labels": torch.randint(0, C, (K,), generator=g).to(device), "masks": m.to(device)})
    else:
        P = case["P"]
        shape = (B, Q, P)
        targets = []
        for _ in range(B):
            owner = torch.randint(-1, K, (P,), generator=g)
            m = owner[None] == torch.arange(K)[:, None]
            targets.append({"labels": torch.randint(0, C, (K,), generator=g).to(device), "masks": m.to(device)})
    layers = []
    for _ in range(L):
        layers.append({
            "pred_logits": (torch.randn(B, Q, C + 1, generator=g)).to(device).requires_grad_(),
            "pred_masks": (torch.randn(*shape, generator=g) * 3).to(device).requires_grad_(),
        })
    outputs = dict(layers[-1])
    outputs["aux_outputs"] = layers[:-1]
    leaves = [t for l in layers for t in l.values()]
    return outputs, targets, leaves


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_single(criterion: str, case_name: str, device: str, repeats: int, warmup: int, threads: int,
               upstream_root: str = None) -> dict:
    import torch

    torch.set_num_threads(threads)
    case = CASES[case_name]
    if criterion.startswith("upstream-"):  # upstream's own code, from the user's checkout
        import upstream_criteria

        total = upstream_criteria.build(criterion, upstream_root, case, device)
    else:
        from influencer_core import build_criterion

        options = POINT_OPTIONS.get(criterion, {}) if case["kind"] == "points" else {}
        crit = build_criterion(criterion, num_classes=case["C"], **options).to(device)

        def total(outputs, targets):
            return crit.total_loss(crit(outputs, targets))
    outputs, targets, leaves = make_inputs(case, device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    base = rss_mb()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated() / 2**20
    times = []
    for i in range(warmup + repeats):
        for t in leaves:
            t.grad = None
        sync()
        t0 = time.perf_counter()
        total(outputs, targets).backward()
        sync()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1000)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20 - base_cuda
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    shape = {k: v for k, v in case.items() if k != "kind"}
    return {
        "criterion": criterion,
        "case": case_name,
        "shape": shape,
        "device": device,
        "threads": threads,
        "thp_mem_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE", "0"),
        "median_ms": round(statistics.median(times), 1),
        "min_ms": round(min(times), 1),
        "repeats": repeats,
        "peak_mem_mb": round(peak, 1),
    }


def merge_rounds(runs: list) -> dict:
    """One result from the rounds of one (criterion, case): median of the rounds' medians, min of
    their minima, max of their peaks; ``round_medians_ms`` keeps every round's median."""
    out = dict(runs[0])
    if len(runs) > 1:
        meds = [r["median_ms"] for r in runs]
        out.update(median_ms=round(statistics.median(meds), 1), min_ms=min(r["min_ms"] for r in runs),
                   peak_mem_mb=max(r["peak_mem_mb"] for r in runs), rounds=len(runs), round_medians_ms=meds)
    return out


def run_check_overhead(criterion: str, case_name: str, device: str, repeats: int, warmup: int, threads: int) -> dict:
    """Cost of the value checks: the criterion with ``check_values`` on and off, calls
    alternating A B A B on the same inputs (machine noise hits both), median ms of each."""
    import torch
    from influencer_core import build_criterion

    torch.set_num_threads(threads)
    case = CASES[case_name]
    crits = {flag: build_criterion(criterion, num_classes=case["C"], check_values=flag).to(device)
             for flag in (True, False)}
    outputs, targets, leaves = make_inputs(case, device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times = {True: [], False: []}
    for i in range(warmup + repeats):
        for flag in (True, False) if i % 2 == 0 else (False, True):
            for t in leaves:
                t.grad = None
            sync()
            t0 = time.perf_counter()
            crits[flag].total_loss(crits[flag](outputs, targets)).backward()
            sync()
            if i >= warmup:
                times[flag].append((time.perf_counter() - t0) * 1000)
    on, off = statistics.median(times[True]), statistics.median(times[False])
    # the checks alone (shapes, target flags, the final read-back), timed apart from the loss:
    # on a shared machine the A/B difference above is mostly noise at this size
    from influencer_core.validation import raise_on_bad_values

    crit = crits[True]
    losses = {k: v.detach() for k, v in crit(outputs, targets).items()}
    layers = crit.layers(outputs)
    alone = []
    for _ in range(max(repeats, 5)):
        sync()
        t0 = time.perf_counter()
        crit.check(layers, targets)
        _, label_flags, mask_flags = crit.checked_targets(targets)
        raise_on_bad_values(criterion, crit.num_classes, targets, label_flags, mask_flags, losses, layers)
        sync()
        alone.append((time.perf_counter() - t0) * 1000)
    checks = statistics.median(alone)
    return {"criterion": criterion, "case": case_name, "device": device, "threads": threads, "repeats": repeats,
            "checks_on_ms": round(on, 1), "checks_off_ms": round(off, 1),
            "check_overhead_pct": round(100 * (on / off - 1), 2),
            "checks_alone_ms": round(checks, 3), "checks_alone_pct": round(100 * checks / off, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--criteria", nargs="+", default=None, help="criterion names (default: all registered)")
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every case's criteria this many times in turn (A B A B ...): machine drift "
                         "then hits all of them; the reported median is the median of the rounds' medians")
    ap.add_argument("--json-out", default=None, help="also write all results to this file")
    ap.add_argument("--check-overhead", action="store_true",
                    help="instead: time each criterion with its value checks on and off (check_values), alternating")
    ap.add_argument("--upstream-mask2former", default=None, metavar="DIR",
                    help="a Mask2Former clone: also time its SetCriterion at the COCO cases")
    ap.add_argument("--upstream-oneformer3d", default=None, metavar="DIR",
                    help="a OneFormer3D clone: also time its InstanceCriterion at the S3DIS case")
    ap.add_argument("--single", nargs=2, metavar=("CRITERION", "CASE"), help=argparse.SUPPRESS)
    ap.add_argument("--upstream-root", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.single:
        if args.check_overhead:
            res = run_check_overhead(args.single[0], args.single[1], args.device, args.repeats, args.warmup,
                                     args.threads)
        else:
            res = run_single(args.single[0], args.single[1], args.device, args.repeats, args.warmup,
                             args.threads, args.upstream_root)
        print(json.dumps(res))
        return

    from influencer_core import CRITERIA
    from upstream_criteria import UPSTREAM, missing_files

    criteria = args.criteria or ["hungarian"] + sorted(c for c in CRITERIA if c != "hungarian")
    roots = {name: getattr(args, name.replace("-", "_")) for name in UPSTREAM}
    roots = {name: os.path.abspath(os.path.expanduser(r)) for name, r in roots.items() if r}
    for name, root in roots.items():
        lacking = missing_files(name, root)
        if lacking:
            ap.error(f"--{name} {root}: not a {UPSTREAM[name][0]} checkout (it lacks {', '.join(lacking)})")
    if roots and args.check_overhead:
        ap.error("--check-overhead times our criteria only; drop the --upstream-* options")
    if args.rounds < 1:
        ap.error(f"--rounds must be >= 1, got {args.rounds}")
    if args.rounds > 1 and args.check_overhead:
        ap.error("--check-overhead alternates within one process already; drop --rounds")
    results = []
    for case in args.cases:
        extra = [name for name in roots if case in UPSTREAM[name][2]]
        rounds = {}
        for crit in [c for _ in range(args.rounds) for c in criteria + extra]:
            cmd = [sys.executable, os.path.abspath(__file__), "--single", crit, case, "--device", args.device,
                   "--threads", str(args.threads), "--repeats", str(args.repeats), "--warmup", str(args.warmup)]
            cmd += ["--check-overhead"] if args.check_overhead else []
            cmd += ["--upstream-root", roots[crit]] if crit in roots else []
            # 2 MB pages for large CPU tensors (a PyTorch allocator option): fewer page faults
            env = dict(os.environ, THP_MEM_ALLOC_ENABLE=os.environ.get("THP_MEM_ALLOC_ENABLE", "1"))
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr)
                raise SystemExit(f"benchmark of {crit} on {case} failed")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            if args.check_overhead:
                results.append(res)
                print(json.dumps(res), flush=True)
            else:
                rounds.setdefault(crit, []).append(res)
        for crit, runs in rounds.items():
            results.append(merge_rounds(runs))
        if args.check_overhead:
            continue
        hung = next((r for r in results if r["case"] == case and r["criterion"] == "hungarian"), None)
        up = next((r for r in results if r["case"] == case and r["criterion"] in extra), None)
        for r in results:
            if r["case"] == case:
                r["speedup_vs_hungarian"] = round(hung["median_ms"] / r["median_ms"], 2) if hung else None
                r["speedup_vs_upstream"] = round(up["median_ms"] / r["median_ms"], 2) if up else None
                for name, ref in (("hungarian", hung), ("upstream", up)):
                    if ref is not None and "round_medians_ms" in r:  # the ratio within each round
                        r[f"round_speedups_vs_{name}"] = [round(a / b, 2) for a, b in
                                                          zip(ref["round_medians_ms"], r["round_medians_ms"])]
                if "_printed" not in r:
                    print(json.dumps(r), flush=True)
                    r["_printed"] = True
    if args.check_overhead:
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump(results, f, indent=1)
        return
    for r in results:
        r.pop("_printed", None)
    print()
    print("| case | criterion | median ms | peak MB | speedup vs hungarian | speedup vs upstream |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['case']} | {r['criterion']} | {r['median_ms']} | {r['peak_mem_mb']} "
              f"| {r['speedup_vs_hungarian']} | {r['speedup_vs_upstream']} |")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
