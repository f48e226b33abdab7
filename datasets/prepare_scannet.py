#!/usr/bin/env python
"""Convert raw ScanNet v2 into the processed layout of OneFormer3D's ScanNet
configs (mmdet3d 1.4 ScanNet layout + superpoints).

Raw input (not shipped; see ``missing_data_message``)::

    <data-root>/scans/<scene>/<scene>_vh_clean_2.ply                 mesh (vertices = points)
    <data-root>/scans/<scene>/<scene>_vh_clean_2.0.010000.segs.json  mesh over-segmentation
    <data-root>/scans/<scene>/<scene>.aggregation.json               objects -> segments
    <data-root>/scans/<scene>/<scene>.txt                            axisAlignment
    <data-root>/scannetv2-labels.combined.tsv   (or meta_data/...)   raw label -> nyu40 id
    <data-root>/meta_data/scannetv2_{train,val,test}.txt (or at the root): split lists
    <data-root>/scans_test/<scene>/...          optional, for the test split

Output (next to the raw data by default, as OneFormer3D/mmdet3d do)::

    points/<scene>.bin          float32 (N, 6) x y z r g b, *not* axis aligned
    instance_mask/<scene>.bin   int64 (N,), objectId + 1, 0 = unannotated
    semantic_mask/<scene>.bin   int64 (N,), nyu40 ids (0 = unannotated); the
                                dataset's PointSegClassMapping maps them to 0..19
    super_points/<scene>.bin    int64 (N,), superpoint id per point (0..S-1)
    scannet_oneformer3d_infos_{train,val,test}.pkl   v2 infos with super_pts_path

OneFormer3D builds these with its own ``data/scannet/batch_load_scannet_data.py``
and ``tools/create_data.py`` (repository scripts, not part of any pip package);
this script re-implements that conversion for ScanNet (20 classes; ScanNet200
is not covered).  OneFormer3D computes superpoints with the ``segmentator``
package (ScanNet's Felzenszwalb mesh segmentation, kThresh=0.01,
segMinVerts=20) on the mesh.  ``--superpoints auto`` uses it when importable;
otherwise it reads the ``_vh_clean_2.0.010000.segs.json`` that ScanNet ships,
which is the output of the same segmentation with the same parameters
(relabelled to 0..S-1); if that file is missing it falls back to
``prepare_s3dis.graph_superpoints`` on the points (an approximation).

    python datasets/prepare_scannet.py --data-root datasets/scannet
"""
from __future__ import annotations

import argparse
import os
import sys

from influencer_data.scannet import DEFAULT_INFO_PREFIX, SPLITS, check_raw, convert

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
    p.add_argument('--force', action='store_true', help='rewrite existing bins')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    msg = check_raw(args.data_root)
    if msg is not None:
        print(msg, file=sys.stderr)
        return 2
    convert(args.data_root, args.out, args.splits, args.superpoints,
            args.info_prefix, args.force)
    return 0


if __name__ == '__main__':
    sys.exit(main())
