#!/usr/bin/env python
"""Evaluate an InfluencerFormer3D / OneFormer3D checkpoint with mmengine (mmdet3d 1.4 plugin).

    python tools/test_3d.py CONFIG CHECKPOINT
    python tools/test_3d.py CONFIG --checkpoint work_dirs/x/iter_300.pth --work-dir work_dirs/x/eval
    python tools/test_3d.py CONFIG CHECKPOINT --show-dir work_dirs/x/vis   # per-scene .ply / .npz
    torchrun --nproc_per_node=4 tools/test_3d.py CONFIG CHECKPOINT --launcher pytorch

Behaves like mmdet3d's tools/test.py (same data check and device choice as tools/train_3d.py,
both from :mod:`influencerformer3d.runner`).  After the test loop it prints the instance
segmentation results per class and overall (mAP, mAP50, mAP25; from the metric's per-class
results) with semantic mIoU, panoptic PQ and, when the metric reports it, the duplicate rate,
and writes them to ``<work_dir>/test_metrics.json``.

``--show-dir DIR`` writes, per scene, ``<scene>.npz`` (per-point instance id of the highest
scoring instance above ``--score-thr``, instance labels / scores, semantic and panoptic
predictions) and ``<scene>.ply`` (points coloured by that instance id; grey: none).
"""
import argparse
import json
import os
import os.path as osp
import sys

import numpy as np
from mmengine.config import DictAction
from mmengine.hooks import Hook

from influencer_core.run_files import CheckpointError, warn_other_checkout
from influencerformer3d.runner import (
    ToolError,
    add_cpu_threads_arg,
    check_checkpoint,
    check_device,
    ensure_data,
    load_config,
    make_runner,
)
from influencerformer3d.visualization import instance_ids, instance_palette, write_ply


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Test (and evaluate) an InfluencerFormer3D / OneFormer3D checkpoint.')
    p.add_argument('config', help='test config file path')
    p.add_argument('checkpoint', nargs='?', help='checkpoint file (or --checkpoint)')
    p.add_argument('--checkpoint', dest='checkpoint_opt', metavar='CHECKPOINT',
                   help='checkpoint file')
    p.add_argument('--work-dir', help='folder for the log and test_metrics.json '
                   '(default: work_dirs/<config name>)')
    p.add_argument('--show-dir', help='write per-scene predictions (.npz, .ply) here')
    p.add_argument('--score-thr', type=float, default=0.3,
                   help='instances kept in the --show-dir output (default: %(default)s)')
    p.add_argument('--data-root', help='use this data_root for every dataset of the config')
    p.add_argument('--no-data-check', action='store_true',
                   help='skip the check (and generation) of the dataset files')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config entries, key=value')
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                   help='job launcher')
    add_cpu_threads_arg(p)
    p.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = p.parse_args(argv)
    if args.checkpoint and args.checkpoint_opt and args.checkpoint != args.checkpoint_opt:
        p.error('give the checkpoint once (positional or --checkpoint)')
    args.checkpoint = args.checkpoint or args.checkpoint_opt
    if not args.checkpoint:
        p.error('a checkpoint is required: test_3d.py CONFIG CHECKPOINT')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_cfg(args):
    """The final test config (what Runner.from_cfg receives); checks checkpoint, device, data
    (the checkpoint first: a damaged one stops the tool before any data generation)."""
    if not osp.isfile(args.checkpoint) and '://' not in args.checkpoint:
        raise ToolError(f'checkpoint not found: {args.checkpoint}')
    check_checkpoint(args.checkpoint, 'the CHECKPOINT argument')
    cfg = load_config(args)
    check_device(cfg, args.launcher)
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if not args.no_data_check:
        ensure_data(cfg, ('test',), osp.basename(args.config))
    return cfg


# ---------------------------------------------------------------------------------- results
def per_class_from_results(instance_results):
    """Per-class instance APs from the instance results of ``UnifiedSegMetric``
    (``detailed_results['instance']``: ``classes`` {name: {ap, ap50%, ap25%}}, ``all_ap``...).

    Returns {class name: {'ap': float, 'ap50': float, 'ap25': float}} in the metric's class
    order with an 'Overall' entry last, or {} when there are no instance results."""
    if not instance_results or 'classes' not in instance_results:
        return {}
    out = {str(name): dict(ap=float(v['ap']), ap50=float(v['ap50%']), ap25=float(v['ap25%']))
           for name, v in instance_results['classes'].items()}
    out['Overall'] = dict(ap=float(instance_results['all_ap']),
                          ap50=float(instance_results['all_ap_50%']),
                          ap25=float(instance_results['all_ap_25%']))
    return out


def instance_per_class(evaluator):
    """Per-class instance APs (see :func:`per_class_from_results`) of the last evaluation of the
    first metric of ``evaluator`` (``runner.test_evaluator``) that keeps ``detailed_results``
    (``UnifiedSegMetric``); {} if none does."""
    for metric in getattr(evaluator, 'metrics', None) or []:
        detailed = getattr(metric, 'detailed_results', None)
        if detailed:
            return per_class_from_results(detailed.get('instance'))
    return {}


