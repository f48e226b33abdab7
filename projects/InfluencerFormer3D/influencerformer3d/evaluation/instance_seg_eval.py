"""ScanNet-protocol instance AP for (possibly overlapping) boolean instance masks.

mmdet3d 1.4's ``mmdet3d.evaluation.functional.instance_seg_eval`` cannot be used as-is for
OneFormer3D-style predictions and S3DIS labels:

1. it expects predictions as one integer id per point ([N]); OneFormer3D predicts a boolean
   mask per instance ([n_inst, N], masks may overlap);
2. it calls ``.clone()`` on the ground-truth masks, which the evaluator receives as numpy
   arrays (``eval_ann_info``), so it fails before evaluating anything;
3. it encodes a ground-truth instance as ``1000 * class_id + instance`` and the ScanNet
   matcher then drops every ground-truth instance with an encoded id below 1000, i.e. all
   instances of class id 0 -- S3DIS's ``ceiling`` -- while predictions of that class are still
   counted.

OneFormer3D ships a patched copy of the evaluator for this. Here the mmdet3d ScanNet matcher
(``scannet_eval``) is reused unchanged; only its inputs are built differently: the class of a
ground-truth instance is encoded as ``1000 * (class_index + 1) + k`` with ``k`` a per-scene
dense instance index (so every encoded id is >= 1000), unlabelled / ignored points get 0
(void), and each predicted mask is handed over as its own boolean mask.
"""
import numpy as np
import torch
from mmdet3d.evaluation.functional import scannet_eval
from mmengine.logging import print_log
from terminaltables import AsciiTable

MAX_INSTANCES_PER_SCENE = 999


