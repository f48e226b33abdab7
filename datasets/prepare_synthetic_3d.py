#!/usr/bin/env python
"""Synthetic indoor rooms written in the processed S3DIS layout of mmdet3d 1.4.

The output can stand in for real S3DIS anywhere a config reads
``data_root``/``s3dis_infos_Area_{i}.pkl`` (mmdet3d's ``S3DISDataset`` /
``S3DISSegDataset``, OneFormer3D's ``S3DISSegDataset_``)::

    <out>/points/Area_{a}_{room}.bin          float32 (N, 6): x y z r g b (rgb 0..255)
    <out>/instance_mask/Area_{a}_{room}.bin   int64 (N,): instance ids 1..K (every point)
    <out>/semantic_mask/Area_{a}_{room}.bin   int64 (N,): S3DIS class ids 0..12
    <out>/super_points/Area_{a}_{room}.bin    int64 (N,): label-free superpoints (extra)
    <out>/seg_info/Area_{a}_*.npy             scene resampling / class weights
    <out>/s3dis_infos_Area_{a}.pkl            mmdet3d v2 infos
    <out>/synthetic_s3dis.json                generator parameters (idempotency)

A room is a floor, usually a ceiling, 2-4 walls and 0 to ``max_objects``
objects: tables (top + legs), chairs, sofas and bookcases against walls,
boards, doors and windows as patches on walls (the wall behind them is cut
out), columns, ceiling beams and clutter (boxes and blobs on the floor or on
tables).  Each object is one instance; only surfaces are sampled.  Colours are
per class with per-instance and per-point noise; positions get Gaussian jitter;
furniture and (by default) the whole room are rotated about z; finally the room
is shifted so its minimum corner is the origin, like the real converter does.

Generation is deterministic given ``seed``: room ``r`` of area ``a`` depends
only on (seed, a, r, points), not on how many rooms are generated.

    python datasets/prepare_synthetic_3d.py                       # default output
    python datasets/prepare_synthetic_3d.py --rooms-per-area 2 --points 8000 --out /tmp/s3
"""
from __future__ import annotations

import argparse
import os
import sys

from influencer_data.synthetic_3d import generate

# <repo>/datasets/generated/synthetic_s3dis whatever the working directory (git-ignored)
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'generated',
                           'synthetic_s3dis')


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Synthetic rooms in the processed S3DIS layout of mmdet3d 1.4.')
    p.add_argument('--out', default=DEFAULT_OUT, help='output data_root (default: %(default)s)')
    p.add_argument('--rooms-per-area', type=int, default=6)
    p.add_argument('--areas', type=int, nargs='+', default=[1, 2, 3, 4, 5, 6])
    p.add_argument('--points', type=int, default=12000,
                   help='mean points per room (each room draws 0.8x-1.2x of it)')
    p.add_argument('--max-objects', type=int, default=15)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--no-superpoints', action='store_true',
                   help='skip super_points/*.bin (S3DIS pipelines do not read them)')
    p.add_argument('--no-rotate', action='store_true',
                   help='keep rooms axis aligned (like real, aligned S3DIS)')
    p.add_argument('--force', action='store_true', help='overwrite existing output')
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    try:
        generate(a.out, a.rooms_per_area, a.areas, a.seed, a.points, a.max_objects,
                 superpoints=not a.no_superpoints, rotate=not a.no_rotate,
                 force=a.force, verbose=True)
    except FileExistsError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
