"""Point-cloud transforms with OneFormer3D's names and semantics (mmdet3d ``TRANSFORMS``).

Conventions shared by all of them (as in OneFormer3D):

* ``pts_instance_mask`` / ``pts_semantic_mask`` / ``sp_pts_mask``: int64 numpy arrays of
  shape [N]; ``-1`` in an instance mask means "no instance" (ignored / stuff / unlabelled);
* after a transform that compacts instance ids, the kept instances are numbered
  ``0..K-1`` in increasing order of their previous ids, and ``-1`` stays ``-1``;
* ``gt_labels_3d``: int64 [K], the semantic class of each instance.
"""
import numpy as np
from mmcv.transforms import BaseTransform
from mmdet3d.datasets.transforms import PointSample
from scipy import ndimage
from scipy.interpolate import RegularGridInterpolator

from ..registry import register_transform


def compact_instance_ids(instance_mask):
    """Renumber instance ids to ``0..K-1`` (sorted by old id); negative ids become ``-1``.

    Args: instance_mask: int array [N].
    Returns: (int64 array [N], K).
    """
    ids = np.asarray(instance_mask).astype(np.int64).reshape(-1)
    ids = np.where(ids < 0, -1, ids)
    uniq, inv = np.unique(ids, return_inverse=True)
    inv = inv.reshape(-1).astype(np.int64)
    has_ignored = len(uniq) > 0 and uniq[0] == -1
    if has_ignored:
        inv -= 1
    return inv, int(len(uniq) - int(has_ignored))


def first_point_labels(instance_mask, semantic_mask, num_instances):
    """Semantic label of the first point (lowest index) of each instance.

    Args: instance_mask [N] with ids in ``-1, 0..K-1``; semantic_mask [N]; num_instances K.
    Returns: int64 [K].
    """
    valid = instance_mask >= 0
    ids, first = np.unique(instance_mask[valid], return_index=True)
    labels = np.zeros(num_instances, dtype=np.int64)
    labels[ids] = np.asarray(semantic_mask)[valid][first]
    return labels


def _superpoint_share(point_group, superpoints, num_groups, num_superpoints):
    """Fraction of each superpoint's points that fall in each group.

    Args: point_group [N] in ``-1, 0..G-1`` (-1: none); superpoints [N] in ``0..S-1``.
    Returns: float64 [G, S] (0 for empty superpoints).
    """
    sp_size = np.bincount(superpoints, minlength=num_superpoints).astype(np.float64)
    keep = point_group >= 0
    counts = np.bincount(point_group[keep] * num_superpoints + superpoints[keep],
                         minlength=num_groups * num_superpoints)
    counts = counts.reshape(num_groups, num_superpoints)
    return counts / np.maximum(sp_size, 1.0)


@register_transform()
class ElasticTransfrom(BaseTransform):
    """Elastic distortion of voxel-scaled coordinates (name spelled as in OneFormer3D).

    Adds ``elastic_coords`` (array [N, 3]): ``xyz / voxel_size``, distorted twice by smooth
    random noise fields with probability ``p`` (otherwise undistorted). ``points`` is untouched.

    Args:
        gran (list[float]): noise-grid spacing of the two passes (voxel units).
        mag (list[float]): noise magnitude of the two passes.
        voxel_size (float): voxel size used to scale the coordinates.
        p (float): probability of applying the distortion.
    """

    def __init__(self, gran, mag, voxel_size, p=1.0):
        self.gran = gran
        self.mag = mag
        self.voxel_size = voxel_size
        self.p = p

    def transform(self, input_dict):
        coords = input_dict['points'].tensor[:, :3].numpy() / self.voxel_size
        if np.random.rand() < self.p:
            for gran, mag in zip(self.gran[:2], self.mag[:2]):
                coords = self.elastic(coords, gran, mag)
        input_dict['elastic_coords'] = coords
        return input_dict

    @staticmethod
    def elastic(x, gran, mag):
        """Displace points ``x`` [N, 3] by a smoothed Gaussian noise field sampled on a grid of
        spacing ``gran`` and scaled by ``mag``; returns [N, 3]."""
        shape = np.abs(x).max(0).astype(np.int32) // gran + 3
        fields = [np.random.randn(*shape).astype('float32') for _ in range(3)]
        smoothed = []
        for field in fields:
            # three-tap box blur along each axis, applied twice, zero outside the grid
            for _ in range(2):
                for axis in range(3):
                    field = ndimage.uniform_filter1d(field, size=3, axis=axis,
                                                     mode='constant', cval=0.0)
            smoothed.append(field)
        axes = [np.linspace(-(n - 1) * gran, (n - 1) * gran, n) for n in shape]
        offsets = np.stack([
            RegularGridInterpolator(axes, f, bounds_error=False, fill_value=0)(x)
            for f in smoothed
        ], axis=1)
        return x + offsets * mag


