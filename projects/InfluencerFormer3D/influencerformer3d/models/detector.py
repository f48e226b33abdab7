"""OneFormer3D detectors (S3DIS and ScanNet) on plain PyTorch + spconv.

Same constructor arguments, parameter names (``input_conv``, ``unet``, ``output_layer``,
``decoder``), data-sample fields and ``pred_pts_seg`` format as OneFormer3D's
``S3DISOneFormer3D`` / ``ScanNetOneFormer3D``, so upstream configs and checkpoints work
(checkpoints through :func:`influencerformer3d.checkpoint.load_oneformer3d_checkpoint`).
MinkowskiEngine's collation is replaced by :func:`.pooling.voxelize` and torch_scatter by
:mod:`.pooling`.

Pipeline (both): points [N_i, 3 + F] -> voxels (features: point features and xyz minus the
scene mean, averaged per voxel; ``in_channels = F + 3``) -> ``input_conv`` (SubM 3x3x3) ->
``unet`` -> ``output_layer`` (BN, ReLU) ->

* S3DIS: per-scene voxel features -> ``decoder(x)`` (learned queries: instance queries then
  ``num_sem_cls`` semantic queries) -> criterion on per-voxel ground truth / inference;
* ScanNet: mean over superpoints (``gt_pts_seg.sp_pts_mask``) -> ``decoder(x, queries)`` with a
  random subset of the superpoints as queries in training (``query_thr``), all of them at test.

``predict`` sets ``data_sample.pred_pts_seg = PointData(pts_semantic_mask=[sem [N], pan_sem [N]],
pts_instance_mask=[inst bool [n_inst, N], pan_inst [N]], instance_labels [n_inst],
instance_scores [n_inst], instance_queries [n_inst] (the query of each instance; ours only))``
(numpy) over the scene's original points, for every scene of the batch.
"""
import spconv.pytorch as spconv
import torch
import torch.nn.functional as F
from mmdet3d.models import Base3DDetector
from mmdet3d.registry import MODELS
from mmdet3d.structures import PointData
from mmengine.config import ConfigDict
from torch import nn

from influencer_core.timing import DeviceTimer

from ..registry import register_model
from ..structures import LooseInstanceData
from . import pooling
from .mask_matrix_nms import mask_matrix_nms

__all__ = ['S3DISOneFormer3D', 'ScanNetOneFormer3D']

S3DIS_TEST_KEYS = ('topk_insts', 'inst_score_thr', 'pan_score_thr', 'npoint_thr', 'sp_score_thr',
                   'num_sem_cls', 'stuff_cls', 'thing_cls')
SCANNET_TEST_KEYS = ('topk_insts', 'inst_score_thr', 'pan_score_thr', 'npoint_thr', 'sp_score_thr',
                     'stuff_classes')


def _as_cfg(cfg):
    if cfg is None or isinstance(cfg, ConfigDict):
        return cfg
    return ConfigDict(cfg)


def _scene_output(out, i):
    """Decoder output restricted to scene ``i`` (each value a list of length 1)."""
    res = {}
    for key in ('cls_preds', 'masks', 'scores', 'sem_preds'):
        value = out.get(key, None)
        res[key] = [None] if value is None else [value[i]]
    return res


def _to_long(x, device):
    return torch.as_tensor(x, device=device).long()


