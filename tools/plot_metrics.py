#!/usr/bin/env python
"""Draw training losses and evaluation metrics of one or more runs, overlaid, into one PNG.

    python tools/plot_metrics.py output/synthetic_influencer_ot                      # 2D run
    python tools/plot_metrics.py work_dirs/synthetic_ot work_dirs/synthetic_hungarian --out cmp.png
    python tools/plot_metrics.py RUN_DIR --keys total_loss "loss_*" segm/AP

A RUN_DIR is a detectron2 OUTPUT_DIR (its metrics.json: tools/train_net.py) or an mmengine work
dir (tools/train_3d.py): its <timestamp>/vis_data/scalars.json files, read in timestamp order so a
resumed run continues its curves (a step logged twice keeps the later value), or one
<timestamp> folder, or either file itself. One subplot per quantity; without --keys: the losses
(total and per term, not the per-decoder-layer copies) and the headline evaluation metrics.
Writes --out (default: RUN_DIR/curves.png of the first run) and prints the quantities drawn.
"""
import argparse
import fnmatch
import glob
import json
import math
import os
import re
import sys
from typing import Dict, List, Tuple

# detectron2 rows mix training scalars and evaluation results ("<task>/<metric>"); these
# prefixes are training statistics, everything else with a "/" is an evaluator's result
TRAIN_PREFIXES = ("criterion", "time")
# detectron2 evaluation metrics drawn by default (all of them are many per-class numbers)
HEADLINE_2D = ("panoptic_seg/PQ", "panoptic_seg/PQ_th", "segm/AP", "segm/AP50", "bbox/AP", "sem_seg/mIoU",
               "duplicates/rate")
# row bookkeeping, never drawn
NOT_QUANTITIES = {"iteration", "step", "iter", "epoch", "eta_seconds", "data_time", "time"}
# a loss of one decoder layer: loss_ce_3 (detectron2), layer_0_seg_loss (ours in 3D)
LAYER_COPY = re.compile(r"(_\d+$)|(^layer_\d+_)")


class Run:
    """One run's curves: series[key] = ([x], [y]); kind[key] = "train" or "eval"; xlabel[key]."""

    def __init__(self, name: str):
        self.name = name
        self.series: Dict[str, Dict[float, float]] = {}
        self.kind: Dict[str, str] = {}
        self.xlabel: Dict[str, str] = {}

    def add(self, key, x, y, kind, xlabel):
        if not isinstance(y, (int, float)) or isinstance(y, bool) or not math.isfinite(y):
            return  # NaN (an AP without instances of that size), strings, lists
        self.series.setdefault(key, {})[x] = float(y)  # a later row for the same x wins (resume)
        self.kind[key], self.xlabel[key] = kind, xlabel

    def curve(self, key) -> Tuple[List[float], List[float]]:
        points = sorted(self.series[key].items())
        return [x for x, _ in points], [y for _, y in points]


def read_json_lines(path) -> List[dict]:
    """Rows of a JSON-lines file; a cut-off last line (a run still writing) is dropped."""
    with open(path) as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                break
            raise SystemExit(f"{path}:{i + 1}: not a JSON line ({e})") from None
    return rows


def load_detectron2(path, run: Run):
    """metrics.json of detectron2's JSONWriter: one row per logged iteration."""
    for row in read_json_lines(path):
        x = row.get("iteration")
        if x is None:
            continue
        for key, value in row.items():
            if key in NOT_QUANTITIES or key == "lr":
                continue
            is_eval = "/" in key and key.split("/", 1)[0] not in TRAIN_PREFIXES
            run.add(key, x, value, "eval" if is_eval else "train", "iteration")


def load_mmengine(paths, run: Run):
    """vis_data/scalars.json files of mmengine's LocalVisBackend. Training rows carry the learning
    rate; validation rows do not, and their step is the epoch in epoch-based runs (mmengine's
    default LoggerHook(log_metric_by_epoch=True)), the iteration in iteration-based ones."""
    rows = [row for path in paths for row in read_json_lines(path)]
    train = [r for r in rows if "lr" in r or "base_lr" in r]
    by_epoch = any("epoch" in r for r in train)
    for row in rows:
        is_train = "lr" in row or "base_lr" in row
        kind, xlabel = ("train", "iteration") if is_train else ("eval", "epoch" if by_epoch else "iteration")
        for key, value in row.items():
            if key in NOT_QUANTITIES or key in ("lr", "base_lr"):
                continue
            run.add(key, row["step"], value, kind, xlabel)


