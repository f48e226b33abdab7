#!/usr/bin/env python
"""Convert raw ScanNet v2 into the processed layout of OneFormer3D's ScanNet
configs (mmdet3d 1.4 ScanNet layout + superpoints).

Command line of :mod:`influencer_data.scannet` (the output layout and the method are described there).

    python datasets/prepare_scannet.py --data-root datasets/scannet
"""
from __future__ import annotations

import argparse
import os
import sys

from influencer_data.scannet import DEFAULT_INFO_PREFIX, SPLITS, check_raw, convert
from influencer_data.sources import RawDataError

DEFAULT_DATA_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'scannet')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--data-root', default=DEFAULT_DATA_ROOT,
                   help='folder with scans/, the label map and split lists (default: %(default)s)')
    p.add_argument('--out', default=None, help='output folder (default: the data root)')
    p.add_argument('--splits', nargs='+', default=list(SPLITS), choices=list(SPLITS))
    p.add_argument('--superpoints', default='auto',
                   choices=('auto', 'segmentator', 'segs_json', 'graph'))
    p.add_argument('--info-prefix', default=DEFAULT_INFO_PREFIX)
    p.add_argument('--force', action='store_true',
                   help='re-convert every scene (by default scenes converted earlier are reused unless '
                   'their raw files changed since)')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    msg = check_raw(args.data_root)
    if msg is not None:
        print(msg, file=sys.stderr)
        return 2
    try:
        convert(args.data_root, args.out, args.splits, args.superpoints,
                args.info_prefix, args.force)
    except RawDataError as exc:   # a malformed raw file, named in the message
        print(f'error: {exc}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
