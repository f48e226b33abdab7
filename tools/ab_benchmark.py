#!/usr/bin/env python
"""A/B benchmark: the same model and data trained with each arm (criterion), several seeds.

    python tools/ab_benchmark.py                               # CPU-sized run on the synthetic data
    python tools/ab_benchmark.py --iters 200 --eval-period 100 --seeds 0   # a quick look
    python tools/ab_benchmark.py --config-file projects/InfluencerFormer2D/configs/coco.yaml \
        --iters 368750 --eval-period 5000 --num-gpus 8 --output output/ab_coco

    python tools/ab_benchmark.py --task 3d                     # synthetic rooms (InfluencerFormer3D)
    python tools/ab_benchmark.py --task 3d --dataset-3d s3dis --arms hungarian ot   # the S3DIS configs
    python tools/ab_benchmark.py --task 3d --config-3d ot=path/to/my_config.py     # any config per arm

Arms: hungarian, reference, ot (influencer_core.arms; the old names baseline / influencer /
influencer_reference / influencer_ot still work with a warning).  2D: each (arm, seed) run is
`tools/train_net.py` on --config-file with the arm's MODEL.MASK_FORMER.CRITERION and SEED set,
evaluated on the held-out split every --eval-period iterations.  3D: each run is
`tools/train_3d.py` on the arm's config (influencer_core.arms: hungarian = OneFormer3D's Hungarian
InstanceCriterion, reference / ot = InfluencerCriterion variants) with ``randomness.seed``, the
iteration budget and the validation interval overridden.  Writes to --output:

* ab_results.json: every evaluation (2D: PQ/SQ/RQ, mask AP; 3D: mAP/mAP50/mAP25, mIoU, PQ;
  both: duplicate rate) and timings per run;
* ab_results.md: final metrics (mean ± std over seeds), iterations needed to reach the
  Hungarian baseline's final PQ (2D) / mAP (3D), duplicate rate, seconds per iteration,
  criterion time (CUDA events on a GPU, wall time on CPU; 2D and 3D);
* ab_curves.png: the main metrics against iteration (mean and min-max band);
* with --convergence, ab_convergence.md: the primary metric and duplicate rate at every
  evaluation (mean ± 95 % interval over seeds), areas under the curves, iterations to
  Hungarian's final metric (interpolated between evaluations) and whether Hungarian's curve
  has flattened (< 1 point gained over the last 25 % of the schedule).  ``--reuse`` continues
  an interrupted study without rerunning finished runs;
* with --final-eval-root DIR, ab_final_eval.md: every run's final checkpoint evaluated once
  more on the held-out data in DIR (a larger set than the config's validation split resolves
  smaller differences), per arm mean ± 95 % interval and, against Hungarian, the per-seed
  differences.  Fresh synthetic data for it (another generator seed than the training data's):
  2D ``python datasets/prepare_synthetic_2d.py --out datasets/generated/synthetic_coco_heldout
  --train 1 --val 500 --seed 1``, 3D ``python datasets/prepare_synthetic_3d.py --out
  datasets/generated/synthetic_s3dis_heldout --areas 5 --rooms-per-area 40 --seed 1``.
"""
import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:
    from influencer_core import arms
except ModuleNotFoundError as exc:  # the shared environment points at a checkout that is gone
    raise SystemExit(f"{exc}: install this checkout into the environment first: bash {ROOT}/tools/install.sh")


def warn_other_checkout():
    """The runs this tool starts import the installed influencer_core: say so when that is another
    checkout's (the shared environment follows the checkout that ran tools/install.sh last)."""
    from influencer_core.run_files import warn_other_checkout as warn

    warn(ROOT)


DEFAULT_CFG = os.path.join(ROOT, "projects", "InfluencerFormer2D", "configs", "synthetic.yaml")
METRICS = {"PQ": "panoptic_seg/PQ", "SQ": "panoptic_seg/SQ", "RQ": "panoptic_seg/RQ",
           "PQ_th": "panoptic_seg/PQ_th", "PQ_st": "panoptic_seg/PQ_st", "AP": "segm/AP", "AP50": "segm/AP50",
           "duplicate_rate": "duplicates/rate"}
