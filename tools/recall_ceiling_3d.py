#!/usr/bin/env python
"""Where a 3D checkpoint loses instance AP: mask quality or ranking.

    python tools/recall_ceiling_3d.py CONFIG CHECKPOINT [--data-root DIR] [--cfg-options ...]

Runs the test split like ``tools/test_3d.py`` (same arguments) and, besides the usual metrics,
reports for every ground-truth instance the best IoU that any reported prediction of its class
reaches (all of the model's (query, class) candidates that survive its thresholds). The share of
instances with a best IoU >= t is a ceiling on recall, hence on AP at IoU t, whatever the
scores: where AP50 is close to the ceiling at 0.5 the ranking is good and the masks limit AP;
where it is far below, the scores do. Ground-truth instances take the most frequent semantic
label of their points; labels outside the model's ``num_classes`` instance classes are skipped,
so the tool assumes the S3DIS label layout (instance classes = semantic classes 0..C-1, as the
S3DIS and synthetic-rooms configs have). Prints one JSON line and writes
``<work_dir>/recall_ceiling.json``.
"""
import json
import os.path as osp
import sys

import numpy as np
from mmengine.hooks import Hook

THRESHOLDS = (0.25, 0.5, 0.75, 0.9)


def best_ious(pred_masks, pred_labels, gt_instance, gt_semantic, num_classes):
    """Best same-class IoU per ground-truth instance of one scene.

    pred_masks [n, N] bool, pred_labels [n]; gt_instance [N] (instance id, < 0: none),
    gt_semantic [N]. Returns [k] floats (0 where no prediction of the class overlaps)."""
    ids = np.unique(gt_instance[gt_instance >= 0])
    out = []
    pred = np.asarray(pred_masks, bool).astype(np.float32)
    for i in ids:
        pts = gt_instance == i
        label = np.bincount(gt_semantic[pts]).argmax()
        if label >= num_classes:
            continue
        same = pred[np.asarray(pred_labels) == label]
        if not len(same):
            out.append(0.0)
            continue
        inter = same @ pts.astype(np.float32)
        union = same.sum(1) + pts.sum() - inter
        out.append(float((inter / np.maximum(union, 1)).max()))
    return np.asarray(out, np.float64)


def summarize(ious, thresholds=THRESHOLDS):
    """{'instances', 'mean_best_iou', 'recall@t' (percent) for each t} of the pooled best IoUs."""
    ious = np.asarray(ious, np.float64)
    res = {"instances": int(ious.size), "mean_best_iou": round(float(ious.mean()), 4) if ious.size else None}
    for t in thresholds:
        res[f"recall@{t}"] = round(100.0 * float((ious >= t).mean()), 2) if ious.size else None
    return res


class _Collect(Hook):
    priority = 'LOWEST'

    def __init__(self, num_classes):
        self.num_classes = num_classes
        self.ious = []

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        for sample in outputs or []:
            pred = sample.pred_pts_seg
            masks = pred.pts_instance_mask[0]
            masks = masks.cpu().numpy() if hasattr(masks, 'cpu') else np.asarray(masks)
            ann = sample.eval_ann_info
            self.ious.append(best_ious(masks, np.asarray(pred.instance_labels), np.asarray(ann['pts_instance_mask']),
                                       np.asarray(ann['pts_semantic_mask']), self.num_classes))


def main(argv=None):
    import test_3d  # the sibling tool (tools/ is the script's folder)

    args = test_3d.parse_args(argv)
    cfg, runner = test_3d.make_runner(args, test_3d.build_cfg)
    if runner is None:
        return 2
    collect = _Collect(int(cfg.model.num_classes))
    runner.register_hook(collect)
    metrics = runner.test() or {}
    res = summarize(np.concatenate(collect.ious) if collect.ious else [])
    res.update({k.split('/')[-1]: round(100.0 * float(v), 2) for k, v in metrics.items()
                if k.split('/')[-1] in ('all_ap', 'all_ap_50%', 'all_ap_25%')})
    print(json.dumps(res), flush=True)
    with open(osp.join(cfg.work_dir, 'recall_ceiling.json'), 'w') as f:
        json.dump(dict(config=args.config, checkpoint=args.checkpoint, **res), f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
