#!/usr/bin/env python
"""Convert your own labelled point clouds into the processed S3DIS layout the 3D configs train on.

Command line of :mod:`influencer_data.own_3d` (input fields, rules and output are described there
and in datasets/README_3d.md, "Your own data").

    python datasets/prepare_own_3d.py --input my_scans --out data/own --classes floor wall chair table \\
        --stuff floor wall --write-config work_dirs/own/config.py
    python tools/train_3d.py work_dirs/own/config.py
"""
from __future__ import annotations

import argparse
import os
import sys

from influencer_data.own_3d import DEFAULT_DATA_ROOT, OwnDataError, config_block, convert, write_config
from influencer_data.ply import PlyError
from influencer_data.point_cloud import PointCloudError

TEMPLATE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'projects',
                        'InfluencerFormer3D', 'configs', 'influencerformer_own-data.py')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--input', required=True,
                   help='folder of <scene>.ply files and/or <scene>/ folders of <class>_<n>.txt files')
    p.add_argument('--out', default=DEFAULT_DATA_ROOT, help='output data_root (default: %(default)s)')
    names = p.add_mutually_exclusive_group()
    names.add_argument('--classes', nargs='+', metavar='NAME',
                       help='class names in semantic-id order (id 0 first); required for .ply input')
    names.add_argument('--classes-file', help='the class names, one per line, in id order')
    p.add_argument('--stuff', nargs='+', default=None, metavar='NAME',
                   help='stuff classes (floor, wall, ...) for the config block (default: the first class)')
    split = p.add_mutually_exclusive_group()
    split.add_argument('--val-fraction', type=float, default=0.2,
                       help='share of scenes for validation, drawn with --seed (default: %(default)s)')
    split.add_argument('--val-scenes', nargs='+', metavar='SCENE', help='these scenes validate')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--no-superpoints', action='store_true',
                   help='skip super_points/*.bin (the S3DIS-style configs do not read them)')
    p.add_argument('--write-config', metavar='PATH',
                   help='also write a copy of configs/influencerformer_own-data.py for this data here')
    p.add_argument('--force', action='store_true', help='replace data converted before in --out')
    return p.parse_args(argv)


def _class_names(args):
    if args.classes_file:
        with open(args.classes_file) as f:
            return [ln.strip() for ln in f if ln.strip() and not ln.startswith('#')]
    return args.classes


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        names = _class_names(args)
        if names and args.stuff:  # a wrong --stuff fails before the conversion, not after it
            config_block(names, args.stuff)
        res = convert(args.input, args.out, names, val_fraction=args.val_fraction,
                      val_scenes=args.val_scenes, seed=args.seed, superpoints=not args.no_superpoints,
                      force=args.force)
        stuff = args.stuff if args.stuff is not None else res['classes'][:1]
        block = config_block(res['classes'], stuff, args.out)
        if args.write_config:
            write_config(TEMPLATE, args.write_config, res['classes'], stuff, args.out)
    except (OwnDataError, PlyError, PointCloudError, FileNotFoundError, FileExistsError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    if args.stuff is None:
        print(f'stuff classes: {stuff[0]} (the first class; name others with --stuff)')
    if args.write_config:
        print(f'config written to {args.write_config}; train with:\n'
              f'  python tools/train_3d.py {args.write_config}')
    else:
        print('set these lines in projects/InfluencerFormer3D/configs/influencerformer_own-data.py '
              '(between "# >>> own data" and "# <<< own data"):\n' + block)
    return 0


if __name__ == '__main__':
    sys.exit(main())
