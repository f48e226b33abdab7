#!/usr/bin/env python
"""Segment one 3D scene with a trained InfluencerFormer3D / OneFormer3D checkpoint and draw it.

    python tools/demo_3d.py CONFIG CHECKPOINT SCENE [--out DIR] [--score-thr T]
    python tools/demo_3d.py projects/InfluencerFormer3D/configs/influencerformer_synthetic-rooms.py \\
        work_dirs/synthetic_ot/iter_300.pth datasets/generated/synthetic_s3dis/points/Area_5_office_1.bin

SCENE is a ``.ply`` (x y z, optional red green blue), a ``.npy`` / ``.txt`` array of N x 3
(x y z) or N x 6 (x y z r g b) values, or a prepared sample ``<data_root>/points/<name>.bin``
(see :mod:`influencer_data.point_cloud`).  Colours are 0..255 (float colours within 0..1 are
scaled); a scene without colours is grey.  When the model reads superpoints (ScanNet-style
configs) and the scene has none, they are computed with the data preparation's method
(``influencer_data.s3dis.compute_superpoints``, graph).

Writes, in DIR (default ``work_dirs/demo_3d``), for scene ``<name>``:

* ``<name>_instances.ply``  points coloured by instance (grey: none);
* ``<name>_semantic.ply``   points coloured by semantic class;
  both in the scene's coordinates with the fields ``instance`` (1..n, 0 none) and ``semantic``;
* ``<name>.png``            top and oblique views of both, with legends (class names from the
  config's dataset);
* ``<name>_instances.json`` per instance: id, class, score, points.

An instance needs a score above ``--score-thr``; a point covered by several takes the highest
scored.  Exit status 2 with a message for a missing / unreadable scene or checkpoint.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

import numpy as np
from mmengine.config import DictAction

from influencer_data.point_cloud import PointCloudError, read_scene
from influencer_data.ply import PlyError
from influencerformer3d.inference import build_model, class_info, needs_superpoints, predict_points
from influencerformer3d.runner import ToolError, add_cpu_threads_arg, load_config, set_cpu_threads
from influencerformer3d.visualization import (NONE_COLOR, distinct_colors, instance_ids, instance_palette,
                                              render_views, write_ply)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Segment one 3D scene and draw the result.')
    p.add_argument('config', help='config file the checkpoint was trained with')
    p.add_argument('checkpoint', help='checkpoint file (.pth)')
    p.add_argument('scene', help='.ply, .npy, .txt or a prepared <data_root>/points/<name>.bin')
    p.add_argument('--out', default=osp.join('work_dirs', 'demo_3d'),
                   help='output folder (default: %(default)s)')
    p.add_argument('--score-thr', type=float, default=0.3,
                   help='instances with a higher score are kept (default: %(default)s)')
    p.add_argument('--device', default=None, help='cuda or cpu (default: cuda when available)')
    p.add_argument('--clip-top', type=float, default=0.15,
                   help='the pictures leave out this top share of the height range, so ceilings do not '
                   'hide the room (default: %(default)s; 0 keeps everything)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config entries, key=value')
    add_cpu_threads_arg(p)
    return p.parse_args(argv)


def _config(args):
    ns = argparse.Namespace(config=args.config, data_root=None, cfg_options=args.cfg_options,
                            launcher='none', work_dir=None)
    return load_config(ns, default_work_dir=False)


def _instance_table(ids, labels, scores, names, offset):
    """Kept instances in id order (1..n): dicts with id, class, label, score, points."""
    rows = []
    counts = np.bincount(ids[ids >= 0], minlength=len(labels)) if len(labels) else []
    kept = [k for k in np.argsort(-scores, kind='stable') if counts[k] > 0]
    for new_id, k in enumerate(kept, start=1):
        label = int(labels[k])
        name = names[label + offset] if 0 <= label + offset < len(names) else f'class {label}'
        rows.append(dict(id=new_id, index=int(k), label=label, **{'class': name},
                         score=float(scores[k]), points=int(counts[k])))
    return rows


def write_outputs(out_dir, name, scene, pred, score_thr, cfg, clip_top=0.15):
    """The demo's files for one predicted scene; returns {kind: path} and the instance rows."""
    names, sem_palette, offset = class_info(cfg)
    ids = instance_ids(pred['masks'], pred['scores'], score_thr)
    rows = _instance_table(ids, pred['labels'], pred['scores'], names, offset)
    # 1..n in descending score order, 0 = none (the processed layout's instance convention)
    renumber = np.zeros(len(pred['labels']) + 1, np.int64)
    for r in rows:
        renumber[r['index'] + 1] = r['id']
    inst = renumber[ids + 1]
    sem = pred['semantic']
    n_cls = max(len(names), int(sem.max()) + 1 if len(sem) else 0)
    sem_colors = sem_palette if sem_palette is not None and len(sem_palette) >= n_cls else distinct_colors(n_cls)
    inst_colors = np.vstack([np.asarray(NONE_COLOR, np.uint8)[None], instance_palette(len(rows))])
    inst_rgb = inst_colors[inst]
    sem_rgb = sem_colors[sem]
    os.makedirs(out_dir, exist_ok=True)
    paths = {k: osp.join(out_dir, f'{name}{suffix}') for k, suffix in
             (('instances', '_instances.ply'), ('semantic', '_semantic.ply'), ('png', '.png'),
              ('json', '_instances.json'))}
    fields = dict(instance=inst.astype(np.int32), semantic=sem.astype(np.int32))
    write_ply(paths['instances'], scene.xyz, inst_rgb, **fields)
    write_ply(paths['semantic'], scene.xyz, sem_rgb, **fields)
    class_name = (lambda c: names[c] if c < len(names) else f'class {c}')
    inst_legend = [(f"{r['id']} {r['class']} {r['score']:.2f}", inst_colors[r['id']]) for r in rows]
    if (inst == 0).any():
        inst_legend.append(('no instance', inst_colors[0]))
    present = np.flatnonzero(np.bincount(sem, minlength=n_cls))
    sem_legend = [(class_name(int(c)), sem_colors[c]) for c in present]
    render_views(paths['png'], scene.xyz,
                 [(f'instances (score > {score_thr:g}): {len(rows)}', inst_rgb, inst_legend),
                  ('semantic classes', sem_rgb, sem_legend)],
                 title=f'{name}: {len(scene)} points', clip_top=clip_top)
    with open(paths['json'], 'w') as f:
        json.dump(dict(scene=name, points=len(scene), score_thr=score_thr,
                       instances=[{k: v for k, v in r.items() if k != 'index'} for r in rows]), f, indent=1)
    return paths, rows