# metric name in the report -> key logged by UnifiedSegMetric (fractions; reported in percent)
METRICS_3D = {"mAP": "all_ap", "mAP50": "all_ap_50%", "mAP25": "all_ap_25%", "mIoU": "miou", "PQ": "pq",
              "duplicate_rate": "duplicate_rate", "duplicate_rate_per_query": "duplicate_rate_per_query"}
# per task: report columns (label, key) and the metric the "iterations to Hungarian's final" column uses
COLUMNS = {"2d": [("PQ", "PQ"), ("PQ things", "PQ_th"), ("PQ stuff", "PQ_st"), ("mask AP", "AP"),
                  ("duplicate rate %", "duplicate_rate")],
           "3d": [("mAP", "mAP"), ("mAP50", "mAP50"), ("mAP25", "mAP25"), ("mIoU", "mIoU"), ("PQ", "PQ"),
                  ("duplicate rate %", "duplicate_rate"), ("per query %", "duplicate_rate_per_query")]}
PRIMARY = {"2d": "PQ", "3d": "mAP"}


def train_net_cmd(args, arm, seed, out_dir):
    """The tools/train_net.py command of one 2D (arm, seed); --overwrite: a run that is not reused
    replaces whatever an earlier study left in its folder."""
    steps = f"({int(args.iters * 0.8)},)"
    return [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file", args.config_file,
            "--num-gpus", str(args.num_gpus), "--overwrite", "MODEL.MASK_FORMER.CRITERION",
            arms.criterion_2d(args.base_arm[arm]),
            "SEED", str(seed), "SOLVER.MAX_ITER", str(args.iters), "SOLVER.STEPS", steps,
            "TEST.EVAL_PERIOD", str(args.eval_period), "SOLVER.CHECKPOINT_PERIOD", str(10 * args.iters),
            "OUTPUT_DIR", out_dir, *args.opts, *args.arm_opts.get(arm, [])]


def run_child(cmd, log_path):
    """Run one training / evaluation command with its output in log_path; returns its exit status.
    Stopping the study (Ctrl-C, SIGTERM) stops the command and its workers too: it runs in its own
    process group, which is terminated (then killed) when this process is interrupted."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
                                start_new_session=True)
        try:
            return proc.wait()
        except BaseException:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, None)):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(wait)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
            raise


COMMAND_FILE = "ab_command.json"


def reusable(args, arm, out_dir, done_file):
    """--reuse and a finished run in out_dir.  A finished run made with other overrides than this
    study's (its ab_command.json) is an error, not silently reused: the table would mix settings."""
    if not (args.reuse and os.path.exists(os.path.join(out_dir, done_file))):
        return False
    recorded = os.path.join(out_dir, COMMAND_FILE)
    if os.path.exists(recorded):  # runs made before the file existed are taken as they are
        with open(recorded) as f:
            old = json.load(f)
        old = {"overrides": old["overrides"], "data_root": old.get("data_root")}
        new = run_settings(args, arm)
        if old != new:
            raise SystemExit(f"--reuse: {out_dir} was trained with {old}, this study asks for {new}; "
                             "use another --output (or delete that run)")
    return True


def run_settings(args, arm):
    """What a reused run must have been trained with: the overrides and (3D) the data root."""
    root = getattr(args, "data_root_3d", None)
    return {"overrides": [*args.opts, *args.arm_opts.get(arm, [])], "data_root": root and os.path.abspath(root)}


def record_command(args, arm, out_dir, cmd):
    with open(os.path.join(out_dir, COMMAND_FILE), "w") as f:
        json.dump({"arm": args.base_arm[arm], **run_settings(args, arm), "command": cmd}, f, indent=1)


