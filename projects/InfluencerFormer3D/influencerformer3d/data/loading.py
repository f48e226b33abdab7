"""Loading transforms with OneFormer3D's names: superpoint loading and colour normalisation."""
import os.path as osp

import numpy as np
from mmdet3d.datasets.transforms import LoadAnnotations3D
from mmdet3d.datasets.transforms.loading import NormalizePointsColor
from mmengine.fileio import get

from ..registry import register_transform


@register_transform()
class LoadAnnotations3D_(LoadAnnotations3D):
    """mmdet3d's ``LoadAnnotations3D`` that can also load superpoints.

    With ``with_sp_mask_3d`` it reads ``results['super_pts_path']`` (int64 per point) into
    ``sp_pts_mask`` [N]; in test mode it also sets ``eval_ann_info['sp_pts_mask']`` and
    ``eval_ann_info['lidar_idx']`` (the file name without its extension).

    Args:
        with_sp_mask_3d (bool): load superpoints.
        **kwargs: ``LoadAnnotations3D`` arguments.
    """

    def __init__(self, with_sp_mask_3d, **kwargs):
        self.with_sp_mask_3d = with_sp_mask_3d
        super().__init__(**kwargs)

    def _load_sp_pts_3d(self, results):
        path = results.get('super_pts_path')
        if path is None:
            raise KeyError(
                "LoadAnnotations3D_(with_sp_mask_3d=True) needs 'super_pts_path' in the data "
                "info. Use ScanNetSegDataset_ with data_prefix['sp_pts_mask'] on info files "
                'written by `python datasets/prepare_scannet.py --data-root <root>` (S3DIS: '
                '`python datasets/prepare_s3dis.py --superpoints` or the synthetic rooms), or '
                'set with_sp_mask_3d=False.')
        try:
            sp_pts_mask = np.frombuffer(
                get(path, backend_args=self.backend_args), dtype=np.int64).copy()
        except ConnectionError:
            sp_pts_mask = np.fromfile(path, dtype=np.int64)
        results['sp_pts_mask'] = sp_pts_mask
        if 'eval_ann_info' in results:
            results['eval_ann_info']['sp_pts_mask'] = sp_pts_mask
            results['eval_ann_info']['lidar_idx'] = osp.splitext(osp.basename(path))[0]
        return results

    def transform(self, results):
        results = super().transform(results)
        if self.with_sp_mask_3d:
            results = self._load_sp_pts_3d(results)
        return results

    def __repr__(self):
        return super().__repr__()[:-1] + f', with_sp_mask_3d={self.with_sp_mask_3d})'


@register_transform()
class NormalizePointsColor_(NormalizePointsColor):
    """Colour normalisation ``(color - color_mean) / color_std`` (either step skipped if None).

    Args:
        color_mean (list[float] | None): per-channel mean, e.g. [127.5] * 3.
        color_std (float | list[float] | None): divisor (default 127.5, giving colours in
            [-1, 1] for 0..255 input).
    """

    def __init__(self, color_mean, color_std=127.5):
        self.color_mean = color_mean
        self.color_std = color_std

    def transform(self, input_dict):
        points = input_dict['points']
        if points.attribute_dims is None or 'color' not in points.attribute_dims:
            raise ValueError('NormalizePointsColor_ needs points with a colour attribute: '
                             'load them with LoadPointsFromFile(use_color=True, ...)')
        color = points.color
        if self.color_mean is not None:
            color = color - color.new_tensor(self.color_mean)
        if self.color_std is not None:
            color = color / color.new_tensor(self.color_std)
        points.color = color
        input_dict['points'] = points
        return input_dict

    def __repr__(self):
        return (f'{self.__class__.__name__}(color_mean={self.color_mean}, '
                f'color_std={self.color_std})')
