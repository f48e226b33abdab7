"""``S3DISSegDataset_``: mmdet3d's (detection) ``S3DISDataset`` with the 13 S3DIS classes."""
import os.path as osp

from mmdet3d.datasets.s3dis_dataset import S3DISDataset

from ..registry import register_dataset
from ._checks import check_prepared

S3DIS_HOW_TO = (
    'Prepare the processed S3DIS layout (points/, instance_mask/, semantic_mask/, '
    's3dis_infos_Area_{{1..6}}.pkl) first:\n'
    '  real data (raw Stanford3dDataset_v1.2_Aligned_Version unzipped into {root}):\n'
    '    python datasets/prepare_s3dis.py --data-root {root}\n'
    '  synthetic rooms (no download):\n'
    '    python datasets/prepare_synthetic_3d.py --out {root}\n'
    '    (default output: datasets/generated/synthetic_s3dis/)\n'
    'then set data_root to that folder.')


@register_dataset()
class S3DISSegDataset_(S3DISDataset):
    """S3DIS rooms for instance + semantic segmentation (OneFormer3D's S3DIS dataset).

    Same arguments as mmdet3d's ``S3DISDataset`` (``data_root``, ``ann_file``,
    ``data_prefix``, ``pipeline``, ``box_type_3d``, ``filter_empty_gt``, ``test_mode``, ...);
    classes are the 13 S3DIS classes with semantic ids 0..12 (13 = unlabelled). Boxes of the
    info file only serve ``filter_empty_gt``; per-instance labels come from the masks
    (``PointInstClassMapping_``). If the info entries carry ``super_pts_path`` it is joined
    with ``data_prefix['sp_pts_mask']`` when that prefix is given.

    Raises DatasetNotPreparedError (a FileNotFoundError) naming the preparation command when
    ``data_root``, ``ann_file`` or the point folder is missing.
    """
    METAINFO = {
        'classes': ('ceiling', 'floor', 'wall', 'beam', 'column', 'window', 'door', 'table',
                    'chair', 'sofa', 'bookcase', 'board', 'clutter'),
        'palette': [[0, 255, 0], [0, 0, 255], [0, 255, 255], [255, 255, 0], [255, 0, 255],
                    [100, 100, 255], [200, 200, 100], [170, 120, 200], [255, 0, 0],
                    [200, 100, 100], [10, 200, 100], [200, 200, 200], [50, 50, 50]],
        'seg_valid_class_ids': tuple(range(13)),
        'seg_all_class_ids': tuple(range(14)),  # 13: unlabelled (e.g. stairs)
    }

    HOW_TO = S3DIS_HOW_TO  # the preparation hint of DatasetNotPreparedError ({root}: data_root)
    DEFAULT_ROOT = 'data/s3dis'

    def __init__(self, data_root, ann_file, *args, **kwargs):
        root = data_root or self.DEFAULT_ROOT
        check_prepared(type(self).__name__, data_root, ann_file,
                       kwargs.get('data_prefix', dict(pts='points')),
                       self.HOW_TO.format(root=root), kwargs.get('backend_args'))
        super().__init__(data_root, ann_file, *args, **kwargs)

    def parse_data_info(self, info):
        if 'super_pts_path' in info and 'sp_pts_mask' in self.data_prefix:
            info['super_pts_path'] = osp.join(self.data_prefix['sp_pts_mask'],
                                              info['super_pts_path'])
        return super().parse_data_info(info)
