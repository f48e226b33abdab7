"""Semantic losses of OneFormer3D's unified (instance + semantic) models.

* :class:`S3DISSemanticCriterion` - S3DIS: one learned *semantic query* per class; the masks of
  those queries, read per voxel as ``[V, n_sem]`` logits, are trained with ``seg_loss``
  (default mmdet's sigmoid ``CrossEntropyLoss``) against the voxel's class. Returns
  ``last_layer_seg_loss`` and, for every auxiliary decoder output, ``layer_{i}_seg_loss``.
* :class:`ScanNetSemanticCriterion` - ScanNet: every query (a superpoint) has a semantic head;
  ``sem_preds`` ``[Q, C + 1]`` are trained with softmax cross-entropy against the query
  superpoint's class. Returns ``seg_loss``.

Targets come as ``sp_masks`` ``[C + 1, P]`` (bool; row ``C`` = unlabelled), one column per voxel /
query; the class of a column is its ``argmax`` (as upstream). Same arguments and returned keys as
OneFormer3D's classes of the same names. Not ``nn.Module``s (no parameters), as upstream.
"""
import torch
import torch.nn.functional as F
from mmdet3d.registry import MODELS

from ..registry import register_model
from ..structures import get_field

__all__ = ['S3DISSemanticCriterion', 'ScanNetSemanticCriterion']


def _column_classes(sp_masks):
    """Class index of every column of a one-hot ``[C + 1, P]`` mask -> ``[P]`` long."""
    return sp_masks.float().argmax(0)


@register_model()
class S3DISSemanticCriterion:
    """Per-voxel classification by the semantic queries' masks (OneFormer3D S3DIS).

    Args:
        loss_weight (float): multiplies the mean (over scenes) of ``seg_loss``.
        seg_loss (dict): loss config built from mmdet3d's ``MODELS``; called as
            ``seg_loss(logits [P, n_sem], labels [P])`` (labels equal to ``n_sem`` = unlabelled).
    """

    def __init__(self, loss_weight, seg_loss=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True)):
        self.seg_loss = MODELS.build(seg_loss)
        self.loss_weight = loss_weight

    def _mean_loss(self, masks, insts):
        if len(masks) != len(insts):
            raise ValueError(f'{len(masks)} semantic predictions for {len(insts)} scenes')
        losses = []
        for i, (m, inst) in enumerate(zip(masks, insts)):
            target = get_field(inst, 'sp_masks')
            if target.shape[1] != m.shape[1]:
                raise ValueError(f'scene {i}: semantic masks cover {m.shape[1]} voxels, sp_masks '
                                 f'{target.shape[1]}')
            losses.append(self.seg_loss(m.T, _column_classes(target).to(m.device)))
        return self.loss_weight * torch.stack(losses).mean()

    def get_layer_loss(self, layer, aux_outputs, insts):
        """Loss of auxiliary output ``layer``: ``aux_outputs['masks']`` list of [n_sem, P_i].

        Returns ``{'layer_{layer}_seg_loss': scalar}``."""
        return {f'layer_{layer}_seg_loss': self._mean_loss(aux_outputs['masks'], insts)}

    def __call__(self, pred, insts):
        """Args:
            pred (dict): ``masks`` list over scenes of [n_sem, P_i] logits; optional
                ``aux_outputs`` (list of dicts with ``masks``).
            insts (list): per scene an object/dict with ``sp_masks`` [n_sem + 1, P_i] (bool).

        Returns:
            dict: ``last_layer_seg_loss`` and ``layer_{i}_seg_loss`` per auxiliary output.
        """
        loss = {'last_layer_seg_loss': self._mean_loss(pred['masks'], insts)}
        for i, aux in enumerate(pred.get('aux_outputs', None) or []):
            loss.update(self.get_layer_loss(i, aux, insts))
        return loss


@register_model()
class ScanNetSemanticCriterion:
    """Softmax cross-entropy of every query's semantic prediction (OneFormer3D ScanNet).

    Args:
        ignore_index (int): class to ignore (ScanNet: ``num_semantic_classes``, the unlabelled
            row). When ``>= 0`` the last column of ``sem_preds`` is dropped before the loss, as
            upstream.
        loss_weight (float): multiplies the mean over scenes.

    A scene whose targets are all ignored contributes 0 (upstream: NaN).
    """

    def __init__(self, ignore_index, loss_weight):
        self.ignore_index = ignore_index
        self.loss_weight = loss_weight

    def __call__(self, pred, insts):
        """Args:
            pred (dict): ``sem_preds`` list over scenes of [Q_i, C + 1] logits.
            insts (list): per scene an object/dict with ``sp_masks`` [C + 1, Q_i] (bool).

        Returns:
            dict: ``{'seg_loss': scalar}``.
        """
        sem_preds = pred['sem_preds']
        if sem_preds is None or len(sem_preds) != len(insts):
            raise ValueError('ScanNetSemanticCriterion needs pred["sem_preds"] (one [Q, C + 1] tensor '
                             'per scene): use ScanNetQueryDecoder')
        losses = []
        for i, (logits, inst) in enumerate(zip(sem_preds, insts)):
            target_masks = get_field(inst, 'sp_masks')
            if target_masks.shape[1] != logits.shape[0]:
                raise ValueError(f'scene {i}: {logits.shape[0]} queries but semantic sp_masks have '
                                 f'{target_masks.shape[1]} columns')
            if self.ignore_index >= 0:
                logits = logits[:, :-1]
            target = _column_classes(target_masks).to(logits.device)
            per_query = F.cross_entropy(logits, target, ignore_index=self.ignore_index,
                                        reduction='none')
            n_valid = (target != self.ignore_index).sum()
            # mean over non-ignored queries (F.cross_entropy's 'mean'); 0 (not NaN) if none
            losses.append(per_query.sum() / n_valid.clamp(min=1))
        return dict(seg_loss=self.loss_weight * torch.stack(losses).mean())
