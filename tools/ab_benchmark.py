#!/usr/bin/env python
"""A/B benchmark: the same model and data trained with each criterion, several seeds.

    python tools/ab_benchmark.py                               # CPU-sized run on the synthetic data
    python tools/ab_benchmark.py --iters 200 --eval-period 100 --seeds 0   # a quick look
    python tools/ab_benchmark.py --config-file projects/InfluencerFormer2D/configs/coco.yaml \
        --iters 368750 --eval-period 5000 --num-gpus 8 --output output/ab_coco

Each (criterion, seed) run is `tools/train_net.py` with MODEL.MASK_FORMER.CRITERION and SEED
set, evaluated on the held-out split every --eval-period iterations.  Writes to --output:

* ab_results.json: every evaluation (PQ/SQ/RQ, mask AP, duplicate rate) and timings per run;
* ab_results.md: final metrics (mean ± std over seeds), iterations needed to reach the
  Hungarian baseline's final PQ, duplicate rate, seconds per iteration, criterion time;
* ab_curves.png: PQ, AP and duplicate rate against iteration (mean and min-max band).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CFG = os.path.join(ROOT, "projects", "InfluencerFormer2D", "configs", "synthetic.yaml")
METRICS = {"PQ": "panoptic_seg/PQ", "SQ": "panoptic_seg/SQ", "RQ": "panoptic_seg/RQ",
           "PQ_th": "panoptic_seg/PQ_th", "PQ_st": "panoptic_seg/PQ_st", "AP": "segm/AP", "AP50": "segm/AP50",
           "duplicate_rate": "duplicates/rate"}


def run_one(args, criterion, seed, out_dir):
    """Train and periodically evaluate one (criterion, seed); returns the parsed metrics.json."""
    steps = f"({int(args.iters * 0.8)},)"
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file", args.config_file,
           "--num-gpus", str(args.num_gpus), "MODEL.MASK_FORMER.CRITERION", criterion, "SEED", str(seed),
           "SOLVER.MAX_ITER", str(args.iters), "SOLVER.STEPS", steps, "TEST.EVAL_PERIOD", str(args.eval_period),
           "SOLVER.CHECKPOINT_PERIOD", str(10 * args.iters), "OUTPUT_DIR", out_dir, *args.opts]
    metrics = os.path.join(out_dir, "metrics.json")
    if not (args.reuse and os.path.exists(os.path.join(out_dir, "model_final.pth"))):
        if os.path.exists(metrics):
            os.remove(metrics)
        os.makedirs(out_dir, exist_ok=True)
        t0 = time.time()
        with open(os.path.join(out_dir, "ab_stdout.log"), "w") as log:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        if proc.returncode != 0:
            raise SystemExit(f"run {criterion} seed {seed} failed; see {out_dir}/ab_stdout.log")
        print(f"  {criterion} seed {seed}: {time.time() - t0:.0f} s", flush=True)
    return [json.loads(line) for line in open(metrics)]


def summarise_run(rows, max_iter):
    evals = []
    for r in rows:
        if METRICS["PQ"] in r or METRICS["AP"] in r:
            # periodic evaluations are logged at the last finished iteration (0-based), the final one after it
            done = min(r["iteration"] + 1, max_iter)
            evals.append({"iteration": done, **{k: r.get(v) for k, v in METRICS.items()}})
    train = [r for r in rows if "time" in r]
    timing = {
        "sec_per_iter": statistics.median(r["time"] for r in train) if train else None,
        "criterion_forward_ms": (statistics.median(r["time/criterion_forward"] for r in train
                                                   if "time/criterion_forward" in r) * 1000
                                 if any("time/criterion_forward" in r for r in train) else None),
    }
    return evals, timing


def mean_curve(runs, key):
    """{iteration: [values over seeds]} for one criterion."""
    curve = {}
    for evals in runs:
        for e in evals:
            if e.get(key) is not None:
                curve.setdefault(e["iteration"], []).append(e[key])
    return dict(sorted(curve.items()))


def fmt(values, digits=1):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def write_report(results, args):
    crits = list(results)
    lines = [f"# A/B benchmark: {os.path.relpath(args.config_file, ROOT)}", "",
             f"{args.iters} iterations, seeds {args.seeds}, evaluation every {args.eval_period} iterations.", "",
             "| criterion | PQ | PQ things | PQ stuff | mask AP | duplicate rate % | iterations to Hungarian's final PQ "
             "| s / iteration | criterion forward ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    target = None
    if "hungarian" in results:
        hc = mean_curve([r["evals"] for r in results["hungarian"]], "PQ")
        target = statistics.mean(hc[max(hc)]) if hc else None
    for c in crits:
        runs = results[c]
        finals = [r["evals"][-1] if r["evals"] else {} for r in runs]
        reach = "n/a"
        if target is not None:
            curve = mean_curve([r["evals"] for r in runs], "PQ")
            hit = [it for it, v in curve.items() if statistics.mean(v) >= target]
            reach = f"{hit[0]} ({100 * hit[0] / args.iters:.0f} %)" if hit else "not reached"
        lines.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            c, fmt([f.get("PQ") for f in finals]), fmt([f.get("PQ_th") for f in finals]),
            fmt([f.get("PQ_st") for f in finals]), fmt([f.get("AP") for f in finals]),
            fmt([f.get("duplicate_rate") for f in finals]), reach,
            fmt([r["timing"]["sec_per_iter"] for r in runs], 2),
            fmt([r["timing"]["criterion_forward_ms"] for r in runs])))
    with open(os.path.join(args.output, "ab_results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def plot(results, args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("PQ", "PQ"), ("AP", "mask AP"), ("duplicate_rate", "duplicate rate (%)")]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4))
    for ax, (key, title) in zip(axes, keys):
        for c, runs in results.items():
            curve = mean_curve([r["evals"] for r in runs], key)
            if not curve:
                continue
            its = list(curve)
            ax.plot(its, [statistics.mean(v) for v in curve.values()], marker="o", label=c)
            ax.fill_between(its, [min(v) for v in curve.values()], [max(v) for v in curve.values()], alpha=0.2)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.output, "ab_curves.png"), dpi=100)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-file", default=DEFAULT_CFG)
    ap.add_argument("--criteria", nargs="+", default=["hungarian", "influencer_reference", "influencer_ot"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--iters", type=int, default=800)
    ap.add_argument("--eval-period", type=int, default=200)
    ap.add_argument("--num-gpus", type=int, default=1)
    ap.add_argument("--output", default=os.path.join(ROOT, "output", "ab_2d"))
    ap.add_argument("--reuse", action="store_true", help="keep finished runs found in --output")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="extra config overrides, KEY VALUE ...")
    args = ap.parse_args()
    os.makedirs(args.output, exist_ok=True)
    results = {c: [] for c in args.criteria}
    for s in args.seeds:  # seed-major: an interrupted study still has every criterion for the first seeds
        for c in args.criteria:
            rows = run_one(args, c, s, os.path.join(args.output, c, f"seed_{s}"))
            evals, timing = summarise_run(rows, args.iters)
            results[c].append({"seed": s, "evals": evals, "timing": timing})
    with open(os.path.join(args.output, "ab_results.json"), "w") as f:
        json.dump({"config": args.config_file, "iters": args.iters, "eval_period": args.eval_period,
                   "seeds": args.seeds, "results": results}, f, indent=1)
    write_report(results, args)
    plot(results, args)
    print(f"wrote {args.output}/ab_results.json, ab_results.md, ab_curves.png")


if __name__ == "__main__":
    main()