def run_one(args, arm, seed, out_dir):
    """Train and periodically evaluate one (arm, seed); returns the parsed metrics.json."""
    cmd = train_net_cmd(args, arm, seed, out_dir)
    metrics = os.path.join(out_dir, "metrics.json")
    if not reusable(args, arm, out_dir, "model_final.pth"):
        os.makedirs(out_dir, exist_ok=True)  # train_net.py --overwrite deletes an earlier run's files
        record_command(args, arm, out_dir, cmd)
        t0 = time.time()
        if run_child(cmd, os.path.join(out_dir, "ab_stdout.log")) != 0:
            raise SystemExit(f"run {arm} seed {seed} failed; see {out_dir}/ab_stdout.log")
        print(f"  {arm} seed {seed}: {time.time() - t0:.0f} s", flush=True)
    return [json.loads(line) for line in open(metrics)]


def run_one_3d(args, arm, seed, out_dir):
    """Train one (arm, seed) with tools/train_3d.py; returns (evals, timing)."""
    cfg = args.configs_3d[arm]
    final_ckpt = os.path.join(out_dir, f"iter_{args.iters}.pth")
    if not reusable(args, arm, out_dir, os.path.basename(final_ckpt)):
        os.makedirs(out_dir, exist_ok=True)
        # --overwrite: a run that is not reused replaces an earlier study's files in its folder
        data_root = ["--data-root", os.path.abspath(args.data_root_3d)] if args.data_root_3d else []
        cmd = [sys.executable, os.path.join(ROOT, "tools", "train_3d.py"), cfg, "--work-dir", out_dir, "--overwrite",
               *data_root, "--cfg-options", f"randomness.seed={seed}", f"train_cfg.max_iters={args.iters}",
               f"train_cfg.val_interval={args.eval_period}", f"param_scheduler.end={args.iters}",
               f"default_hooks.checkpoint.interval={args.iters}", *args.opts, *args.arm_opts.get(arm, [])]
        record_command(args, arm, out_dir, cmd)
        t0 = time.time()
        if run_child(cmd, os.path.join(out_dir, "ab_stdout.log")) != 0:
            raise SystemExit(f"run {arm} seed {seed} failed; see {out_dir}/ab_stdout.log")
        print(f"  {arm} seed {seed}: {time.time() - t0:.0f} s", flush=True)
    return summarise_run_3d(out_dir)


HELDOUT_HINT = {
    "2d": "python datasets/prepare_synthetic_2d.py --out {root} --train 1 --val 500 --seed 1",
    "3d": "python datasets/prepare_synthetic_3d.py --out {root} --areas 5 --rooms-per-area 40 --seed 1"}


def check_final_eval_root(task, root):
    """--final-eval-root must hold a prepared held-out split: 2D the COCO-format val2017 of the synthetic
    layout, 3D an S3DIS-layout Area 5 (what the synthetic configs test on)."""
    if task == "2d":
        from influencerformer2d.data.datasets import missing_split_files

        missing = missing_split_files(root, "val")
    else:
        missing = [n for n in ["s3dis_infos_Area_5.pkl"] if not os.path.exists(os.path.join(root, n))]
    if missing:
        raise SystemExit(f"--final-eval-root {root} has no {missing[0]}; make fresh held-out data with: "
                         + HELDOUT_HINT[task].format(root=root))


def final_eval_cmd(args, arm, out_dir, work):
    """The command evaluating one run's final checkpoint on --final-eval-root with the run's own saved
    config (2D: train_net.py --eval-only on the root as DATASETS.OWN_VAL; 3D: test_3d.py --data-root)."""
    root = os.path.abspath(args.final_eval_root)
    if args.task == "3d":
        dumped = sorted(f for f in os.listdir(out_dir) if f.endswith(".py"))
        cfg = os.path.join(out_dir, dumped[0]) if dumped else args.configs_3d[arm]
        return [sys.executable, os.path.join(ROOT, "tools", "test_3d.py"), cfg,
                os.path.join(out_dir, f"iter_{args.iters}.pth"), "--work-dir", work, "--data-root", root]
    from influencerformer2d.data.datasets import own_val_opts

    opts = own_val_opts(root, "ab_heldout")
    return [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file",
            os.path.join(out_dir, "config.yaml"), "--eval-only",
            "MODEL.WEIGHTS", os.path.join(out_dir, "model_final.pth"), "DATASETS.TEST", "('own_data',)", *opts,
            "OUTPUT_DIR", work]