@register_transform()
class AddSuperPointAnnotations(BaseTransform):
    """Superpoint-level targets for ScanNet-style unified (instance + semantic) training.

    Required keys: ``pts_instance_mask``, ``pts_semantic_mask`` (0..num_classes, where
    ``num_classes`` is unlabelled), ``sp_pts_mask`` (superpoint id per point).

    Modified: ``pts_instance_mask`` [N]: instances of stuff classes and unlabelled points
    become -1, the rest are renumbered 0..K-1.
    Added:
      * ``gt_labels_3d`` int64 [K + num_stuff + 1] (merge) or [K + num_classes + 1]: the first
        K entries are the instance classes shifted by ``-len(stuff_classes)``, the rest 0;
      * ``gt_sp_masks`` [K + R, S]: rows 0..K-1 are instances (a superpoint belongs to an
        instance when more than half of its points do); the R rows that follow are semantic
        masks: all ``num_classes + 1`` classes (bool), or with ``merge_non_stuff_cls`` the stuff
        classes plus one row for every other class together (int64 0/1). Superpoints no class
        holds by majority go to the last semantic row.
      * in test mode ``eval_ann_info['pts_instance_mask']`` [N]: panoptic ids, stuff class i
        -> i, instance k -> k + num_stuff, unlabelled -1.

    Args:
        num_classes (int): number of semantic classes (without unlabelled).
        stuff_classes (list[int]): semantic ids of stuff classes.
        merge_non_stuff_cls (bool): merge all non-stuff semantic rows into one.
    """

    def __init__(self, num_classes, stuff_classes, merge_non_stuff_cls=True):
        self.num_classes = num_classes
        self.stuff_classes = stuff_classes
        self.merge_non_stuff_cls = merge_non_stuff_cls

    def transform(self, input_dict):
        num_stuff = len(self.stuff_classes)
        sem = np.asarray(input_dict['pts_semantic_mask']).astype(np.int64).reshape(-1)
        sp = np.asarray(input_dict['sp_pts_mask']).astype(np.int64).reshape(-1)
        if sem.size and (sem.min() < 0 or sem.max() > self.num_classes):
            raise ValueError(
                f'AddSuperPointAnnotations: semantic ids must lie in 0..{self.num_classes} '
                f'(num_classes = unlabelled), got {sem.min()}..{sem.max()}; '
                'put PointSegClassMapping before it')
        ignored = (sem == self.num_classes) | np.isin(sem, self.stuff_classes)
        inst = np.asarray(input_dict['pts_instance_mask']).astype(np.int64).reshape(-1)
        inst, num_inst = compact_instance_ids(np.where(ignored, -1, inst))
        input_dict['pts_instance_mask'] = inst

        num_sp = int(sp.max()) + 1 if sp.size else 0
        sp_masks_inst = _superpoint_share(inst, sp, num_inst, num_sp) > 0.5

        num_rows = num_stuff + 1 if self.merge_non_stuff_cls else self.num_classes + 1
        gt_labels = np.zeros(num_inst + num_rows, dtype=np.int64)
        gt_labels[:num_inst] = first_point_labels(inst, sem, num_inst) - num_stuff
        input_dict['gt_labels_3d'] = gt_labels

        sp_masks_seg = _superpoint_share(sem, sp, self.num_classes + 1, num_sp) > 0.5
        sp_masks_seg[-1, ~sp_masks_seg.any(0)] = True
        if self.merge_non_stuff_cls:
            sp_masks_seg = np.vstack((sp_masks_seg[:num_stuff],
                                      sp_masks_seg[num_stuff:].sum(0, keepdims=True)))
        input_dict['gt_sp_masks'] = np.vstack((sp_masks_inst, sp_masks_seg))

        if 'eval_ann_info' in input_dict:
            pan_inst = np.where(inst >= 0, inst + num_stuff, -1)
            for idx, stuff_cls in enumerate(self.stuff_classes):
                pan_inst[sem == stuff_cls] = idx
            # OneFormer3D updates the training mask in place too; keep that behaviour
            input_dict['pts_instance_mask'] = pan_inst
            input_dict['eval_ann_info']['pts_instance_mask'] = pan_inst
        return input_dict