def load_run(path, name=None) -> Run:
    """A run folder (or its metrics file) -> Run; SystemExit naming what was looked for."""
    run = Run(name or os.path.basename(os.path.normpath(path)))
    if os.path.isfile(path):
        if os.path.basename(path) == "scalars.json":
            load_mmengine([path], run)
        else:
            load_detectron2(path, run)
        return run
    if os.path.isfile(os.path.join(path, "metrics.json")):
        load_detectron2(os.path.join(path, "metrics.json"), run)
        return run
    scalars = sorted(glob.glob(os.path.join(path, "vis_data", "scalars.json")) +
                     glob.glob(os.path.join(path, "*", "vis_data", "scalars.json")))
    if scalars:
        load_mmengine(scalars, run)
        return run
    raise SystemExit(f"{path}: neither metrics.json (detectron2: the OUTPUT_DIR of tools/train_net.py) nor "
                     "vis_data/scalars.json (mmengine: a tools/train_3d.py work dir, e.g. work_dirs/synthetic_ot, "
                     "or one of its <timestamp> folders): give a run's output folder")


def default_keys(runs: List[Run]) -> List[str]:
    """Losses (totals, then terms; no per-layer copies), then headline evaluation metrics."""
    keys = {k: r.kind[k] for r in runs for k in r.series}
    losses = [k for k, kind in keys.items() if kind == "train" and "loss" in k and not LAYER_COPY.search(k)]
    losses.sort(key=lambda k: (k not in ("total_loss", "loss"), k))
    evals = [k for k, kind in keys.items() if kind == "eval"]
    d2 = [k for k in evals if "/" in k]  # detectron2's many per-class results -> its headline ones
    headline = [k for k in HEADLINE_2D if k in d2] or sorted(d2)
    return losses + headline + sorted(k for k in evals if "/" not in k)


def select_keys(runs: List[Run], patterns) -> List[str]:
    """--keys (names or fnmatch patterns) -> the keys some run has, in the order given."""
    available = sorted({k for r in runs for k in r.series})
    keys = []
    for pattern in patterns:
        found = [k for k in available if fnmatch.fnmatchcase(k, pattern)]
        if not found:
            raise SystemExit(f"--keys {pattern}: no run logs it; logged: {', '.join(available)}")
        keys += [k for k in found if k not in keys]
    return keys


def plot(runs: List[Run], keys: List[str], out: str):
    """One subplot per key, every run that logs it overlaid; PNG at out."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    cols = min(4, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        xlabels = set()
        for i, run in enumerate(runs):
            if key not in run.series:
                continue
            x, y = run.curve(key)
            style = "-" if run.kind[key] == "train" and len(x) > 1 else "-o"  # evaluations: few points
            ax.plot(x, y, style, color=f"C{i}", label=run.name, markersize=3, linewidth=1.2)
            xlabels.add(run.xlabel[key])
        ax.set_title(key, fontsize=10)
        ax.set_xlabel(" / ".join(sorted(xlabels)), fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if len(runs) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def run_names(paths):
    """Legend names: the folders' names, or their paths where two runs share a name."""
    names = [os.path.basename(os.path.normpath(p)) for p in paths]
    return [os.path.normpath(p) if names.count(n) > 1 else n for p, n in zip(paths, names)]


def main(argv=None) -> List[str]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", metavar="RUN_DIR")
    ap.add_argument("--out", help="PNG to write (default: RUN_DIR/curves.png of the first run)")
    ap.add_argument("--keys", nargs="+", metavar="KEY", help="quantities to draw (fnmatch patterns allowed)")
    args = ap.parse_args(argv)
    runs = [load_run(p, n) for p, n in zip(args.runs, run_names(args.runs))]
    empty = [p for p, r in zip(args.runs, runs) if not r.series]
    if empty:
        raise SystemExit(f"{empty[0]}: its metrics file has no numbers yet (a run that has not logged)")
    keys = select_keys(runs, args.keys) if args.keys else default_keys(runs)
    first = args.runs[0]
    out = args.out or os.path.join(first if os.path.isdir(first) else os.path.dirname(first), "curves.png")
    plot(runs, keys, out)
    print(f"wrote {out}: {len(keys)} quantities ({', '.join(keys)}) of {len(runs)} run(s)")
    return keys


if __name__ == "__main__":
    main(sys.argv[1:])
