#!/usr/bin/env python
"""Convert raw S3DIS into the processed layout that mmdet3d 1.4 (and
OneFormer3D's S3DIS configs) read (the code, with the S3DIS format helpers shared with
the synthetic rooms: ``influencer_data.s3dis``).

Command line of :mod:`influencer_data.s3dis` (the output layout and the method are described there).

    python datasets/prepare_s3dis.py --data-root datasets/s3dis
    python datasets/prepare_s3dis.py --data-root datasets/s3dis --areas 5 --superpoints
"""
from __future__ import annotations

import argparse
import os
import sys

from influencer_data.s3dis import RAW_DIRNAME, S3DIS_AREAS, AnnotationFormatError, check_raw, convert

# <repo>/datasets/s3dis whatever the working directory (put or link the raw data there)
DEFAULT_DATA_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 's3dis')


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data-root', default=DEFAULT_DATA_ROOT,
                   help=f'folder containing {RAW_DIRNAME}/ (default: %(default)s)')
    p.add_argument('--out', default=None,
                   help='output folder (default: the data root, like mmdet3d)')
    p.add_argument('--areas', type=int, nargs='+', default=list(S3DIS_AREAS),
                   choices=list(S3DIS_AREAS))
    p.add_argument('--superpoints', action='store_true',
                   help='also write super_points/*.bin (fallback segmentation)')
    p.add_argument('--superpoint-method', default='graph', choices=('graph', 'voxel'))
    p.add_argument('--force', action='store_true',
                   help='re-convert every room (by default rooms converted earlier are reused unless '
                   'their raw annotation files changed since)')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    msg = check_raw(args.data_root, args.areas)
    if msg is not None:
        print(msg, file=sys.stderr)
        return 2
    try:
        convert(args.data_root, args.out, args.areas, superpoints=args.superpoints,
                superpoint_method=args.superpoint_method, force=args.force)
    except AnnotationFormatError as exc:   # names the file and line; a traceback adds nothing
        print(f'error: {exc}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