class _OneFormer3DBase(Base3DDetector):
    """Layers, voxelisation, backbone and instance post-processing shared by both datasets."""

    _test_keys = ()

    def __init__(self, in_channels, num_channels, voxel_size, num_classes, min_spatial_shape,
                 backbone=None, decoder=None, criterion=None, train_cfg=None, test_cfg=None,
                 data_preprocessor=None, init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        for name, cfg in (('backbone', backbone), ('decoder', decoder), ('criterion', criterion)):
            if cfg is None:
                raise ValueError(f'{type(self).__name__} needs a {name} config')
        # built in upstream's order: the state_dict lists unet, decoder, input_conv, output_layer
        self.unet = MODELS.build(backbone)
        self.decoder = MODELS.build(decoder)
        self.criterion = MODELS.build(criterion)
        self.in_channels = in_channels
        self.voxel_size = voxel_size
        self.num_classes = num_classes
        self.min_spatial_shape = min_spatial_shape
        self.train_cfg = _as_cfg(train_cfg)
        self.test_cfg = _as_cfg(test_cfg)
        self._init_layers(in_channels, num_channels)

    def _criterion_losses(self, pred, gts):
        """``self.criterion(pred, gts)``, timed by a :class:`~influencer_core.timing.DeviceTimer`
        (CUDA events on a GPU: no host sync in the step) that :meth:`parse_losses` hands on."""
        masks = pred.get('masks') if isinstance(pred, dict) else None
        device = masks[0].device if isinstance(masks, (list, tuple)) and len(masks) > 0 else 'cpu'
        timer = DeviceTimer(device)
        losses = self.criterion(pred, gts)
        self._criterion_timer = timer.stop()
        return losses

    def parse_losses(self, losses):
        """mmengine's ``parse_losses``, plus ``criterion_time`` (seconds, the A/B benchmark reads
        it) in the log variables when the criterion ran since the last call: the timer is read
        after the step, when mmengine's ``RuntimeInfoHook`` logs it as ``train/criterion_time``."""
        loss, log_vars = super().parse_losses(losses)
        timer, self._criterion_timer = getattr(self, '_criterion_timer', None), None
        if timer is not None:
            log_vars['criterion_time'] = timer
        return loss, log_vars

    def _init_layers(self, in_channels, num_channels):
        self.input_conv = spconv.SparseSequential(
            spconv.SubMConv3d(in_channels, num_channels, kernel_size=3, padding=1, bias=False,
                              indice_key='subm1'))
        self.output_layer = spconv.SparseSequential(
            nn.BatchNorm1d(num_channels, eps=1e-4, momentum=0.1), nn.ReLU(inplace=True))

    # ------------------------------------------------------------------ voxels
    def collate(self, points, elastic_points=None):
        """Voxelise a batch (stands in for upstream's MinkowskiEngine collation).

        Args:
            points (list[Tensor]): per scene [N_i, 3 + F].
            elastic_points (list[Tensor], optional): per scene [N_i, 3] distorted coordinates in
                voxel units (replace ``xyz / voxel_size`` for the voxel grid only).

        Returns:
            coordinates [V, 4] int32 (scene, x, y, z; scene-major), features [V, F + 3] (voxel
            means of ``cat(point[:, 3:], xyz - mean xyz)``), inverse_mapping [sum N_i] (voxel of
            every point) and spatial_shape (3 ints, max coordinate + 1 clipped below at
            ``min_spatial_shape``).
        """
        if not isinstance(points, (list, tuple)) or len(points) == 0:
            raise ValueError("inputs['points'] must be a non-empty list of [N_i, 3 + F] tensors")
        for i, p in enumerate(points):
            if p.dim() != 2 or p.shape[0] == 0 or p.shape[1] < 3:
                raise ValueError(f'scene {i}: points must be a non-empty [N, 3 + F] tensor, got '
                                 f'{tuple(p.shape)}')
            if p.shape[1] != self.in_channels:
                raise ValueError(
                    f'scene {i}: points have {p.shape[1]} columns; the voxel features are the '
                    f'{p.shape[1] - 3} point features plus 3 centred coordinates = {p.shape[1]} '
                    f'channels, but in_channels={self.in_channels}')
        if elastic_points is not None:
            elastic_points = [torch.as_tensor(e, device=p.device, dtype=p.dtype)
                              for e, p in zip(elastic_points, points)]
            for i, (e, p) in enumerate(zip(elastic_points, points)):
                if e.shape != (p.shape[0], 3):
                    raise ValueError(f'scene {i}: elastic_coords must be [N, 3] = '
                                     f'[{p.shape[0]}, 3], got {tuple(e.shape)}')
        coords, feats, inverse, shape = pooling.voxelize(
            points, self.voxel_size, elastic_coords=elastic_points)
        shape = [max(int(s), int(self.min_spatial_shape)) for s in shape.tolist()]
        return coords, feats, inverse, shape

    @staticmethod
    def _local_voxel_ids(coordinates, inverse_mapping, num_points, batch_size):
        """Per scene [N_i] index of every point's voxel among that scene's voxels (in the order
        of the scene's rows of ``coordinates``)."""
        counts = torch.bincount(coordinates[:, 0].long(), minlength=batch_size)
        voxel_start = torch.cumsum(counts, 0) - counts
        scene_of_point = torch.repeat_interleave(
            torch.arange(batch_size, device=inverse_mapping.device),
            torch.as_tensor(num_points, device=inverse_mapping.device))
        local = inverse_mapping - voxel_start[scene_of_point]
        return list(torch.split(local, list(num_points)))

    def _backbone(self, x):
        x = self.input_conv(x)
        x, _ = self.unet(x)
        return self.output_layer(x)

    def _check_test_cfg(self):
        if self.test_cfg is None:
            raise ValueError(f'{type(self).__name__}.predict needs test_cfg (keys: '
                             f'{", ".join(self._test_keys)})')
        missing = [k for k in self._test_keys if k not in self.test_cfg]
        if self.test_cfg.get('nms', False) and 'matrix_nms_kernel' not in self.test_cfg:
            missing.append('matrix_nms_kernel')
        if missing:
            raise KeyError(f'test_cfg lacks {missing} (OneFormer3D test_cfg keys)')

    # ------------------------------------------------------------------ inference
    def _instances(self, cls_logits, obj_scores, mask_logits, superpoints, score_threshold,
                   norm_thr=None, return_queries=False):
        """Instance candidates of one scene (upstream's inference).

        Args:
            cls_logits: [Q, C + 1]; obj_scores: [Q, 1] or None; mask_logits: [Q, P];
            superpoints: [N] voxel / superpoint of every original point;
            score_threshold: keep scores > it.
            norm_thr: ``obj_normalization`` mask: probabilities > norm_thr (S3DIS) or, if None,
                logits > 0 (ScanNet).

        With ``test_cfg.one_class_per_query`` (default False: upstream, where every (query, class)
        pair competes for the ``topk_insts`` candidates, so one query's mask can be reported under
        several classes) each query is a candidate once, under its most probable class, scored
        by that probability times its objectness. ``test_cfg.class_temperature`` T (default 1,
        upstream) scores with ``softmax(cls_logits / T)``: T > 1 flattens each query's class
        distribution, so its runner-up classes compete for the candidates too.

        Returns:
            masks [n, N] bool, labels [n], scores [n].
        """
        cfg = self.test_cfg
        n_cls = self.num_classes
        if cls_logits.shape[1] != n_cls + 1:
            raise ValueError(f'cls_preds have {cls_logits.shape[1]} columns, expected '
                             f'num_classes + 1 = {n_cls + 1}')
        temperature = cfg.get('class_temperature', 1.0)
        if not temperature > 0:
            raise ValueError(f'test_cfg.class_temperature must be > 0 (1 = upstream), got {temperature}')
        scores = F.softmax(cls_logits / temperature, dim=-1)[:, :-1]
        if cfg.get('one_class_per_query', False):
            # the label from the class probabilities alone: an objectness below 0 (early in
            # training) must not turn the least probable class into the best product
            scores, labels = scores.max(1)
            if obj_scores is not None:
                scores = scores * obj_scores.reshape(-1)
            k = min(int(cfg.topk_insts), scores.numel())
            scores, query = scores.topk(k, sorted=False)
            labels = labels[query]
        else:
            if obj_scores is not None:
                scores = scores * obj_scores
            flat = scores.flatten()
            k = min(int(cfg.topk_insts), flat.numel())
            scores, idx = flat.topk(k, sorted=False)
            labels = idx % n_cls
            query = torch.div(idx, n_cls, rounding_mode='floor')
        logits = mask_logits[query]
        probs = logits.sigmoid()
        if cfg.get('obj_normalization', None):
            inside = logits > 0 if norm_thr is None else probs > norm_thr
            scores = scores * (probs * inside).sum(1) / (inside.sum(1) + 1e-6)
        if cfg.get('nms', None):
            scores, labels, probs, order = mask_matrix_nms(probs, labels, scores,
                                                           kernel=cfg.matrix_nms_kernel)
            query = query[order]
        masks = (probs > cfg.sp_score_thr)[:, superpoints]
        keep = scores > score_threshold
        masks, labels, scores, query = masks[keep], labels[keep], scores[keep], query[keep]
        keep = masks.sum(1) > cfg.npoint_thr
        if return_queries:  # which query each instance came from (duplicate rate per query)
            return masks[keep], labels[keep], scores[keep], query[keep]
        return masks[keep], labels[keep], scores[keep]

    @staticmethod
    def _drop_small(inst_map, num_ids, npoint_thr):
        """Set ids (except 0) covering <= npoint_thr points to 0: [N] -> [N]."""
        counts = torch.bincount(inst_map, minlength=num_ids)
        small = counts <= npoint_thr
        small[0] = False
        return torch.where(small[inst_map], torch.zeros_like(inst_map), inst_map)

    @staticmethod
    def _point_data(sem, pan_sem, inst_masks, pan_inst, labels, scores, queries=None):
        data = PointData(
            pts_semantic_mask=[sem.cpu().numpy(), pan_sem.cpu().numpy()],
            pts_instance_mask=[inst_masks.cpu().bool().numpy(), pan_inst.cpu().numpy()],
            instance_labels=labels.cpu().numpy(),
            instance_scores=scores.cpu().numpy())
        if queries is not None:
            data.instance_queries = queries.cpu().numpy()
        return data


@register_model()
class S3DISOneFormer3D(_OneFormer3DBase):
    """OneFormer3D for S3DIS: decoder over voxels with learned instance + semantic queries.

    Args:
        in_channels (int): voxel feature channels (point features + 3; S3DIS: 6).
        num_channels (int): backbone width (S3DIS: 64).
        voxel_size (float): voxel edge in metres (0.05).
        num_classes (int): instance classes (13).
        min_spatial_shape (int): lower bound of the sparse tensor's spatial shape (128).
        backbone, decoder, criterion (dict): ``SpConvUNet``, ``QueryDecoder``,
            ``S3DISUnifiedCriterion`` configs.
        train_cfg (dict): optional ``gt_inst_mask_rule``: ``'all'`` (default, upstream) or
            ``'majority'``, see :meth:`get_gt_inst_masks`.
        test_cfg (dict): ``topk_insts``, ``inst_score_thr``, ``pan_score_thr``, ``npoint_thr``,
            ``obj_normalization``, ``obj_normalization_thr``, ``sp_score_thr``, ``nms``,
            ``matrix_nms_kernel``, ``num_sem_cls``, ``stuff_cls``, ``thing_cls``; optional
            ``one_class_per_query`` (default False) and ``class_temperature`` (default 1), see
            :meth:`_instances`.
        data_preprocessor, init_cfg: as mmengine's ``BaseModel``.

    Data samples: ``gt_pts_seg.pts_semantic_mask`` [N] (0..num_classes, num_classes =
    unlabelled), ``gt_pts_seg.pts_instance_mask`` [N] (0..K-1, -1 none) and
    ``gt_instances_3d.labels_3d`` [K] (training).
    """

    _test_keys = S3DIS_TEST_KEYS

    def extract_feat(self, x):
        """SparseConvTensor [V, in_channels] -> list over scenes of [V_i, num_channels] (rows in
        the input's voxel order, which the submanifold output keeps)."""
        sites = x.indices
        x = self._backbone(x)
        if not torch.equal(x.indices, sites):
            raise RuntimeError('the backbone changed the voxel order; the per-voxel targets and the '
                               'projection to points assume it is kept')
        return pooling.split_by_batch(x.features, x.indices[:, 0].long(), x.batch_size)

    def _forward(self, batch_inputs_dict, batch_data_samples=None, **kwargs):
        """Decoder output dict (``mode='tensor'``)."""
        coords, feats, _, shape = self.collate(batch_inputs_dict['points'])
        x = spconv.SparseConvTensor(feats, coords, shape, len(batch_inputs_dict['points']))
        return self.decoder(self.extract_feat(x))

    @staticmethod
    def get_gt_semantic_masks(mask_src, sp_pts_mask, num_classes):
        """Per-voxel semantic targets: [N] labels, [N] voxel ids -> [num_classes + 1, V] bool."""
        return pooling.superpoint_gt_semantic_masks(mask_src, sp_pts_mask, num_classes)

    @staticmethod
    def get_gt_inst_masks(mask_src, sp_pts_mask, rule='all'):
        """Per-voxel instance targets: [N] ids (0..K-1, -1 none), [N] voxel ids -> [K, V] bool.

        ``rule='all'`` (default, upstream's arithmetic: torch_scatter's mean of the *integer*
        one-hot floor-divides, so the ``> 0.5`` test passes only when every point of the voxel
        belongs to the instance); ``'majority'``: more than half of them (as for the semantic
        targets and ScanNet's superpoint targets).
        """
        if rule == 'majority':
            return pooling.superpoint_gt_instance_masks(mask_src, sp_pts_mask)
        if rule != 'all':
            raise ValueError(f"gt_inst_mask_rule must be 'all' or 'majority', got {rule!r}")
        ids = mask_src.long()
        voxels = sp_pts_mask.long()
        k = max(int(ids.max()) + 1, 0) if ids.numel() else 0
        v = int(voxels.max()) + 1 if voxels.numel() else 0
        one_hot = (ids[None] == torch.arange(k, device=ids.device)[:, None]).float()  # [K, N]
        inside = pooling.scatter_sum(one_hot, voxels, dim=1, dim_size=v)
        count = pooling.scatter_count(voxels, v)
        return (inside >= count) & (count > 0)

    def _scene_gt(self, i, sample, voxel_ids):
        """Scene ``i``'s per-voxel ground truth: ``labels_3d`` [K], ``sp_sem_masks`` [C + 1, V_i],
        ``sp_inst_masks`` [K, V_i] from the per-point labels and [N_i] voxel ids."""
        seg = sample.gt_pts_seg
        n = voxel_ids.shape[0]
        device = voxel_ids.device
        sem = _to_long(seg.pts_semantic_mask, device)
        inst = _to_long(seg.pts_instance_mask, device)
        if sem.shape != (n,) or inst.shape != (n,):
            raise ValueError(f'scene {i}: pts_semantic_mask {tuple(sem.shape)} / pts_instance_mask '
                             f'{tuple(inst.shape)} must have one entry per point ({n})')
        if int(sem.min()) < 0 or int(sem.max()) > self.num_classes:
            raise ValueError(f'scene {i}: semantic labels must lie in [0, {self.num_classes}] '
                             f'({self.num_classes} = unlabelled); map them with the dataset '
                             'pipeline (e.g. PointSegClassMapping)')
        labels = _to_long(sample.gt_instances_3d.labels_3d, device)
        gt = LooseInstanceData()
        gt.labels_3d = labels
        gt.sp_sem_masks = self.get_gt_semantic_masks(sem, voxel_ids, self.num_classes)
        rule = (self.train_cfg or {}).get('gt_inst_mask_rule', 'all')
        inst_masks = self.get_gt_inst_masks(inst, voxel_ids, rule)
        if inst_masks.shape[0] != labels.shape[0]:
            raise ValueError(f'scene {i}: {inst_masks.shape[0]} instances in pts_instance_mask but '
                             f'{labels.shape[0]} labels_3d; instance ids must be 0..K-1 (-1: none), '
                             'see PointInstClassMapping_')
        gt.sp_inst_masks = inst_masks
        return gt

    def loss(self, batch_inputs_dict, batch_data_samples, **kwargs):
        """Criterion losses (dict) of a batch.

        Args:
            batch_inputs_dict (dict): ``points`` list of [N_i, 3 + F], optional
                ``elastic_coords``.
            batch_data_samples (list[Det3DDataSample]): see the class docstring.
        """
        points = batch_inputs_dict['points']
        b = len(batch_data_samples)
        if len(points) != b:
            raise ValueError(f'{len(points)} point clouds for {b} data samples')
        coords, feats, inverse, shape = self.collate(
            points, batch_inputs_dict.get('elastic_coords', None))
        x = self.extract_feat(spconv.SparseConvTensor(feats, coords, shape, b))
        out = self.decoder(x)
        voxel_ids = self._local_voxel_ids(coords, inverse, [len(p) for p in points], b)
        gts = [self._scene_gt(i, s, v) for i, (s, v) in enumerate(zip(batch_data_samples, voxel_ids))]
        return self._criterion_losses(out, gts)

    @torch.no_grad()
    def predict(self, batch_inputs_dict, batch_data_samples, **kwargs):
        """Sets ``pred_pts_seg`` (see the module docstring) on every data sample; returns them."""
        self._check_test_cfg()
        points = batch_inputs_dict['points']
        b = len(batch_data_samples)
        coords, feats, inverse, shape = self.collate(points)
        x = self.extract_feat(spconv.SparseConvTensor(feats, coords, shape, b))
        out = self.decoder(x)
        voxel_ids = self._local_voxel_ids(coords, inverse, [len(p) for p in points], b)
        for i, sample in enumerate(batch_data_samples):
            sample.pred_pts_seg = self.predict_by_feat(_scene_output(out, i), voxel_ids[i])[0]
        return batch_data_samples

    def predict_by_feat(self, out, superpoints):
        """One scene: decoder output (lists of length 1) and [N] voxel id of every point ->
        ``[PointData]`` with instance, semantic and panoptic predictions."""
        cls = out['cls_preds'][0]
        masks = out['masks'][0]
        scores = out['scores'][0]
        n = self.test_cfg.num_sem_cls
        inst = self.pred_inst(masks[:-n], None if scores is None else scores[:-n], cls[:-n],
                              superpoints, self.test_cfg.inst_score_thr, return_queries=True)
        sem = self.pred_sem(masks[-n:], superpoints)
        pan_sem, pan_inst = self.pred_pan(masks, scores, cls, superpoints)
        return [self._point_data(sem, pan_sem, inst[0], pan_inst, inst[1], inst[2], inst[3])]

    def pred_inst(self, pred_masks, pred_scores, pred_labels, superpoints, score_threshold,
                  return_queries=False):
        """Instances from the instance queries: masks [Q, V], scores [Q, 1] | None, labels
        [Q, C + 1], superpoints [N] -> (masks [n, N] bool, labels [n], scores [n][, query [n]])."""
        return self._instances(pred_labels, pred_scores, pred_masks, superpoints, score_threshold,
                               norm_thr=self.test_cfg.get('obj_normalization_thr', None),
                               return_queries=return_queries)

    def pred_sem(self, pred_masks, superpoints):
        """Semantic map: semantic-query masks [n_sem, V], superpoints [N] -> [N] (argmax of the
        mask probabilities)."""
        return pred_masks.sigmoid().argmax(0)[superpoints]

    def pred_pan(self, pred_masks, pred_scores, pred_labels, superpoints):
        """Panoptic maps over all queries [Q + n_sem, ...] -> (semantic [N], instance [N]).

        Stuff points: semantic class from the stuff classes' semantic queries, instance id = its
        index in ``stuff_cls``. Thing instances (labels in ``thing_cls``, score > pan_score_thr)
        are painted in ascending score order; ids follow upstream exactly, including that the
        lowest-scored instance gets id 0 and so is not painted, and ids are made contiguous
        before the ``len(stuff_cls) - 1`` shift.
        """
        cfg = self.test_cfg
        n = cfg.num_sem_cls
        stuff = torch.as_tensor(list(cfg.stuff_cls), device=pred_masks.device).long()
        sem_map = self.pred_sem(pred_masks[-n + stuff], superpoints)
        sem_cls = stuff[sem_map]
        masks, labels, scores = self.pred_inst(
            pred_masks[:-n], None if pred_scores is None else pred_scores[:-n],
            pred_labels[:-n], superpoints, cfg.pan_score_thr)
        things = torch.isin(labels, torch.as_tensor(list(cfg.thing_cls), device=labels.device))
        masks, labels, scores = masks[things], labels[things], scores[things]
        if masks.shape[0] == 0:
            return sem_cls, sem_map
        scores, order = scores.sort()
        labels, masks = labels[order], masks[order]
        ids = torch.arange(masks.shape[0], device=masks.device).view(-1, 1)
        inst_map, winner = (ids * masks).max(0)
        thing_sem = labels[winner]
        inst_map = self._drop_small(inst_map, masks.shape[0], cfg.npoint_thr)
        inst_map = torch.unique(inst_map, return_inverse=True)[1]
        is_thing = inst_map != 0
        inst_map = torch.where(is_thing, inst_map + len(stuff) - 1, inst_map)
        thing_sem = torch.where(is_thing, thing_sem, torch.zeros_like(thing_sem))
        sem_cls = torch.where(is_thing, torch.zeros_like(sem_cls), sem_cls) + thing_sem
        sem_map = torch.where(is_thing, torch.zeros_like(sem_map), sem_map) + inst_map
        return sem_cls, sem_map


@register_model()
class ScanNetOneFormer3D(_OneFormer3DBase):
    """OneFormer3D for ScanNet: decoder over superpoints, superpoint features as queries.

    Args:
        in_channels (int): voxel feature channels (6).
        num_channels (int): backbone width (32).
        voxel_size (float): voxel edge (0.02).
        num_classes (int): instance classes (18).
        min_spatial_shape (int): lower bound of the spatial shape (128).
        query_thr (float): training uses a random fraction in [query_thr, 1) of the superpoints as
            queries (all of them if ``query_thr >= 1``); testing uses all.
        backbone, decoder, criterion (dict): ``SpConvUNet``, ``ScanNetQueryDecoder``,
            ``ScanNetUnifiedCriterion`` configs.
        train_cfg (dict): unused.
        test_cfg (dict): ``topk_insts``, ``inst_score_thr``, ``pan_score_thr``, ``npoint_thr``,
            ``obj_normalization``, ``sp_score_thr``, ``nms``, ``matrix_nms_kernel``,
            ``stuff_classes``; optional ``one_class_per_query`` (default False, see
            :meth:`_instances`).
        data_preprocessor, init_cfg: as mmengine's ``BaseModel`` (``Det3DDataPreprocessor_``
            passes ``elastic_coords``).

    Data samples: ``gt_pts_seg.sp_pts_mask`` [N] superpoint id per point (train and test);
    training also ``gt_instances_3d.sp_masks`` [K + C + 1, S] and ``labels_3d`` [K + C + 1]
    (``AddSuperPointAnnotations``).
    """

    _test_keys = SCANNET_TEST_KEYS

    def __init__(self, in_channels, num_channels, voxel_size, num_classes, min_spatial_shape,
                 query_thr, backbone=None, decoder=None, criterion=None, train_cfg=None,
                 test_cfg=None, data_preprocessor=None, init_cfg=None):
        super().__init__(in_channels, num_channels, voxel_size, num_classes, min_spatial_shape,
                         backbone=backbone, decoder=decoder, criterion=criterion,
                         train_cfg=train_cfg, test_cfg=test_cfg,
                         data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.query_thr = query_thr

    @staticmethod
    def _superpoints(batch_data_samples, num_points, device):
        """Batch-unique superpoint ids [sum N_i] and offsets (B + 1 ints); inputs unchanged."""
        ids, offsets = [], [0]
        for i, (sample, n) in enumerate(zip(batch_data_samples, num_points)):
            seg = sample.get('gt_pts_seg', None)
            sp = None if seg is None else seg.get('sp_pts_mask', None)
            if sp is None:
                raise KeyError(f'scene {i}: ScanNetOneFormer3D needs gt_pts_seg.sp_pts_mask (superpoint '
                               "id per point): load it with LoadAnnotations3D_(with_sp_mask_3d=True) "
                               "and pack 'sp_pts_mask'")
            sp = _to_long(sp, device)
            if sp.shape != (n,):
                raise ValueError(f'scene {i}: sp_pts_mask has shape {tuple(sp.shape)}, expected ({n},)')
            ids.append(sp + offsets[-1])
            offsets.append(offsets[-1] + int(sp.max()) + 1)
        return torch.cat(ids), offsets

    def extract_feat(self, x, superpoints, inverse_mapping, batch_offsets):
        """SparseConvTensor, [N] batch superpoint ids, [N] voxel ids, offsets -> list over scenes
        of [S_i, num_channels] superpoint features (mean over the superpoint's points)."""
        x = self._backbone(x)
        return pooling.superpoint_pool(x.features, superpoints, inverse_mapping, batch_offsets)

    def _features(self, batch_inputs_dict, batch_data_samples, elastic):
        points = batch_inputs_dict['points']
        if batch_data_samples is None:
            raise ValueError('ScanNetOneFormer3D needs the data samples (their '
                             'gt_pts_seg.sp_pts_mask superpoints), also in tensor mode')
        b = len(batch_data_samples)
        if len(points) != b:
            raise ValueError(f'{len(points)} point clouds for {b} data samples')
        sp, offsets = self._superpoints(batch_data_samples, [len(p) for p in points],
                                        points[0].device)
        coords, feats, inverse, shape = self.collate(
            points, batch_inputs_dict.get('elastic_coords', None) if elastic else None)
        x = spconv.SparseConvTensor(feats, coords, shape, b)
        return self.extract_feat(x, sp, inverse, offsets), sp, offsets

    def _forward(self, batch_inputs_dict, batch_data_samples=None, **kwargs):
        """Decoder output dict with all superpoints as queries (``mode='tensor'``)."""
        x, _, _ = self._features(batch_inputs_dict, batch_data_samples, elastic=False)
        return self.decoder(x, x)

    def _select_queries(self, x, gt_instances):
        """Random query subset per scene (training).

        Args:
            x (list[Tensor]): per scene [S_i, C] superpoint features.
            gt_instances (list): per scene ground truth with ``sp_masks`` [R_i, S_i].

        Returns:
            (list of [Q_i, C] queries, gt_instances with ``query_masks`` [R_i, Q_i] set).
        """
        queries = []
        for feats, gt in zip(x, gt_instances):
            if self.query_thr < 1:
                frac = (1 - self.query_thr) * torch.rand(1) + self.query_thr
                n = int((frac * len(feats)).int())
                ids = torch.randperm(len(feats))[:n].to(feats.device)
                queries.append(feats[ids])
                gt.query_masks = gt.sp_masks[:, ids]
            else:
                queries.append(feats)
                gt.query_masks = gt.sp_masks
        return queries, gt_instances

    def loss(self, batch_inputs_dict, batch_data_samples, **kwargs):
        """Criterion losses (dict) of a batch (``elastic_coords`` used when given)."""
        x, _, offsets = self._features(batch_inputs_dict, batch_data_samples, elastic=True)
        gts = []
        for i, sample in enumerate(batch_data_samples):
            src = sample.gt_instances_3d
            sp_masks = src.get('sp_masks', None)
            if sp_masks is None:
                raise KeyError(f'scene {i}: gt_instances_3d.sp_masks missing: add '
                               "AddSuperPointAnnotations and pack 'gt_sp_masks'")
            sp_masks = torch.as_tensor(sp_masks, device=x[i].device).bool()
            if sp_masks.shape[1] != x[i].shape[0]:
                raise ValueError(f'scene {i}: sp_masks has {sp_masks.shape[1]} columns but the scene '
                                 f'has {x[i].shape[0]} superpoints (max sp_pts_mask + 1)')
            gt = LooseInstanceData()
            gt.sp_masks = sp_masks
            gt.labels_3d = _to_long(src.labels_3d, x[i].device)
            gts.append(gt)
        queries, gts = self._select_queries(x, gts)
        return self._criterion_losses(self.decoder(x, queries), gts)

    @torch.no_grad()
    def predict(self, batch_inputs_dict, batch_data_samples, **kwargs):
        """Sets ``pred_pts_seg`` on every data sample; returns them."""
        self._check_test_cfg()
        x, sp, offsets = self._features(batch_inputs_dict, batch_data_samples, elastic=False)
        out = self.decoder(x, x)
        sizes = [len(p) for p in batch_inputs_dict['points']]
        for i, (sample, local) in enumerate(zip(batch_data_samples, torch.split(sp, sizes))):
            sample.pred_pts_seg = self.predict_by_feat(_scene_output(out, i), local - offsets[i])[0]
        return batch_data_samples

    def predict_by_feat(self, out, superpoints):
        """One scene: decoder output (lists of length 1), [N] superpoint ids -> ``[PointData]``."""
        inst = self.predict_by_feat_instance(out, superpoints, self.test_cfg.inst_score_thr, return_queries=True)
        sem = self.predict_by_feat_semantic(out, superpoints)
        pan_sem, pan_inst = self.predict_by_feat_panoptic(out, superpoints)
        return [self._point_data(sem, pan_sem, inst[0], pan_inst, inst[1], inst[2], inst[3])]

    def predict_by_feat_instance(self, out, superpoints, score_threshold, return_queries=False):
        """-> (masks [n, N] bool, labels [n], scores [n][, query [n]])."""
        return self._instances(out['cls_preds'][0], out['scores'][0], out['masks'][0],
                               superpoints, score_threshold, norm_thr=None, return_queries=return_queries)

    def predict_by_feat_semantic(self, out, superpoints, classes=None):
        """argmax of ``sem_preds`` over ``classes`` (default all but the last) -> [N]."""
        sem = out['sem_preds'][0]
        if classes is None:
            classes = list(range(sem.shape[1] - 1))
        return sem[:, list(classes)].argmax(dim=1)[superpoints]

    def predict_by_feat_panoptic(self, out, superpoints):
        """-> (semantic [N], instance [N]): stuff points keep their stuff class (index in
        ``stuff_classes``) as both; instances (score > pan_score_thr, > npoint_thr points),
        painted in ascending score order, get ids ``n_stuff ..`` and class ``label + n_stuff``."""
        cfg = self.test_cfg
        sem_map = self.predict_by_feat_semantic(out, superpoints, cfg.stuff_classes)
        masks, labels, scores = self.predict_by_feat_instance(out, superpoints, cfg.pan_score_thr)
        if masks.shape[0] == 0:
            return sem_map, sem_map
        scores, order = scores.sort()
        labels, masks = labels[order], masks[order]
        n_stuff = len(cfg.stuff_classes)
        ids = torch.arange(n_stuff, masks.shape[0] + n_stuff, device=masks.device).view(-1, 1)
        inst_map, winner = (ids * masks).max(0)
        thing_sem = labels[winner] + n_stuff
        inst_map = self._drop_small(inst_map, masks.shape[0] + n_stuff, cfg.npoint_thr)
        is_thing = inst_map != 0
        thing_sem = torch.where(is_thing, thing_sem, torch.zeros_like(thing_sem))
        sem_map = torch.where(is_thing, torch.zeros_like(sem_map), sem_map)
        return sem_map + thing_sem, sem_map + inst_map