@register_transform()
class SwapChairAndFloor(BaseTransform):
    """Swap semantic ids 2 and 3 (ScanNet200: makes the first two classes the stuff ones).

    Modified: ``pts_semantic_mask`` (and ``eval_ann_info['pts_semantic_mask']``)."""

    def transform(self, input_dict):
        sem = np.asarray(input_dict['pts_semantic_mask'])
        swapped = sem.copy()
        swapped[sem == 2] = 3
        swapped[sem == 3] = 2
        input_dict['pts_semantic_mask'] = swapped
        if 'eval_ann_info' in input_dict:
            input_dict['eval_ann_info']['pts_semantic_mask'] = swapped
        return input_dict


@register_transform()
class PointInstClassMapping_(BaseTransform):
    """One label per instance, taken from the semantic mask (S3DIS-style training).

    Points of the unlabelled class (``num_classes``) get instance -1 and semantic -1; the
    remaining instance ids are renumbered 0..K-1 and ``gt_labels_3d`` [K] (int64) holds the
    semantic class of each instance's first point.

    Args:
        num_classes (int): number of classes; semantic id ``num_classes`` is unlabelled.
        structured3d (bool): before that, merge all class-0 points into one new instance and
            all class-1 points into another (Structured3D walls / floors).
    """

    def __init__(self, num_classes, structured3d=False):
        self.num_classes = num_classes
        self.structured3d = structured3d

    def transform(self, input_dict):
        inst = np.array(input_dict['pts_instance_mask'], dtype=np.int64).reshape(-1)
        sem = np.array(input_dict['pts_semantic_mask']).reshape(-1)
        if self.structured3d:
            for cls_id in (0, 1):
                inst[sem == cls_id] = inst.max() + 1
        unlabelled = sem == self.num_classes
        inst[unlabelled] = -1
        sem[unlabelled] = -1
        inst, num_inst = compact_instance_ids(inst)
        input_dict['pts_instance_mask'] = inst
        input_dict['pts_semantic_mask'] = sem
        input_dict['gt_labels_3d'] = first_point_labels(inst, sem, num_inst)
        return input_dict


@register_transform()
class PointSample_(PointSample):
    """Random point sampling as in OneFormer3D: ``min(num_points, N)`` indices drawn *with*
    replacement (``replace`` and ``sample_range`` are not used).

    Modified: ``points``, ``pts_semantic_mask``, ``pts_instance_mask`` (ids re-compacted to
    0..K-1, -1 kept) and ``sp_pts_mask`` (re-compacted to 0..S-1), where present."""

    def _points_random_sampling(self, points, num_samples):
        """Returns (points[choices], choices [min(num_samples, N)])."""
        choices = np.random.choice(len(points), min(num_samples, len(points)))
        return points[choices], choices

    def transform(self, input_dict):
        points, choices = self._points_random_sampling(input_dict['points'], self.num_points)
        input_dict['points'] = points
        if input_dict.get('pts_instance_mask') is not None:
            inst = np.asarray(input_dict['pts_instance_mask'])[choices]
            input_dict['pts_instance_mask'] = compact_instance_ids(inst)[0]
        if input_dict.get('pts_semantic_mask') is not None:
            input_dict['pts_semantic_mask'] = np.asarray(input_dict['pts_semantic_mask'])[choices]
        if input_dict.get('sp_pts_mask') is not None:
            sp = np.asarray(input_dict['sp_pts_mask'])[choices]
            input_dict['sp_pts_mask'] = np.unique(sp, return_inverse=True)[1].reshape(-1)
        return input_dict


@register_transform()
class SkipEmptyScene(BaseTransform):
    """Training only: when a scene ends up with no instance, return the last non-empty one
    seen by this transform instead (its points, masks and labels)."""

    KEYS = ('pts_instance_mask', 'pts_semantic_mask', 'gt_labels_3d', 'points')

    def transform(self, input_dict):
        if len(input_dict['gt_labels_3d']) != 0:
            self._last = {k: input_dict[k] for k in self.KEYS}
        elif getattr(self, '_last', None) is not None:
            input_dict.update(self._last)
        return input_dict