def run(args):
    if not osp.isfile(args.checkpoint):
        raise ToolError(f'checkpoint not found: {args.checkpoint}')
    try:
        scene = read_scene(args.scene)
    except (FileNotFoundError, PointCloudError, PlyError) as exc:
        raise ToolError(str(exc)) from exc
    cfg = _config(args)
    if not scene.has_color:
        print(f'note: {args.scene} has no colours; the points are grey for the model', flush=True)
    points = scene.model_points()
    superpoints = None
    if needs_superpoints(cfg):
        superpoints = scene.superpoints
        if superpoints is None:
            from influencer_data.s3dis import compute_superpoints
            t0 = time.time()
            superpoints = compute_superpoints(points, 'graph')
            print(f'superpoints: {int(superpoints.max()) + 1} computed in {time.time() - t0:.1f} s '
                  '(graph method of the data preparation)', flush=True)
    import torch
    set_cpu_threads(args.cpu_threads)
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    model = build_model(cfg, args.checkpoint, device)
    t0 = time.time()
    pred = predict_points(model, cfg, points, superpoints)
    print(f'{scene.name}: {len(scene)} points, {len(pred["scores"])} instance candidates in '
          f'{time.time() - t0:.1f} s', flush=True)
    return write_outputs(args.out, scene.name, scene, pred, args.score_thr, cfg, args.clip_top)


def main(argv=None):
    args = parse_args(argv)
    try:
        paths, rows = run(args)
    except ToolError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    print(f'{len(rows)} instances with score > {args.score_thr:g}:')
    for r in rows:
        print(f"  {r['id']:3d}  {r['class']:<16} score {r['score']:.2f}  {r['points']} points")
    print('wrote ' + ', '.join(paths.values()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
