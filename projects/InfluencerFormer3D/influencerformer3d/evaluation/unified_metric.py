"""``UnifiedSegMetric``: semantic mIoU, instance AP and panoptic PQ in one evaluator
(OneFormer3D's metric interface)."""
import os
import os.path as osp

import numpy as np
import torch
from mmdet3d.evaluation.functional import panoptic_seg_eval, seg_eval
from mmdet3d.evaluation.metrics import SegMetric
from mmengine.logging import MMLogger, print_log

from influencer_core.metrics import duplicate_counts

from ..registry import register_metric
from .instance_seg_eval import instance_seg_eval

DEFAULT_LOGGER_KEYS = (('miou',), ('all_ap', 'all_ap_50%', 'all_ap_25%'), ('pq',))


def _one_per_query(masks, scores, queries):
    """(masks, scores) as torch tensors keeping each query's best-scored prediction only."""
    masks = np.asarray(masks, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind='stable')  # best first; ties by index
    _, first = np.unique(np.asarray(queries, dtype=np.int64).reshape(-1)[order], return_index=True)
    keep = np.sort(order[first])
    return torch.from_numpy(masks[keep]), torch.from_numpy(scores[keep])


def s3dis_panoptic_gt(semantic_mask, instance_mask, stuff_class_inds):
    """S3DIS panoptic ground truth: every stuff class becomes one segment, then the segment
    ids are renumbered 0..M-1.

    Args: semantic_mask [N]; instance_mask [N]. Returns dict(pts_semantic_mask [N],
    pts_instance_mask [N] int64)."""
    inst = np.array(instance_mask, dtype=np.int64).reshape(-1)
    for stuff_cls in stuff_class_inds:
        inst[semantic_mask == stuff_cls] = inst.max() + 1
    inst = np.unique(inst, return_inverse=True)[1].reshape(-1)
    return dict(pts_semantic_mask=semantic_mask, pts_instance_mask=inst)


def scannet_instance_gt(semantic_mask, instance_mask, thing_class_ids, num_stuff):
    """Undo the panoptic id layout of ``AddSuperPointAnnotations`` for instance evaluation.

    Instance ids ``num_stuff + k`` -> ``k`` (stuff / unlabelled -> -1); thing semantic index
    ``num_stuff + j`` -> ``thing_class_ids[j]`` and points without an instance -> -1.

    Args: semantic_mask [N] (0..C, C unlabelled); instance_mask [N];
    thing_class_ids: dataset ids of the thing classes. Returns (semantic [N], instance [N])."""
    inst = np.asarray(instance_mask).astype(np.int64) - num_stuff
    inst[inst < 0] = -1
    sem = np.asarray(semantic_mask).astype(np.int64) - num_stuff
    sem[inst == -1] = -1
    lut = np.array(list(thing_class_ids) + [-1], dtype=np.int64)
    # index -1 and any out-of-range index (unlabelled) pick the trailing -1 (void)
    sem = lut[np.clip(sem, -1, len(thing_class_ids))]
    return sem, inst


