#!/usr/bin/env python
"""Synthetic indoor rooms written in the processed S3DIS layout of mmdet3d 1.4.

Command line of :mod:`influencer_data.synthetic_3d` (the output layout and the method are described there).

    python datasets/prepare_synthetic_3d.py                       # default output
    python datasets/prepare_synthetic_3d.py --rooms-per-area 2 --points 8000 --out /tmp/s3
"""
from __future__ import annotations

import argparse
import os
import sys

from influencer_data.cli import at_least
from influencer_data.s3dis import S3DIS_AREAS
from influencer_data.synthetic_3d import generate

# <repo>/datasets/generated/synthetic_s3dis whatever the working directory (git-ignored)
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'generated',
                           'synthetic_s3dis')


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Synthetic rooms in the processed S3DIS layout of mmdet3d 1.4.')
    p.add_argument('--out', default=DEFAULT_OUT, help='output data_root (default: %(default)s)')
    p.add_argument('--rooms-per-area', type=at_least(1), default=6)
    p.add_argument('--areas', type=int, nargs='+', default=list(S3DIS_AREAS), choices=list(S3DIS_AREAS),
                   help='S3DIS areas to fill (the configs read these names)')
    p.add_argument('--points', type=at_least(1), default=12000,
                   help='mean points per room (each room draws 0.8x-1.2x of it)')
    p.add_argument('--max-objects', type=at_least(0), default=15)
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
