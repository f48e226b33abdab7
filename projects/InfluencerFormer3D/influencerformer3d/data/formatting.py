"""``Pack3DDetInputs_``: mmdet3d's packer extended with OneFormer3D's extra keys."""
import numpy as np
from mmdet3d.datasets.transforms import Pack3DDetInputs
from mmdet3d.datasets.transforms.formating import to_tensor
from mmdet3d.structures import BaseInstance3DBoxes, Det3DDataSample, PointData
from mmdet3d.structures.points import BasePoints

from ..registry import register_transform
from ..structures import LooseInstanceData


@register_transform()
class Pack3DDetInputs_(Pack3DDetInputs):
    """Pack a pipeline result into ``dict(inputs=..., data_samples=Det3DDataSample)``.

    Compared with mmdet3d's packer it also places

    * ``elastic_coords`` [N, 3] in ``inputs`` (next to ``points`` [N, C]);
    * ``sp_pts_mask`` [N] in ``gt_pts_seg`` (with ``pts_semantic_mask``, ``pts_instance_mask``);
    * ``gt_sp_masks`` [R, S] in ``gt_instances_3d.sp_masks`` (with ``labels_3d``),

    and uses :class:`~influencerformer3d.structures.LooseInstanceData` (OneFormer3D's
    ``InstanceData_``) for the instance fields. Arrays become tensors (float64 ->
    float32). ``eval_ann_info`` (test mode) is attached unchanged, ``None`` otherwise.
    """
    INPUTS_KEYS = ['points', 'img', 'elastic_coords']
    SEG_KEYS = ['gt_seg_map', 'pts_instance_mask', 'pts_semantic_mask', 'gt_semantic_seg',
                'sp_pts_mask']
    INSTANCEDATA_3D_KEYS = ['gt_bboxes_3d', 'gt_labels_3d', 'attr_labels', 'depths',
                            'centers_2d', 'gt_sp_masks']
    TENSOR_KEYS = ('proposals', 'gt_bboxes', 'gt_bboxes_ignore', 'gt_labels', 'gt_bboxes_labels',
                   'attr_labels', 'pts_instance_mask', 'pts_semantic_mask', 'sp_pts_mask',
                   'gt_sp_masks', 'elastic_coords', 'centers_2d', 'depths', 'gt_labels_3d')

    @staticmethod
    def _image_tensor(img):
        """HWC image (or list of them) -> CHW tensor (or NCHW)."""
        if isinstance(img, list):
            arr = np.stack(img, axis=0)
            return to_tensor(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).contiguous()
        if img.ndim < 3:
            img = img[..., None]
        return to_tensor(np.ascontiguousarray(img)).permute(2, 0, 1).contiguous()

    def pack_single_results(self, results):
        if isinstance(results.get('points'), BasePoints):
            results['points'] = results['points'].tensor
        if 'img' in results:
            results['img'] = self._image_tensor(results['img'])
        for key in self.TENSOR_KEYS:
            if key in results:
                value = results[key]
                results[key] = ([to_tensor(v) for v in value] if isinstance(value, list)
                                else to_tensor(value))
        if 'gt_bboxes_3d' in results and not isinstance(results['gt_bboxes_3d'],
                                                        BaseInstance3DBoxes):
            results['gt_bboxes_3d'] = to_tensor(results['gt_bboxes_3d'])
        if 'gt_semantic_seg' in results:
            results['gt_semantic_seg'] = to_tensor(results['gt_semantic_seg'][None])
        if 'gt_seg_map' in results:
            results['gt_seg_map'] = results['gt_seg_map'][None, ...]

        data_sample = Det3DDataSample()
        data_sample.set_metainfo({k: results[k] for k in self.meta_keys if k in results})
        gt_instances_3d, gt_instances, gt_pts_seg = LooseInstanceData(), LooseInstanceData(), PointData()
        inputs = {}
        for key in self.keys:
            if key not in results:
                continue
            value = results[key]
            if key in self.INPUTS_KEYS:
                inputs[key] = value
            elif key in self.INSTANCEDATA_3D_KEYS:
                gt_instances_3d[self._remove_prefix(key)] = value
            elif key in self.INSTANCEDATA_2D_KEYS:
                name = 'labels' if key == 'gt_bboxes_labels' else self._remove_prefix(key)
                gt_instances[name] = value
            elif key in self.SEG_KEYS:
                gt_pts_seg[self._remove_prefix(key)] = value
            else:
                raise NotImplementedError(
                    f'Pack3DDetInputs_ does not know where to put {key!r}; known keys: '
                    f'{self.INPUTS_KEYS + self.INSTANCEDATA_3D_KEYS + self.SEG_KEYS}')
        data_sample.gt_instances_3d = gt_instances_3d
        data_sample.gt_instances = gt_instances
        data_sample.gt_pts_seg = gt_pts_seg
        data_sample.eval_ann_info = results.get('eval_ann_info')
        return dict(data_samples=data_sample, inputs=inputs)