@register_metric()
class UnifiedSegMetric(SegMetric):
    """Semantic (mIoU), instance (ScanNet AP) and panoptic (PQ) evaluation.

    Classes are ordered [stuff..., thing..., unlabelled] for ScanNet; for S3DIS
    (``metric_meta['dataset_name'] == 'S3DIS'``) all 13 classes are evaluated for instances.

    Per data sample it consumes ``eval_ann_info`` (``pts_semantic_mask`` [N],
    ``pts_instance_mask`` [N]) and ``pred_pts_seg`` with ``pts_semantic_mask = [sem [N],
    pan_sem [N]]``, ``pts_instance_mask = [inst bool [n_inst, N], pan_inst [N]]``,
    ``instance_labels`` [n_inst] (indices into the evaluated instance classes) and
    ``instance_scores`` [n_inst].

    Args:
        thing_class_inds (list[int]): semantic indices of thing classes.
        stuff_class_inds (list[int]): semantic indices of stuff classes.
        min_num_points (int): smallest counted segment in panoptic evaluation.
        id_offset (int): instance-id offset of the panoptic evaluator.
        sem_mapping (list[int]): dataset id of each semantic index (submission files).
        inst_mapping (list[int]): dataset id of each instance class (submission files).
        metric_meta (dict): ``label2cat`` {index: name}, ``ignore_index`` [unlabelled index],
            ``classes`` (names incl. unlabelled), ``dataset_name`` ('S3DIS' | 'ScanNet' ...).
        logger_keys (sequence of 3 tuples): keys returned from the semantic, instance and
            panoptic results.
        submission_prefix_semantic (str, optional): write ScanNet-benchmark semantic files
            ``<prefix>/<scene>.txt`` (one ``sem_mapping`` id per point).
        submission_prefix_instance (str, optional): write ScanNet-benchmark instance files
            (``<prefix>/<scene>.txt`` + ``<prefix>/predicted_masks/``).
        duplicate_score_thr (float): predictions scored at least this count towards
            ``duplicate_rate`` (fraction of them with IoU > 0.5 to a higher-scored one:
            :func:`influencer_core.metrics.duplicate_counts`, ties included); with the
            predictions' ``instance_queries`` also ``duplicate_rate_per_query``, where a query
            reported under several classes counts once (its best-scored prediction).
        **kwargs: ``SegMetric`` arguments (``collect_device``, ``prefix``...).

    After ``compute_metrics`` the full results (per-class IoU / AP / PQ and the instance table
    text) are kept in ``self.detailed_results``.
    """

    def __init__(self, thing_class_inds, stuff_class_inds, min_num_points, id_offset,
                 sem_mapping, inst_mapping, metric_meta, logger_keys=DEFAULT_LOGGER_KEYS,
                 submission_prefix_semantic=None, submission_prefix_instance=None,
                 duplicate_score_thr=0.5, **kwargs):
        self.duplicate_score_thr = duplicate_score_thr
        self.thing_class_inds = list(thing_class_inds)
        self.stuff_class_inds = list(stuff_class_inds)
        self.min_num_points = min_num_points
        self.id_offset = id_offset
        self.sem_mapping = np.array(sem_mapping)
        self.inst_mapping = np.array(inst_mapping)
        self.metric_meta = metric_meta
        self.logger_keys = logger_keys
        self.submission_prefix_semantic = submission_prefix_semantic
        self.submission_prefix_instance = submission_prefix_instance
        self.detailed_results = None
        super().__init__(**kwargs)

    # ------------------------------------------------------------------ helpers
    def _valid_class_ids(self):
        meta = self.dataset_meta or {}
        ids = meta.get('seg_valid_class_ids')
        return tuple(ids) if ids is not None else tuple(int(i) for i in self.sem_mapping)

    def _is_s3dis(self):
        return str(self.metric_meta.get('dataset_name', '')).lower() == 's3dis'

    @staticmethod
    def _scene_name(eval_ann, index):
        if isinstance(eval_ann, dict):
            if 'lidar_idx' in eval_ann:
                return str(eval_ann['lidar_idx'])
            if isinstance(eval_ann.get('point_cloud'), dict) and \
                    'lidar_idx' in eval_ann['point_cloud']:
                return str(eval_ann['point_cloud']['lidar_idx'])
        return f'{index:06d}'

    def write_submission(self, results):
        """Write ScanNet-benchmark files for the configured submission prefixes."""
        for k, (eval_ann, pred) in enumerate(results):
            name = self._scene_name(eval_ann, k)
            if self.submission_prefix_semantic:
                os.makedirs(self.submission_prefix_semantic, exist_ok=True)
                sem = np.asarray(pred['pts_semantic_mask'][0]).astype(np.int64)
                lut = np.append(self.sem_mapping, 0)     # out-of-range class -> 0 (unannotated)
                sem = np.where((sem >= 0) & (sem < len(self.sem_mapping)), sem, -1)
                np.savetxt(osp.join(self.submission_prefix_semantic, f'{name}.txt'),
                           lut[sem], fmt='%d')
            if self.submission_prefix_instance:
                mask_dir = osp.join(self.submission_prefix_instance, 'predicted_masks')
                os.makedirs(mask_dir, exist_ok=True)
                masks = np.asarray(pred['pts_instance_mask'][0])
                labels = np.asarray(pred['instance_labels']).astype(np.int64)
                scores = np.asarray(pred['instance_scores'])
                lines = []
                for i in range(len(labels)):
                    rel = f'predicted_masks/{name}_{i:03d}.txt'
                    np.savetxt(osp.join(self.submission_prefix_instance, rel),
                               masks[i].astype(np.int64), fmt='%d')
                    lines.append(f'{rel} {self.inst_mapping[labels[i]]} {scores[i]:.4f}')
                with open(osp.join(self.submission_prefix_instance, f'{name}.txt'), 'w') as f:
                    f.write('\n'.join(lines) + ('\n' if lines else ''))

    # ------------------------------------------------------------------ main
    def compute_metrics(self, results):
        """results: list of (eval_ann_info, pred dict) -> dict of the ``logger_keys`` values."""
        logger = MMLogger.get_current_instance()
        if self.submission_prefix_semantic or self.submission_prefix_instance:
            self.write_submission(results)
        has_gt = all(isinstance(ann, dict) and 'pts_semantic_mask' in ann
                     and 'pts_instance_mask' in ann for ann, _ in results)
        if not has_gt:
            if self.submission_prefix_semantic or self.submission_prefix_instance:
                return {}
            raise ValueError(
                'UnifiedSegMetric needs eval_ann_info with pts_semantic_mask and '
                'pts_instance_mask: build the dataset with test_mode=True and load the masks '
                '(LoadAnnotations3D(_)(with_mask_3d=True, with_seg_3d=True)) in the test '
                'pipeline')

        valid_class_ids = self._valid_class_ids()
        label2cat = self.metric_meta['label2cat']
        ignore_index = self.metric_meta['ignore_index']
        classes = list(self.metric_meta['classes'])
        thing_classes = [classes[i] for i in self.thing_class_inds]
        stuff_classes = [classes[i] for i in self.stuff_class_inds]
        num_stuff = len(stuff_classes)
        s3dis = self._is_s3dis()

        gt_sem, pred_sem = [], []
        gt_pan, pred_pan = [], []
        gt_inst_sem, gt_inst, pred_masks, pred_labels, pred_scores, pred_queries = [], [], [], [], [], []
        for eval_ann, pred in results:
            sem_gt = np.asarray(eval_ann['pts_semantic_mask'])
            inst_gt = np.asarray(eval_ann['pts_instance_mask'])
            gt_sem.append(sem_gt)
            pred_sem.append(np.asarray(pred['pts_semantic_mask'][0]))
            pred_pan.append(dict(pts_semantic_mask=np.asarray(pred['pts_semantic_mask'][1]),
                                 pts_instance_mask=np.asarray(pred['pts_instance_mask'][1])))
            if s3dis:
                gt_pan.append(s3dis_panoptic_gt(sem_gt, inst_gt, self.stuff_class_inds))
                gt_inst_sem.append(sem_gt)
                gt_inst.append(inst_gt)
            else:
                gt_pan.append(dict(pts_semantic_mask=sem_gt, pts_instance_mask=inst_gt))
                s, i = scannet_instance_gt(sem_gt, inst_gt, valid_class_ids[num_stuff:],
                                           num_stuff)
                gt_inst_sem.append(s)
                gt_inst.append(i)
            pred_masks.append(np.asarray(pred['pts_instance_mask'][0]))
            pred_labels.append(np.asarray(pred['instance_labels']))
            pred_scores.append(np.asarray(pred['instance_scores']))
            pred_queries.append(np.asarray(pred['instance_queries']) if 'instance_queries' in pred else None)

        ret_pan = panoptic_seg_eval(gt_pan, pred_pan, classes, thing_classes, stuff_classes,
                                    self.min_num_points, self.id_offset, label2cat,
                                    ignore_index, logger)
        ret_sem = seg_eval(gt_sem, pred_sem, label2cat, ignore_index[0], logger=logger)
        if s3dis:   # all classes but the trailing 'unlabelled'
            inst_ids, inst_names = valid_class_ids, classes[:-1]
        else:       # thing classes only
            inst_ids, inst_names = valid_class_ids[num_stuff:], classes[num_stuff:-1]
        print_log('instance segmentation (ScanNet AP protocol):', logger=logger)
        ret_inst = instance_seg_eval(gt_inst_sem, gt_inst, pred_masks, pred_labels, pred_scores,
                                     valid_class_ids=inst_ids, class_labels=inst_names,
                                     logger=logger)
        self.detailed_results = dict(semantic=ret_sem, instance=ret_inst, panoptic=ret_pan)

        metrics = {}
        for ret, keys in zip((ret_sem, ret_inst, ret_pan), self.logger_keys):
            for key in keys:
                metrics[key] = ret[key]
        # influencer_core.metrics' rule (as the 2D evaluator); scores compared in float64
        dup = np.array([duplicate_counts(torch.from_numpy(np.asarray(m, dtype=bool)),
                                         torch.from_numpy(np.asarray(sc, dtype=np.float64).reshape(-1)),
                                         self.duplicate_score_thr)
                        for m, sc in zip(pred_masks, pred_scores)]).reshape(-1, 2)
        metrics['duplicate_rate'] = float(dup[:, 0].sum() / max(dup[:, 1].sum(), 1))
        if pred_queries and all(q is not None for q in pred_queries):
            # per query: a query reported under several classes counts once (its best-scored
            # prediction), so only copies made by different queries count - what a loss can fix
            dup = np.array([duplicate_counts(*_one_per_query(m, sc, q), self.duplicate_score_thr)
                            for m, sc, q in zip(pred_masks, pred_scores, pred_queries)]).reshape(-1, 2)
            metrics['duplicate_rate_per_query'] = float(dup[:, 0].sum() / max(dup[:, 1].sum(), 1))
        return metrics