def summarize(metrics, per_class):
    """Text table: instance mAP / mAP50 / mAP25 (in %) per class and overall, then mIoU, PQ."""
    metrics = {str(k).split('/')[-1]: v for k, v in (metrics or {}).items()}

    def pct(v):
        return '   n/a' if v is None or v != v else f'{100.0 * v:6.2f}'

    rows = [f'{"class":<16}{"mAP":>8}{"mAP50":>8}{"mAP25":>8}']
    for name, v in per_class.items():
        if name.lower() != 'overall':
            rows.append(f'{name:<16}{pct(v["ap"]):>8}{pct(v["ap50"]):>8}{pct(v["ap25"]):>8}')
    overall = [metrics.get(k) for k in ('all_ap', 'all_ap_50%', 'all_ap_25%')]
    if all(v is None for v in overall) and 'Overall' in per_class:
        o = per_class['Overall']
        overall = [o['ap'], o['ap50'], o['ap25']]
    rows.append('-' * 40)
    rows.append(f'{"overall":<16}' + ''.join(f'{pct(v):>8}' for v in overall))
    extra = [f'{name} {pct(metrics[key]).strip()}' for key, name in
             (('miou', 'semantic mIoU'), ('pq', 'panoptic PQ'),
              ('duplicate_rate', 'duplicate rate'),
              ('duplicate_rate_per_query', 'duplicate rate per query')) if key in metrics]
    text = 'Instance segmentation (%), per class and overall:\n' + '\n'.join(rows)
    if extra:
        text += '\n' + ', '.join(extra)
    return text


def _to_numpy(x):
    if hasattr(x, 'detach'):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class PredictionDumpHook(Hook):
    """Writes each test scene's prediction to ``out_dir`` as .npz and an instance-coloured .ply."""

    priority = 'LOWEST'

    def __init__(self, out_dir, score_thr=0.3):
        self.out_dir = out_dir
        self.score_thr = score_thr

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        os.makedirs(self.out_dir, exist_ok=True)
        points = (data_batch or {}).get('inputs', {}).get('points', None)
        for i, sample in enumerate(outputs or []):
            pred = sample.get('pred_pts_seg', None)
            if pred is None:
                continue
            name = osp.splitext(osp.basename(str(sample.get('lidar_path', '') or
                                                 f'scene_{batch_idx}_{i}')))[0]
            inst_masks = pred.pts_instance_mask
            sem_masks = pred.pts_semantic_mask
            inst = _to_numpy(inst_masks[0] if isinstance(inst_masks, (list, tuple))
                             else inst_masks)
            scores = _to_numpy(pred.get('instance_scores', np.ones(len(inst))))
            labels = _to_numpy(pred.get('instance_labels', np.zeros(len(inst), np.int64)))
            ids = instance_ids(inst, scores, self.score_thr)
            arrays = dict(instance_id=ids, instance_labels=labels, instance_scores=scores)
            if isinstance(sem_masks, (list, tuple)):
                arrays['semantic'] = _to_numpy(sem_masks[0])
                if len(sem_masks) > 1:
                    arrays['panoptic_semantic'] = _to_numpy(sem_masks[1])
            if isinstance(inst_masks, (list, tuple)) and len(inst_masks) > 1:
                arrays['panoptic_instance'] = _to_numpy(inst_masks[1])
            xyz = None
            if points is not None and i < len(points):
                pts = _to_numpy(points[i])
                if pts.ndim == 2 and len(pts) == len(ids):
                    xyz = pts[:, :3].astype(np.float32)
                    arrays['xyz'] = xyz
            np.savez_compressed(osp.join(self.out_dir, f'{name}.npz'), **arrays)
            if xyz is not None:
                colors = instance_palette(int(ids.max()) + 1 if len(ids) else 1)
                rgb = np.where(ids[:, None] >= 0, colors[np.clip(ids, 0, None)],
                               np.uint8(128)).astype(np.uint8)
                write_ply(osp.join(self.out_dir, f'{name}.ply'), xyz, rgb)


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, 'item'):
        v = v.item()
    if isinstance(v, float) and v != v:
        return None  # NaN (a class absent from the split): null, so the file is strict JSON
    return v


def main(argv=None):
    args = parse_args(argv)
    warn_other_checkout(osp.dirname(osp.dirname(osp.abspath(__file__))))
    cfg, runner = make_runner(args, build_cfg)
    if runner is None:
        return 2
    from mmengine.dist import is_main_process
    if args.show_dir:
        runner.register_hook(PredictionDumpHook(args.show_dir, args.score_thr))
    try:
        metrics = runner.test() or {}
    except CheckpointError as exc:  # a checkpoint the structural check could not judge
        print(f'error: {exc}', file=sys.stderr)
        return 2
    if is_main_process():
        per_class = instance_per_class(runner.test_evaluator)
        print('\n' + summarize(metrics, per_class), flush=True)
        out = osp.join(cfg.work_dir, 'test_metrics.json')
        with open(out, 'w') as f:
            json.dump(dict(config=args.config, checkpoint=args.checkpoint,
                           metrics=_jsonable(metrics), instance_per_class=_jsonable(per_class)),
                      f, indent=1, allow_nan=False)
        print(f'metrics written to {out}', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