def _np(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def class_positions(semantic_mask, valid_class_ids):
    """Position of each point's semantic id in ``valid_class_ids`` (-1 if absent).

    Args: semantic_mask int [N]; valid_class_ids sequence of C ids. Returns int64 [N]."""
    valid = np.asarray(valid_class_ids, dtype=np.int64)
    order = np.argsort(valid, kind='stable')
    sorted_ids = valid[order]
    sem = np.asarray(semantic_mask).astype(np.int64).reshape(-1)
    at = np.clip(np.searchsorted(sorted_ids, sem), 0, len(sorted_ids) - 1)
    found = sorted_ids[at] == sem
    return np.where(found, order[at], -1).astype(np.int64)


def encode_gt(semantic_mask, instance_mask, valid_class_ids):
    """Ground truth of one scene -> ScanNet evaluator ids.

    Points with a semantic id in ``valid_class_ids`` and an instance id >= 0 get
    ``1000 * (class_index + 1) + k`` (k: dense instance index, sorted by instance id); other
    points get 0 (void).

    Args: semantic_mask [N] (ids as in valid_class_ids); instance_mask [N].
    Returns: int64 [N].
    """
    cls = class_positions(_np(semantic_mask), valid_class_ids)
    inst = _np(instance_mask).astype(np.int64).reshape(-1)
    if cls.shape != inst.shape:
        raise ValueError(f'semantic mask {cls.shape} and instance mask {inst.shape} differ')
    keep = (cls >= 0) & (inst >= 0)
    ids, dense = np.unique(inst[keep], return_inverse=True)
    if len(ids) > MAX_INSTANCES_PER_SCENE:
        raise ValueError(f'{len(ids)} ground-truth instances in one scene; the ScanNet '
                         f'evaluator supports at most {MAX_INSTANCES_PER_SCENE}')
    pair = np.unique(np.stack([dense.reshape(-1), cls[keep]]), axis=1)
    if pair.shape[1] != len(ids):
        multi = np.bincount(pair[0], minlength=len(ids)) > 1
        raise ValueError(f'ground-truth instance ids {ids[multi].tolist()} have points of '
                         'several semantic classes')
    out = np.zeros(inst.shape, dtype=np.int64)
    out[keep] = 1000 * (cls[keep] + 1) + dense.reshape(-1)
    return out


def encode_predictions(masks, labels, scores, scene):
    """Predictions of one scene -> ScanNet evaluator dict ``{name: {mask, label_id, conf}}``.

    Args: masks bool [n_inst, N] (or int ids [N], -1/negatives = none); labels [n_inst] class
    indices into valid_class_ids; scores [n_inst]; scene: scene index (for the names).
    """
    masks, labels, scores = _np(masks), _np(labels).reshape(-1), _np(scores).reshape(-1)
    if masks.ndim == 1:    # mmdet3d style: one instance id per point
        masks = masks[None, :] == np.arange(len(labels))[:, None]
    if not (len(masks) == len(labels) == len(scores)):
        raise ValueError(f'{len(masks)} masks, {len(labels)} labels and {len(scores)} scores')
    return {f'{scene}_{i}': dict(mask=masks[i], label_id=int(labels[i]) + 1,
                                 conf=float(scores[i]))
            for i in range(len(labels))}


def format_ap_table(metrics, class_labels):
    """Per-class AP table (AP@25, AP@50, AP) with an overall footer, as text."""
    rows = [['classes', 'AP_0.25', 'AP_0.50', 'AP']]
    for name in class_labels:
        d = metrics['classes'][name]
        rows.append([name] + [f'{d[k]:.4f}' for k in ('ap25%', 'ap50%', 'ap')])
    rows.append(['Overall'] + [f'{metrics[k]:.4f}'
                               for k in ('all_ap_25%', 'all_ap_50%', 'all_ap')])
    table = AsciiTable(rows)
    table.inner_footing_row_border = True
    return table.table


def instance_seg_eval(gt_semantic_masks, gt_instance_masks, pred_instance_masks,
                      pred_instance_labels, pred_instance_scores, valid_class_ids,
                      class_labels, options=None, logger=None):
    """Instance segmentation AP in the ScanNet protocol (same signature as mmdet3d's).

    Args:
        gt_semantic_masks (list[array [N]]): semantic ids (as in ``valid_class_ids``; others,
            e.g. unlabelled or -1, are void).
        gt_instance_masks (list[array [N]]): instance ids (negative = none).
        pred_instance_masks (list[array [n_inst, N] bool]): one mask per predicted instance
            (an int array [N] of instance ids is accepted too).
        pred_instance_labels (list[array [n_inst]]): class indices into ``valid_class_ids``.
        pred_instance_scores (list[array [n_inst]]): confidences.
        valid_class_ids (sequence[int]): evaluated class ids.
        class_labels (sequence[str]): their names.
        options (dict, optional): ScanNet evaluator options (``overlaps``,
            ``min_region_sizes`` (default [100]), ``distance_threshes``, ``distance_confs``).
        logger: where the per-class table goes (``print_log``).

    Returns:
        dict: ``all_ap``, ``all_ap_50%``, ``all_ap_25%``, ``classes`` {name: {ap, ap50%,
        ap25%}} and ``table`` (the logged text).
    """
    if len(valid_class_ids) != len(class_labels):
        raise ValueError(f'{len(valid_class_ids)} class ids but {len(class_labels)} names')
    n = len(gt_semantic_masks)
    if not (len(gt_instance_masks) == len(pred_instance_masks) == len(pred_instance_labels)
            == len(pred_instance_scores) == n):
        raise ValueError('instance_seg_eval: all input lists need one entry per scene')
    gts = [encode_gt(s, i, valid_class_ids)
           for s, i in zip(gt_semantic_masks, gt_instance_masks)]
    preds = [encode_predictions(m, lab, sc, k) for k, (m, lab, sc) in enumerate(
        zip(pred_instance_masks, pred_instance_labels, pred_instance_scores))]
    for k, (g, p) in enumerate(zip(gts, preds)):
        n_pred = len(next(iter(p.values()))['mask']) if p else len(g)
        if n_pred != len(g):
            raise ValueError(f'scene {k}: predicted masks have {n_pred} points, '
                             f'ground truth {len(g)}')
    codes = tuple(range(1, len(class_labels) + 1))
    id_to_label = {c: name for c, name in zip(codes, class_labels)}
    metrics = scannet_eval(preds=preds, gts=gts, options=options, valid_class_ids=codes,
                           class_labels=list(class_labels), id_to_label=id_to_label)
    metrics = {k: (float(v) if k != 'classes' else v) for k, v in metrics.items()}
    metrics['table'] = format_ap_table(metrics, class_labels)
    print_log('\n' + metrics['table'], logger=logger)
    return metrics
