"""Unified (instance + semantic) criteria of OneFormer3D: split the ground truth (and, for
S3DIS, the queries) into an instance and a semantic part and call one criterion on each.

``inst_criterion`` is built from mmdet3d's ``MODELS``, so OneFormer3D's ``InstanceCriterion``
(here :class:`~influencerformer3d.models.instance_criterion.HungarianInstanceCriterion`) and the matching-free
:class:`~influencerformer3d.models.influencer_criterion.InfluencerCriterion` plug in unchanged. The returned dict
is the instance criterion's (``inst_loss``) updated with the semantic criterion's keys.

Neither class modifies its inputs (upstream slices the decoder's lists in place).
"""
from mmdet3d.registry import MODELS

from ..registry import register_model
from ..structures import LooseInstanceData, get_optional_field

__all__ = ['S3DISUnifiedCriterion', 'ScanNetUnifiedCriterion']


def _require(inst, name, i, who):
    value = get_optional_field(inst, name)
    if value is None:
        raise KeyError(f'{who}: ground truth of scene {i} lacks {name!r}')
    return value


def _rows(x, rows):
    return None if x is None else x[rows]


@register_model()
class ScanNetUnifiedCriterion:
    """ScanNet: ground truth rows ``[:-n-1]`` are instances, the last ``n + 1`` semantic classes.

    Args:
        num_semantic_classes (int): ``n``.
        sem_criterion (dict): e.g. ``ScanNetSemanticCriterion``.
        inst_criterion (dict): e.g. ``InstanceCriterion`` (``SparseMatcher``) or
            ``InfluencerCriterion``.

    ``__call__(pred, insts)``: ``pred`` is the decoder output (``cls_preds``, ``scores``,
    ``masks`` [Q_i, S_i], ``sem_preds`` [Q_i, n + 1], ``aux_outputs``); ``insts`` per scene with
    ``sp_masks`` [K_i + n + 1, S_i], ``labels_3d`` [K_i + n + 1] and optionally ``query_masks``
    [K_i + n + 1, Q_i] (set by the detector's query selection). The semantic targets are the
    last ``n + 1`` rows of ``query_masks`` (or of ``sp_masks`` without query selection).
    """

    def __init__(self, num_semantic_classes, sem_criterion, inst_criterion):
        self.num_semantic_classes = num_semantic_classes
        self.sem_criterion = MODELS.build(sem_criterion)
        self.inst_criterion = MODELS.build(inst_criterion)

    def split(self, insts):
        """Per scene: (semantic gt with ``sp_masks`` [n + 1, Q_i], instance gt with ``sp_masks``,
        ``labels_3d`` and, if present, ``query_masks``)."""
        n = self.num_semantic_classes
        sem_gts, inst_gts = [], []
        who = type(self).__name__
        for i, inst in enumerate(insts):
            sp_masks = _require(inst, 'sp_masks', i, who)
            labels = _require(inst, 'labels_3d', i, who)
            query_masks = get_optional_field(inst, 'query_masks')
            if sp_masks.shape[0] < n + 1 or len(labels) != sp_masks.shape[0]:
                raise ValueError(
                    f'{who}: scene {i} has {sp_masks.shape[0]} sp_masks rows and {len(labels)} '
                    f'labels; expected K instance rows + num_semantic_classes + 1 = K + {n + 1} of '
                    f'each (AddSuperPointAnnotations(merge_non_stuff_cls=False) builds them)')
            sem = LooseInstanceData()
            sem.sp_masks = (query_masks if query_masks is not None else sp_masks)[-n - 1:]
            gt = LooseInstanceData()
            gt.sp_masks = sp_masks[:-n - 1]
            gt.labels_3d = labels[:-n - 1]
            if query_masks is not None:
                gt.query_masks = query_masks[:-n - 1]
            sem_gts.append(sem)
            inst_gts.append(gt)
        return sem_gts, inst_gts

    def __call__(self, pred, insts):
        sem_gts, inst_gts = self.split(insts)
        loss = dict(self.inst_criterion(pred, inst_gts))
        loss.update(self.sem_criterion(pred, sem_gts))
        return loss


@register_model()
class S3DISUnifiedCriterion:
    """S3DIS: the last ``n`` queries of every decoder output are semantic queries.

    Args:
        num_semantic_classes (int): ``n``.
        sem_criterion (dict): e.g. ``S3DISSemanticCriterion``.
        inst_criterion (dict): e.g. ``InstanceCriterion`` (``HungarianMatcher``) or
            ``InfluencerCriterion``.

    ``__call__(pred, insts)``: ``pred`` is the decoder output over ``Q + n`` queries
    (``cls_preds``, ``scores``, ``masks`` [Q + n, V_i], ``aux_outputs``); ``insts`` per scene with
    ``sp_inst_masks`` [K_i, V_i], ``sp_sem_masks`` [n + 1, V_i] and ``labels_3d`` [K_i]. The
    instance criterion sees the first ``Q`` queries of every layer, the semantic one the masks of
    the last ``n``; a hybrid query group (``pred['hybrid']``, instance queries only) goes to the
    instance criterion whole.
    """

    def __init__(self, num_semantic_classes, sem_criterion, inst_criterion):
        self.num_semantic_classes = num_semantic_classes
        self.sem_criterion = MODELS.build(sem_criterion)
        self.inst_criterion = MODELS.build(inst_criterion)

    def _split_layer(self, layer):
        """(instance part with cls_preds/scores/masks of the first Q queries, semantic masks)."""
        n = self.num_semantic_classes
        masks = layer['masks']
        for m in masks:
            if m.shape[0] <= n:
                raise ValueError(f'{m.shape[0]} queries cannot hold {n} semantic queries plus '
                                 'instance queries: check num_semantic_queries of the decoder')
        scores = layer.get('scores', None)
        inst = dict(layer)
        inst.pop('aux_outputs', None)
        inst['masks'] = [m[:-n] for m in masks]
        inst['cls_preds'] = [c[:-n] for c in layer['cls_preds']]
        inst['scores'] = None if scores is None else [_rows(s, slice(None, -n)) for s in scores]
        return inst, [m[-n:] for m in masks]

    def prepare_aux_outputs(self, aux_outputs):
        """Semantic part of one auxiliary output: ``{'masks': list of [n, V_i]}``."""
        return {'masks': self._split_layer(aux_outputs)[1]}

    def __call__(self, pred, insts):
        who = type(self).__name__
        inst_pred, sem_masks = self._split_layer(pred)
        aux = pred.get('aux_outputs', None)
        sem_pred = {'masks': sem_masks}
        if aux is not None:
            parts = [self._split_layer(a) for a in aux]
            inst_pred['aux_outputs'] = [p[0] for p in parts]
            sem_pred['aux_outputs'] = [{'masks': p[1]} for p in parts]
        if pred.get('hybrid', None) is not None:  # training-only instance queries, no semantic ones
            inst_pred['hybrid'] = pred['hybrid']
        sem_gts, inst_gts = [], []
        for i, inst in enumerate(insts):
            sem = LooseInstanceData()
            sem.sp_masks = _require(inst, 'sp_sem_masks', i, who)
            gt = LooseInstanceData()
            gt.sp_masks = _require(inst, 'sp_inst_masks', i, who)
            gt.labels_3d = _require(inst, 'labels_3d', i, who)
            sem_gts.append(sem)
            inst_gts.append(gt)
        loss = dict(self.inst_criterion(inst_pred, inst_gts))
        loss.update(self.sem_criterion(sem_pred, sem_gts))
        return loss
