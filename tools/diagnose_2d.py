#!/usr/bin/env python
"""Why a trained 2D model misses objects, and how one-to-one its transport plan is.

    python tools/diagnose_2d.py misses output/study_2d/ot/seed_0      # its config.yaml + model_final.pth
    python tools/diagnose_2d.py misses RUN --heldout datasets/generated/synthetic_coco_heldout
    python tools/diagnose_2d.py plan RUN --epsilon 0.01 --iters 50 500  # ot runs only

``misses``: every ground-truth *thing* instance of the evaluation images (the run's DATASETS.TEST,
or the val2017 split of ``--heldout``, a folder in the synthetic layout) is put in one bucket:
``found`` (some query's mask, thresholded at logit 0, has IoU > ``--iou`` with it and the most
confident such query names its class), ``wrong_class`` (it names another class), ``suppressed``
(it says "no object": a good mask the class head throws away) or ``no_mask`` (no query's mask
reaches the IoU).  Images go through the run's training mapper without scale jitter (flips
stay), so the instances are the training view of each image.

``plan``: the final layer's transport plan on ``--batches`` training batches, recomputed at
``--epsilon`` (default: the run's EPSILON_END) with each ``--iters`` count: the mass the best
query holds of each instance (1 = one-to-one), the share of instances above 0.9 and the largest
row-sum error (rows of an exact plan sum to 1).

Prints a table and one JSON line.
"""
import argparse
import json
import os
import random
import sys

import numpy as np
import torch
import torch.nn.functional as F

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

from influencer_core.run_files import CheckpointError, set_cpu_threads
from influencer_core.transport import sinkhorn_plan
from influencerformer2d.checkpoint import CheckedCheckpointer
from influencerformer2d.config import load_config
from influencerformer2d.data.dataset_mappers import build_train_mapper
from influencerformer2d.data.datasets import (DatasetError, missing_split_files, own_val_opts,
                                             register_checkout_synthetic_coco)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_run(run, heldout=None, extra=()):
    """(cfg, model in eval mode, dataset name) of a run folder (config.yaml + model_final.pth)."""
    cfg_file, weights = os.path.join(run, "config.yaml"), os.path.join(run, "model_final.pth")
    for f in (cfg_file, weights):
        if not os.path.isfile(f):
            raise DatasetError(f"{run} is not a finished 2D run: {os.path.basename(f)} is missing")
    opts = ["MODEL.WEIGHTS", weights, "DATALOADER.NUM_WORKERS", "0", "INPUT.MIN_SCALE", "1.0",
            "INPUT.MAX_SCALE", "1.0", *extra]
    if heldout:
        missing = missing_split_files(heldout, "val")
        if missing:
            raise DatasetError(f"--heldout {heldout} has no {missing[0]}; make one with: python "
                               f"datasets/prepare_synthetic_2d.py --out {heldout} --train 1 --val 500 --seed 1")
        opts += [*own_val_opts(heldout, "diagnose_heldout"), "DATASETS.TEST", "('own_data',)"]
    cfg = load_config(cfg_file, opts)
    model = build_model(cfg).eval()
    CheckedCheckpointer(model, source="model_final.pth").load(weights)
    return cfg, model, cfg.DATASETS.TEST[0]


def batches(cfg, name, size, limit=None):
    """The dataset's images through the training mapper, in order, ``size`` at a time."""
    mapper = build_train_mapper(cfg, True)
    dicts = DatasetCatalog.get(name)[:limit]
    for i in range(0, len(dicts), size):
        yield [mapper(dict(d)) for d in dicts[i:i + size]]


def raw_outputs(model, batch):
    """The final layer's outputs and the padded images of a batch, without post-processing."""
    seen = {}
    model.inference = lambda outputs, batched_inputs, images: seen.update(outputs=outputs, images=images) or []
    with torch.no_grad():
        model(batch)
    del model.inference
    return seen["outputs"], seen["images"]


def classify_instances(pred_masks, probs, gt_masks, gt_labels, things, iou_thr):
    """Bucket of every thing instance of one image.  pred_masks [Q, H, W] bool, probs [Q, C+1],
    gt_masks [K, H, W] bool, gt_labels [K].  Returns a list of bucket names."""
    no_object = probs.shape[1] - 1
    out = []
    for k in range(gt_masks.shape[0]):
        label = int(gt_labels[k])
        if label not in things:
            continue
        inter = (pred_masks & gt_masks[k]).flatten(1).sum(1).float()
        union = (pred_masks | gt_masks[k]).flatten(1).sum(1).float()
        good = (inter / union.clamp(min=1) > iou_thr).nonzero().flatten()
        if good.numel() == 0:
            out.append("no_mask")
            continue
        q = good[(1 - probs[good, no_object]).argmax()]
        pred = int(probs[q].argmax())
        out.append("suppressed" if pred == no_object else "found" if pred == label else "wrong_class")
    return out


