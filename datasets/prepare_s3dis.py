#!/usr/bin/env python
"""Convert raw S3DIS into the processed layout that mmdet3d 1.4 (and
OneFormer3D's S3DIS configs) read (the code, with the S3DIS format helpers shared with
the synthetic rooms: ``influencer_data.s3dis``).

Raw input (not shipped; see ``missing_data_message``)::

    <data-root>/Stanford3dDataset_v1.2_Aligned_Version/Area_{1..6}/<room>/Annotations/<class>_<k>.txt

Every annotation txt holds ``x y z r g b`` rows for one object; the object's
class is the file-name prefix (``chair_3.txt`` -> chair).  Output, written next
to the raw folder by default (that is what mmdet3d does)::

    <out>/points/Area_1_office_1.bin          float32 (N, 6): x y z r g b (rgb 0..255)
    <out>/instance_mask/Area_1_office_1.bin   int64 (N,): one id per object file, 1..K
    <out>/semantic_mask/Area_1_office_1.bin   int64 (N,): 0..12, see S3DIS_CLASSES
    <out>/seg_info/Area_{i}_resampled_scene_idxs.npy, Area_{i}_label_weight.npy
    <out>/s3dis_infos_Area_{i}.pkl            mmdet3d "v2" infos (metainfo + data_list)
    <out>/super_points/Area_1_office_1.bin    int64 (N,), only with --superpoints

mmdet3d does this with ``data/s3dis/collect_indoor3d_data.py`` followed by
``tools/create_data.py s3dis``; both live in the mmdetection3d *repository*
only (the pip package has no ``tools``), so this script re-implements the small
conversion.  Differences from the reference scripts: annotation files are read
in sorted order (mmdet3d uses ``glob`` order, so instance ids may be permuted),
and the stray byte in ``Area_5/hallway_6/Annotations/ceiling_1.txt`` is handled
while parsing instead of by rewriting the raw file in place.

OneFormer3D's S3DIS model does not use superpoints (its voxels play that role),
so none are written by default.  ``--superpoints`` adds ``super_points/*.bin``
and a ``super_pts_path`` key per info entry (ignored by mmdet3d's datasets),
computed by ``influencer_data.s3dis.graph_superpoints``, a label-free fallback.

Usage::

    python datasets/prepare_s3dis.py --data-root datasets/s3dis
    python datasets/prepare_s3dis.py --data-root datasets/s3dis --areas 5 --superpoints
"""
from __future__ import annotations

import argparse
import os
import sys

from influencer_data.s3dis import RAW_DIRNAME, S3DIS_AREAS, check_raw, convert

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
    p.add_argument('--force', action='store_true', help='re-convert existing rooms')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    msg = check_raw(args.data_root, args.areas)
    if msg is not None:
        print(msg, file=sys.stderr)
        return 2
    convert(args.data_root, args.out, args.areas, superpoints=args.superpoints,
            superpoint_method=args.superpoint_method, force=args.force)
    return 0


if __name__ == '__main__':
    sys.exit(main())
