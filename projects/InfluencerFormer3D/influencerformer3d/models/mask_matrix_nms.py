"""Matrix NMS on flat (per point / voxel / superpoint) masks, as OneFormer3D's copy of mmdet's."""
from mmdet.models.layers.matrix_nms import mask_matrix_nms as _mmdet_mask_matrix_nms

__all__ = ['mask_matrix_nms']


def mask_matrix_nms(masks, labels, scores, filter_thr=-1, nms_pre=-1, max_num=-1,
                    kernel='gaussian', sigma=2.0, mask_area=None):
    """Matrix NMS on flat (soft) masks: mmdet's ``mask_matrix_nms`` with masks [n, m] in place
    of [n, h, w] (what OneFormer3D's copy changes).

    Args:
        masks: [n, m] mask probabilities (or binary masks); labels: [n]; scores: [n].
        filter_thr, nms_pre, max_num, kernel ('linear' | 'gaussian'), sigma, mask_area: as mmdet.

    Returns:
        (scores [k], labels [k], masks [k, m], keep_inds [k]), sorted by decayed score. A mask's
        score is decayed by its soft IoU with higher-scored masks of the same label.
    """
    if masks.dim() != 2:
        raise ValueError(f'masks must be [n, m], got shape {tuple(masks.shape)}')
    if mask_area is None:
        mask_area = masks.sum(1).float()
    out_scores, out_labels, out_masks, keep = _mmdet_mask_matrix_nms(
        masks[..., None], labels, scores, filter_thr=filter_thr, nms_pre=nms_pre,
        max_num=max_num, kernel=kernel, sigma=sigma, mask_area=mask_area)
    return out_scores, out_labels, out_masks[..., 0], keep