def misses(args):
    cfg, model, name = load_run(args.run, args.heldout)
    things = set(getattr(MetadataCatalog.get(name), "thing_dataset_id_to_contiguous_id", {}).values())
    counts = dict(found=0, wrong_class=0, suppressed=0, no_mask=0)
    for batch in batches(cfg, name, 4, args.images):
        out, images = raw_outputs(model, batch)
        masks = F.interpolate(out["pred_masks"], size=images.tensor.shape[-2:], mode="bilinear",
                              align_corners=False) > 0
        probs = out["pred_logits"].softmax(-1)
        for b, inp in enumerate(batch):
            inst = inp["instances"]
            gm = inst.gt_masks.tensor if hasattr(inst.gt_masks, "tensor") else inst.gt_masks
            padded = torch.zeros((gm.shape[0], *masks.shape[-2:]), dtype=torch.bool)
            padded[:, : gm.shape[1], : gm.shape[2]] = gm.bool()
            for bucket in classify_instances(masks[b], probs[b], padded, inst.gt_classes, things, args.iou):
                counts[bucket] += 1
    n = sum(counts.values())
    share = {k: 100.0 * v / max(n, 1) for k, v in counts.items()}
    print(f"{args.run}: {n} thing instances of {name}")
    print("| found % | wrong class % | suppressed % | no mask % |\n|---|---|---|---|")
    print("| " + " | ".join(f"{share[k]:.1f}" for k in counts) + " |")
    print(json.dumps({"run": args.run, "dataset": name, "instances": n, "iou": args.iou, "percent": share}))


def plan(args):
    cfg, model, _ = load_run(args.run)
    crit = model.criterion
    if not hasattr(crit, "plan"):
        raise DatasetError(f"{args.run} was trained with {type(crit).__name__}: no transport plan")
    eps = args.epsilon or cfg.MODEL.MASK_FORMER.INFLUENCER.EPSILON_END or crit.epsilon
    captured = {}
    prepare = crit.prepare
    crit.prepare = lambda layers, targets: captured.setdefault("s", prepare(layers, targets))
    model.train()
    rows = {n: [] for n in args.iters}
    for i, batch in enumerate(batches(cfg, cfg.DATASETS.TRAIN[0], cfg.SOLVER.IMS_PER_BATCH)):
        if i == args.batches:
            break
        captured.clear()
        with torch.no_grad():
            model(batch)
        state = captured["s"]
        valid = state["targets"].valid
        cost = crit.cost_matrix(state["costs"][-1])
        for n in args.iters:
            p = sinkhorn_plan(cost, valid, eps, n, relax=crit.marginal_relax or None)
            best = p[..., :-1].max(1).values[valid]
            rows[n].append(dict(best=best.mean().item(), above_09=(best > 0.9).float().mean().item(),
                                row_err=(p.sum(-1) - 1).abs().max().item()))
    print(f"{args.run}: final-layer plan at epsilon {eps}, {args.batches} training batches")
    print("| Sinkhorn iterations | best query's mass (mean) | instances with > 0.9 % | largest row-sum error |")
    print("|---|---|---|---|")
    summary = {}
    for n, r in rows.items():
        s = {k: float(np.mean([x[k] for x in r])) for k in r[0]}
        summary[n] = s
        print(f"| {n} | {s['best']:.3f} | {100 * s['above_09']:.1f} | {s['row_err']:.3f} |")
    print(json.dumps({"run": args.run, "epsilon": eps, "plan": summary}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    m = sub.add_parser("misses", help="bucket every ground-truth thing instance")
    m.add_argument("run", help="a training output folder with config.yaml and model_final.pth")
    m.add_argument("--heldout", help="evaluate on this synthetic-layout folder's val2017 instead")
    m.add_argument("--images", type=int, default=None, help="only the first N images")
    m.add_argument("--iou", type=float, default=0.5)
    p = sub.add_parser("plan", help="how one-to-one the final layer's plan is (ot runs)")
    p.add_argument("run")
    p.add_argument("--epsilon", type=float, default=None, help="default: the run's EPSILON_END")
    p.add_argument("--iters", type=int, nargs="+", default=[50, 500])
    p.add_argument("--batches", type=int, default=5)
    args = ap.parse_args(argv)
    set_cpu_threads(None)
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    register_checkout_synthetic_coco(ROOT)
    try:
        misses(args) if args.what == "misses" else plan(args)
    except (DatasetError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
