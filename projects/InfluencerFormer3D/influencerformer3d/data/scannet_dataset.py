"""``ScanNetSegDataset_``: mmdet3d's ``ScanNetSegDataset`` plus superpoint paths."""
import os.path as osp

import numpy as np
from mmdet3d.datasets.scannet_dataset import ScanNetSegDataset

from ..registry import register_dataset
from ._checks import check_prepared

SCANNET_HOW_TO = (
    'Prepare OneFormer3D\'s ScanNet layout (points/, instance_mask/, semantic_mask/, '
    'super_points/, scannet_oneformer3d_infos_{{train,val}}.pkl) first: put the raw ScanNet v2 '
    'scans/ and meta_data/ into {root} and run\n'
    '    python datasets/prepare_scannet.py --data-root {root}\n'
    '(see datasets/README_3d.md; for a download-free 3D dataset use the synthetic S3DIS rooms: '
    'python datasets/prepare_synthetic_3d.py)')


@register_dataset()
class ScanNetSegDataset_(ScanNetSegDataset):
    """ScanNet scenes for OneFormer3D: mmdet3d's ``ScanNetSegDataset`` (20 classes, nyu40 ids
    mapped by ``PointSegClassMapping``, ignore index 20) where

    * ``super_pts_path`` of each info entry is joined with ``data_prefix['sp_pts_mask']``;
    * every scene is used once (``scene_idxs`` = 0..len-1, also when training);
    * ``metainfo`` defaults to the 20 classes.

    Raises DatasetNotPreparedError (a FileNotFoundError) naming the preparation command when
    ``data_root``, ``ann_file`` or the point folder is missing.
    """

    def __init__(self, data_root=None, ann_file='', metainfo=None, *args, **kwargs):
        check_prepared(type(self).__name__, data_root, ann_file,
                       kwargs.get('data_prefix', dict(pts='points')),
                       SCANNET_HOW_TO.format(root=data_root or 'data/scannet'),
                       kwargs.get('backend_args'))
        metainfo = dict(metainfo) if metainfo else dict(classes=self.METAINFO['classes'])
        super().__init__(data_root, ann_file, metainfo, *args, **kwargs)

    def get_scene_idxs(self, *args, **kwargs):
        return np.arange(len(self)).astype(np.int32)

    def parse_data_info(self, info):
        if 'super_pts_path' in info:
            info['super_pts_path'] = osp.join(self.data_prefix.get('sp_pts_mask', ''),
                                              info['super_pts_path'])
        return super().parse_data_info(info)