def final_eval(args, arm, seed, out_dir):
    """One run's final checkpoint evaluated once more on ``--final-eval-root`` (see
    :func:`final_eval_cmd`); cached in ``out_dir/final_eval.json`` per data root and checkpoint.
    Returns {metric: value} in the units of the periodic evaluations (percent)."""
    ckpt = os.path.join(out_dir, f"iter_{args.iters}.pth" if args.task == "3d" else "model_final.pth")
    cache = os.path.join(out_dir, "final_eval.json")
    # the real path: a joint report through symlinked run folders reuses the runs' own results
    stamp = {"root": os.path.realpath(args.final_eval_root), "checkpoint": os.path.realpath(ckpt),
             "checkpoint_mtime": os.path.getmtime(ckpt)}
    if os.path.exists(cache):
        with open(cache) as f:
            old = json.load(f)
        if {k: old.get(k) for k in stamp} == stamp:
            return old["metrics"]
    work = os.path.join(out_dir, "final_eval")
    cmd = final_eval_cmd(args, arm, out_dir, work)
    if run_child(cmd, os.path.join(out_dir, "final_eval_stdout.log")) != 0:
        raise SystemExit(f"final evaluation of {arm} seed {seed} failed; see {out_dir}/final_eval_stdout.log")
    if args.task == "3d":
        with open(os.path.join(work, "test_metrics.json")) as f:
            raw = json.load(f)["metrics"]
        metrics = {k: (100 * raw[v] if v in raw else None) for k, v in METRICS_3D.items()}
    else:
        with open(os.path.join(work, "eval_metrics.json")) as f:
            raw = json.load(f)["metrics"]
        metrics = {k: raw.get(v) for k, v in METRICS.items()}
    with open(cache, "w") as f:
        json.dump({**stamp, "metrics": metrics}, f, indent=1)
    return metrics


def final_eval_summary(results, task):
    """Per arm: mean and 95 % interval of each metric of the final evaluation over seeds, and
    (arms other than Hungarian) the per-seed difference of the primary metric to Hungarian's run
    of the same seed."""
    out = {}
    primary = PRIMARY[task]
    keys = METRICS_3D if task == "3d" else METRICS
    hung = {r["seed"]: r["final_eval"] for r in results.get("hungarian", []) if r.get("final_eval")}
    for arm, runs in results.items():
        runs = [r for r in runs if r.get("final_eval")]
        if not runs:
            continue
        s = {"n": len(runs)}
        for key in keys:
            m, h = interval95([r["final_eval"].get(key) for r in runs])
            s[key] = {"mean": m, "ci95": h}
        if arm != "hungarian" and hung:
            diffs = [r["final_eval"][primary] - hung[r["seed"]][primary] for r in runs
                     if r["seed"] in hung and r["final_eval"].get(primary) is not None]
            m, h = interval95(diffs)
            s["minus_hungarian"] = {"metric": primary, "per_seed": diffs, "mean": m, "ci95": h}
        out[arm] = s
    return out


def write_final_eval_report(summary, args):
    """ab_final_eval.md from :func:`final_eval_summary`."""
    fmt_ci = lambda v: "n/a" if v["mean"] is None else (  # noqa: E731
        f"{v['mean']:.1f}" if v["ci95"] is None else f"{v['mean']:.1f} ± {v['ci95']:.1f}")
    cols, primary = COLUMNS[args.task], PRIMARY[args.task]
    lines = [f"# Final checkpoints on {os.path.relpath(os.path.abspath(args.final_eval_root), ROOT)}", "",
             f"Each run's final ({args.iters}-iteration) checkpoint, seeds {args.seeds}; mean ± half-width of the "
             f"95 % t-interval over seeds. Last column: {primary} minus Hungarian's of the same seed (per seed; "
             "mean ± 95 %).", "", "| arm | " + " | ".join(label for label, _ in cols) + f" | {primary} − hungarian |",
             "|---" * (len(cols) + 2) + "|"]
    for arm, s in summary.items():
        d = s.get("minus_hungarian")
        diff = "" if d is None else (", ".join(f"{x:+.1f}" for x in d["per_seed"]) + f" ({fmt_ci(d)})")
        lines.append(f"| {arm} | " + " | ".join(fmt_ci(s[k]) for _, k in cols) + f" | {diff} |")
    with open(os.path.join(args.output, "ab_final_eval.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def summarise_run_3d(out_dir):
    """Evaluations and timing from the newest mmengine ``vis_data/scalars.json`` in ``out_dir``
    that holds validation results."""
    logs = sorted(f for f in (os.path.join(out_dir, d, "vis_data", "scalars.json") for d in os.listdir(out_dir))
                  if os.path.exists(f))
    rows = []
    for f in reversed(logs):
        rows = [json.loads(line) for line in open(f)]
        if any(METRICS_3D["mAP"] in r for r in rows):
            break
    evals = [{"iteration": r["step"], **{k: (100 * r[v] if v in r else None) for k, v in METRICS_3D.items()}}
             for r in rows if METRICS_3D["mAP"] in r]
    train = [r for r in rows if "time" in r and "loss" in r]
    crit = [r["criterion_time"] for r in train if "criterion_time" in r]
    timing = {"sec_per_iter": statistics.median(r["time"] for r in train) if train else None,
              "criterion_forward_ms": 1000 * statistics.median(crit) if crit else None}
    return evals, timing


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
    """{iteration: [values over seeds]} for one arm."""
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
    arm_names = list(results)
    cols, primary = COLUMNS[args.task], PRIMARY[args.task]
    source = (os.path.relpath(args.config_file, ROOT) if args.task == "2d" else
              ", ".join(f"{c}: {os.path.relpath(args.configs_3d[c], ROOT)}" for c in arm_names))
    lines = [f"# A/B benchmark ({args.task.upper()}): {source}", "",
             f"{args.iters} iterations, seeds {args.seeds}, evaluation every {args.eval_period} iterations.", "",
             "| arm | " + " | ".join(label for label, _ in cols) +
             f" | iterations to Hungarian's final {primary} | s / iteration | criterion forward ms |",
             "|---" * (len(cols) + 4) + "|"]
    target = None
    if "hungarian" in results:
        hc = mean_curve([r["evals"] for r in results["hungarian"]], primary)
        target = statistics.mean(hc[max(hc)]) if hc else None
    for c in arm_names:
        runs = results[c]
        finals = [r["evals"][-1] if r["evals"] else {} for r in runs]
        reach = "n/a"
        if target is not None:
            curve = mean_curve([r["evals"] for r in runs], primary)
            hit = [it for it, v in curve.items() if statistics.mean(v) >= target]
            reach = f"{hit[0]} ({100 * hit[0] / args.iters:.0f} %)" if hit else "not reached"
        cells = [fmt([f.get(key) for f in finals]) for _, key in cols]
        lines.append("| " + " | ".join([c, *cells, reach, fmt([r["timing"]["sec_per_iter"] for r in runs], 2),
                                          fmt([r["timing"]["criterion_forward_ms"] for r in runs])]) + " |")
    with open(os.path.join(args.output, "ab_results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def plot(results, args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ([("PQ", "PQ"), ("AP", "mask AP"), ("duplicate_rate", "duplicate rate (%)")] if args.task == "2d" else
            [("mAP", "mAP"), ("mAP50", "mAP50"), ("duplicate_rate", "duplicate rate (%)")])
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


# ---- convergence statistics (--convergence) ------------------------------------------------------
def interval95(values):
    """(mean, half-width of the 95 % t-interval of the mean) of a list of seeds' values;
    half-width None for a single value."""
    from scipy.stats import t

    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, None
    return mean, float(t.ppf(0.975, len(values) - 1)) * statistics.stdev(values) / len(values) ** 0.5


def iterations_to(curve, target):
    """First iteration where the mean curve ({iteration: mean}) reaches ``target``, linearly
    interpolated between the two evaluations around the crossing; None if never reached."""
    points = sorted(curve.items())
    for i, (it, v) in enumerate(points):
        if v >= target:
            if i == 0:
                return float(it)
            it0, v0 = points[i - 1]
            return it0 + (target - v0) / (v - v0) * (it - it0)
    return None


def value_at(curve, iteration):
    """The mean curve linearly interpolated at ``iteration`` (clamped to the evaluated range)."""
    points = sorted(curve.items())
    if iteration <= points[0][0]:
        return points[0][1]
    for (it0, v0), (it1, v1) in zip(points, points[1:]):
        if iteration <= it1:
            return v0 + (iteration - it0) / (it1 - it0) * (v1 - v0)
    return points[-1][1]


def area_under_curve(curve):
    """Trapezoidal area under the mean curve divided by its iteration span: the metric's mean
    level over training (higher = better earlier and at the end)."""
    points = sorted(curve.items())
    if len(points) < 2:
        return points[0][1] if points else None
    area = sum((it1 - it0) * (v0 + v1) / 2 for (it0, v0), (it1, v1) in zip(points, points[1:]))
    return area / (points[-1][0] - points[0][0])


def convergence_summary(results, primary, iters):
    """Per arm: the primary metric and duplicate rate at every evaluation (mean, 95 % interval),
    area under the curve, final value, iterations to Hungarian's final value (interpolated), and
    for Hungarian the gain over the last 25 % of the schedule (its curve has flattened when
    that gain is below 1 point)."""
    out = {}
    means = {}
    for arm, runs in results.items():
        rows = []
        for key in (primary, "duplicate_rate"):
            curve = mean_curve([r["evals"] for r in runs], key)
            for it, vals in curve.items():
                m, h = interval95(vals)
                rows.append({"metric": key, "iteration": it, "mean": m, "ci95": h, "n": len(vals)})
            if key == primary:
                means[arm] = {it: statistics.mean(v) for it, v in curve.items()}
        out[arm] = {"evaluations": rows}
    for arm, curve in means.items():
        if not curve:
            continue
        final_vals = mean_curve([r["evals"] for r in results[arm]], primary)[max(curve)]
        m, h = interval95(final_vals)
        out[arm].update(final_mean=m, final_ci95=h, auc=area_under_curve(curve))
    hung = means.get("hungarian")
    if hung:
        target = hung[max(hung)]
        gain = target - value_at(hung, 0.75 * iters)
        out["hungarian"].update(last_quarter_gain=gain, flattened=gain < 1.0)
        for arm, curve in means.items():
            reach = iterations_to(curve, target) if curve else None
            out[arm].update(iterations_to_hungarian_final=reach,
                            fraction_of_schedule=None if reach is None else reach / iters)
    return out


def write_convergence_report(summary, args):
    """ab_convergence.md: the per-evaluation table (mean ± 95 % interval over seeds) and the
    summary numbers of :func:`convergence_summary`."""
    primary = PRIMARY[args.task]
    arms_ = list(summary)
    fmt_ci = lambda m, h: "n/a" if m is None else (f"{m:.1f}" if h is None else f"{m:.1f} ± {h:.1f}")  # noqa: E731
    lines = [f"# Convergence study ({args.task.upper()})", "",
             f"{args.iters} iterations, seeds {args.seeds}, evaluation every {args.eval_period} iterations; "
             "mean ± half-width of the 95 % t-interval over seeds.", ""]
    if "hungarian" in summary and "last_quarter_gain" in summary["hungarian"]:
        g = summary["hungarian"]["last_quarter_gain"]
        lines += [f"Hungarian's {primary} gained {g:.2f} points over the last 25 % of the schedule "
                  f"({'flattened: < 1 point' if g < 1 else 'NOT flattened: the schedule is too short to judge'}).", ""]
    lines += [f"| arm | final {primary} | area under the {primary} curve | iterations to Hungarian's final "
              f"{primary} | final duplicate rate % |", "|---|---|---|---|---|"]
    for arm in arms_:
        s = summary[arm]
        reach = s.get("iterations_to_hungarian_final")
        reach = "not reached" if reach is None else f"{reach:.0f} ({100 * s['fraction_of_schedule']:.0f} %)"
        dup = [r for r in s["evaluations"] if r["metric"] == "duplicate_rate"]
        dup = fmt_ci(dup[-1]["mean"], dup[-1]["ci95"]) if dup else "n/a"
        auc = "n/a" if s.get("auc") is None else f"{s['auc']:.1f}"
        lines.append(f"| {arm} | {fmt_ci(s.get('final_mean'), s.get('final_ci95'))} | {auc} | {reach} | {dup} |")
    for key, label in ((primary, primary), ("duplicate_rate", "duplicate rate %")):
        its = sorted({r["iteration"] for a in arms_ for r in summary[a]["evaluations"] if r["metric"] == key})
        lines += ["", f"{label} at every evaluation:", "", "| iteration | " + " | ".join(arms_) + " |",
                  "|---" * (len(arms_) + 1) + "|"]
        for it in its:
            cells = []
            for a in arms_:
                row = [r for r in summary[a]["evaluations"] if r["metric"] == key and r["iteration"] == it]
                cells.append(fmt_ci(row[0]["mean"], row[0]["ci95"]) if row else "n/a")
            lines.append(f"| {it} | " + " | ".join(cells) + " |")
    with open(os.path.join(args.output, "ab_convergence.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def canonical_arm(name):
    """The arm's current name; an old name prints a deprecation warning."""
    arm = arms.canonical(name, warn=False)
    if arm != name:
        print(f"warning: {arms.deprecation_message(name)}", file=sys.stderr)
    return arm


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=["2d", "3d"], default="2d")
    ap.add_argument("--config-file", default=DEFAULT_CFG, help="2D: the detectron2 config of every run")
    ap.add_argument("--dataset-3d", default="synthetic", choices=sorted(arms.STEM_3D),
                    help="3D: the dataset whose influencer_core.arms configs the arms train (default: synthetic)")
    ap.add_argument("--data-root-3d", default=None, metavar="DIR",
                    help="3D: every run reads its data from DIR (train_3d.py --data-root; the synthetic configs "
                         "generate their rooms there, e.g. more of them with synthetic_data.num_rooms_per_area=30)")
    ap.add_argument("--config-3d", action="append", default=[], metavar="ARM=CONFIG",
                    help="3D: the mmengine config of an arm instead of its --dataset-3d config")
    ap.add_argument("--arms", "--criteria", dest="arms", nargs="+", default=list(arms.ARMS),
                    help=f"arms to compare (default: {' '.join(arms.ARMS)})")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=ARM",
                    help="an extra entry compared like an arm: ARM trained under NAME (own folder, row and "
                         "curve), with the overrides of --arm-opts NAME; added to --arms")
    ap.add_argument("--arm-opts", action="append", nargs="+", default=[], metavar=("NAME", "OPT"),
                    help="overrides for one arm or variant only, after the shared ones (2D KEY VALUE ..., "
                         "3D key=value ...), e.g. --arm-opts ot model.criterion.inst_criterion.marginal_relax=0.5")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--iters", type=int, default=None, help="default: 800 (2D), 300 (3D)")
    ap.add_argument("--eval-period", type=int, default=None, help="default: 200 (2D), 100 (3D)")
    ap.add_argument("--num-gpus", type=int, default=1)
    ap.add_argument("--output", default=None, help="default: output/ab_2d or output/ab_3d")
    ap.add_argument("--reuse", action="store_true", help="keep finished runs found in --output")
    ap.add_argument("--convergence", action="store_true",
                    help="convergence study: >= 10 evaluations (default period: iters / 10), and "
                         "ab_convergence.md with 95 %% intervals, areas under the curves, interpolated "
                         "iterations to Hungarian's final metric and whether Hungarian's curve flattened")
    ap.add_argument("--final-eval-root", default=None, metavar="DIR",
                    help="also evaluate every run's final checkpoint on the held-out data in DIR "
                         "(ab_final_eval.md): 2D a synthetic-layout val2017, 3D an S3DIS-layout Area 5")
    ap.add_argument("opts", nargs=argparse.REMAINDER,
                    help="extra overrides: 2D KEY VALUE ..., 3D key=value ... (mmengine --cfg-options)")
    args = ap.parse_args(argv)
    warn_other_checkout()
    if argv is None:  # the command line: SIGTERM stops the running child as Ctrl-C does (run_child)
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    three_d = args.task == "3d"
    args.iters = args.iters or (300 if three_d else 800)
    if args.convergence and args.eval_period is None:
        args.eval_period = max(args.iters // 10, 1)
    args.eval_period = args.eval_period or (100 if three_d else 200)
    if args.convergence and args.iters // args.eval_period < 10:
        ap.error(f"--convergence needs >= 10 evaluations: --eval-period {args.eval_period} gives "
                 f"{args.iters // args.eval_period} over {args.iters} iterations")
    args.output = args.output or os.path.join(ROOT, "output", f"ab_{args.task}")
    if args.data_root_3d and not three_d:
        ap.error("--data-root-3d is for --task 3d (2D data: DATASETS.* overrides)")
    if args.final_eval_root:
        check_final_eval_root(args.task, args.final_eval_root)
    try:
        variants = {}
        for item in args.variant:
            name, sep, base = item.partition("=")
            if not sep or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", name) or name in arms.ARMS:
                ap.error(f"--variant expects NAME=ARM with a new folder-safe NAME (not an arm's name), got {item!r}")
            variants[name] = canonical_arm(base)
        args.base_arm = {}
        for a in [*args.arms, *variants]:
            name = a if a in variants else canonical_arm(a)
            args.base_arm[name] = variants.get(name, name)
        args.arms = list(args.base_arm)
        args.configs_3d = {a: os.path.join(ROOT, arms.config_3d(args.dataset_3d, base))
                           for a, base in args.base_arm.items()}
        for item in args.config_3d:
            name, sep, path = item.partition("=")
            if not sep or not os.path.exists(path):
                ap.error(f"--config-3d expects ARM=CONFIG with an existing file, got {item!r}")
            args.configs_3d[name if name in variants else canonical_arm(name)] = os.path.abspath(path)
        args.arm_opts, opts_given = {}, args.arm_opts
        for name, *opts in opts_given:
            name = name if name in variants else canonical_arm(name)
            if name not in args.base_arm:
                ap.error(f"--arm-opts {name}: not one of the compared arms / variants {args.arms}")
            args.arm_opts.setdefault(name, []).extend(opts)
    except ValueError as e:
        ap.error(str(e))
    os.makedirs(args.output, exist_ok=True)
    results = {a: [] for a in args.arms}
    for s in args.seeds:  # seed-major: an interrupted study still has every arm for the first seeds
        for a in args.arms:
            out_dir = os.path.join(args.output, a, f"seed_{s}")
            if three_d:
                evals, timing = run_one_3d(args, a, s, out_dir)
            else:
                evals, timing = summarise_run(run_one(args, a, s, out_dir), args.iters)
            results[a].append({"seed": s, "evals": evals, "timing": timing})
            if args.final_eval_root:
                results[a][-1]["final_eval"] = final_eval(args, a, s, out_dir)
    summary = convergence_summary(results, PRIMARY[args.task], args.iters)
    final = final_eval_summary(results, args.task) if args.final_eval_root else None
    with open(os.path.join(args.output, "ab_results.json"), "w") as f:
        json.dump({"task": args.task, "config": args.config_file if not three_d else args.configs_3d,
                   "iters": args.iters, "eval_period": args.eval_period,
                   "seeds": args.seeds, "results": results, "convergence": summary,
                   **({"final_eval": {"root": os.path.abspath(args.final_eval_root), "arms": final}}
                      if final is not None else {})}, f, indent=1)
    write_report(results, args)
    if args.convergence:
        write_convergence_report(summary, args)
    if final is not None:
        write_final_eval_report(final, args)
    plot(results, args)
    print(f"wrote {args.output}/ab_results.json, ab_results.md, ab_curves.png")


if __name__ == "__main__":
    main()
