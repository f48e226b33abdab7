"""InfluencerFormer3D detectors (S3DISOneFormer3D, ScanNetOneFormer3D), their unified / semantic
criteria, Det3DDataPreprocessor_, SparseMatcher, matrix NMS and OneFormer3D checkpoint loading.

Tiny models and tiny synthetic rooms on the CPU; data samples are built directly."""
import json
import os
from collections import OrderedDict

import numpy as np
import pytest
import torch

pytest.importorskip('spconv.pytorch')

from mmdet3d.registry import MODELS  # noqa: E402
from mmdet3d.structures import Det3DDataSample, PointData  # noqa: E402
from mmengine.registry import DefaultScope  # noqa: E402
from mmengine.structures import InstanceData  # noqa: E402

import influencerformer3d  # noqa: E402,F401
from influencerformer3d.checkpoint import (  # noqa: E402
    load_oneformer3d_checkpoint, to_spconv1_layout)
from influencerformer3d.models import HungarianInstanceCriterion  # noqa: E402
from influencer_core.matching import sparse_match  # noqa: E402
from influencerformer3d.models.mask_matrix_nms import mask_matrix_nms  # noqa: E402
from influencerformer3d.structures import LooseInstanceData  # noqa: E402
from tests import DATA  # noqa: E402

KEYS = os.path.join(DATA, 'checkpoint_keys')


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: intra-op threads only add synchronisation (tens of ms per op on a busy
    2-core host)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(cfg):
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        return MODELS.build(cfg)


COSTS = [dict(type='QueryClassificationCost', weight=0.5), dict(type='MaskBCECost', weight=1.0),
         dict(type='MaskDiceCost', weight=1.0)]


# --------------------------------------------------------------------------- upstream configs
# Model settings of OneFormer3D's configs/oneformer3d_1xb2_s3dis-area-5.py and
# configs/oneformer3d_1xb4_scannet.py.
def upstream_s3dis():
    c, n = 64, 13
    return dict(
        type='S3DISOneFormer3D', data_preprocessor=dict(type='Det3DDataPreprocessor'),
        in_channels=6, num_channels=c, voxel_size=0.05, num_classes=n, min_spatial_shape=128,
        backbone=dict(type='SpConvUNet', num_planes=[c * (i + 1) for i in range(5)],
                      return_blocks=True),
        decoder=dict(type='QueryDecoder', num_layers=3, num_classes=n, num_instance_queries=400,
                     num_semantic_queries=n, num_instance_classes=n, in_channels=c, d_model=256,
                     num_heads=8, hidden_dim=1024, dropout=0.0, activation_fn='gelu',
                     iter_pred=True, attn_mask=True, fix_attention=True, objectness_flag=True),
        criterion=dict(
            type='S3DISUnifiedCriterion', num_semantic_classes=n,
            sem_criterion=dict(type='S3DISSemanticCriterion', loss_weight=5.0),
            inst_criterion=dict(type='InstanceCriterion',
                                matcher=dict(type='HungarianMatcher', costs=COSTS),
                                loss_weight=[0.5, 1.0, 1.0, 0.5], num_classes=n,
                                non_object_weight=0.05, fix_dice_loss_weight=True,
                                iter_matcher=True, fix_mean_loss=True)),
        train_cfg=dict(),
        test_cfg=dict(topk_insts=450, inst_score_thr=0.0, pan_score_thr=0.4, npoint_thr=300,
                      obj_normalization=True, obj_normalization_thr=0.01, sp_score_thr=0.15,
                      nms=True, matrix_nms_kernel='linear', num_sem_cls=n,
                      stuff_cls=[0, 1, 2, 3, 4, 5, 6, 12], thing_cls=[7, 8, 9, 10, 11]))


def upstream_scannet():
    c = 32
    return dict(
        type='ScanNetOneFormer3D', data_preprocessor=dict(type='Det3DDataPreprocessor_'),
        in_channels=6, num_channels=c, voxel_size=0.02, num_classes=18, min_spatial_shape=128,
        query_thr=0.5,
        backbone=dict(type='SpConvUNet', num_planes=[c * (i + 1) for i in range(5)],
                      return_blocks=True),
        decoder=dict(type='ScanNetQueryDecoder', num_layers=6, num_instance_queries=0,
                     num_semantic_queries=0, num_instance_classes=18, num_semantic_classes=20,
                     num_semantic_linears=1, in_channels=32, d_model=256, num_heads=8,
                     hidden_dim=1024, dropout=0.0, activation_fn='gelu', iter_pred=True,
                     attn_mask=True, fix_attention=True, objectness_flag=False),
        criterion=dict(
            type='ScanNetUnifiedCriterion', num_semantic_classes=20,
            sem_criterion=dict(type='ScanNetSemanticCriterion', ignore_index=20, loss_weight=0.2),
            inst_criterion=dict(type='InstanceCriterion',
                                matcher=dict(type='SparseMatcher', costs=COSTS, topk=1),
                                loss_weight=[0.5, 1.0, 1.0, 0.5], num_classes=18,
                                non_object_weight=0.1, fix_dice_loss_weight=True,
                                iter_matcher=True, fix_mean_loss=True)),
        train_cfg=dict(),
        test_cfg=dict(topk_insts=600, inst_score_thr=0.0, pan_score_thr=0.5, npoint_thr=100,
                      obj_normalization=True, sp_score_thr=0.4, nms=True,
                      matrix_nms_kernel='linear', stuff_classes=[0, 1]))


# --------------------------------------------------------------------------- tiny configs
C_SEM = 4            # semantic classes 0 floor, 1 wall (stuff), 2, 3 (things); 4 = unlabelled
VOXEL = 0.1


def inst_criterion(kind, num_classes, sparse=False):
    if kind == 'influencer':
        return dict(type='InfluencerCriterion', num_classes=num_classes, loss_weight=[0.5, 1.0],
                    non_object_weight=0.05)
    matcher = dict(type='SparseMatcher', costs=COSTS, topk=1) if sparse else \
        dict(type='HungarianMatcher', costs=COSTS)
    return dict(type='InstanceCriterion', matcher=matcher, loss_weight=[0.5, 1.0, 1.0, 0.5],
                num_classes=num_classes, non_object_weight=0.05, fix_dice_loss_weight=True,
                iter_matcher=True, fix_mean_loss=True)


def tiny_decoder(**kw):
    d = dict(num_layers=2, in_channels=8, d_model=16, num_heads=2, hidden_dim=32, dropout=0.0,
             activation_fn='gelu', iter_pred=True, attn_mask=True, fix_attention=True)
    d.update(kw)
    return d


def tiny_s3dis(kind='hungarian', **test_cfg):
    cfg = dict(
        type='S3DISOneFormer3D', data_preprocessor=dict(type='Det3DDataPreprocessor'),
        in_channels=6, num_channels=8, voxel_size=VOXEL, num_classes=C_SEM, min_spatial_shape=16,
        backbone=dict(type='SpConvUNet', num_planes=[8, 16], return_blocks=True),
        decoder=dict(type='QueryDecoder', num_classes=C_SEM, num_instance_queries=6,
                     num_semantic_queries=C_SEM, num_instance_classes=C_SEM,
                     objectness_flag=True, **tiny_decoder()),
        criterion=dict(type='S3DISUnifiedCriterion', num_semantic_classes=C_SEM,
                       sem_criterion=dict(type='S3DISSemanticCriterion', loss_weight=5.0),
                       inst_criterion=inst_criterion(kind, C_SEM)),
        train_cfg=dict(),
        test_cfg=dict(topk_insts=20, inst_score_thr=0.0, pan_score_thr=0.4, npoint_thr=2,
                      obj_normalization=True, obj_normalization_thr=0.01, sp_score_thr=0.15,
                      nms=True, matrix_nms_kernel='linear', num_sem_cls=C_SEM, stuff_cls=[0, 1],
                      thing_cls=[2, 3]))
    cfg['test_cfg'].update(test_cfg)
    return cfg


N_INST_CLS = 2       # ScanNet-style: instance label = semantic class - 2


def tiny_scannet(kind='hungarian', **test_cfg):
    cfg = dict(
        type='ScanNetOneFormer3D', data_preprocessor=dict(type='Det3DDataPreprocessor_'),
        in_channels=6, num_channels=8, voxel_size=VOXEL, num_classes=N_INST_CLS,
        min_spatial_shape=16, query_thr=0.5,
        backbone=dict(type='SpConvUNet', num_planes=[8, 16], return_blocks=True),
        decoder=dict(type='ScanNetQueryDecoder', num_instance_queries=0, num_semantic_queries=0,
                     num_instance_classes=N_INST_CLS, num_semantic_classes=C_SEM,
                     num_semantic_linears=1, objectness_flag=False, **tiny_decoder()),
        criterion=dict(type='ScanNetUnifiedCriterion', num_semantic_classes=C_SEM,
                       sem_criterion=dict(type='ScanNetSemanticCriterion', ignore_index=C_SEM,
                                          loss_weight=0.2),
                       inst_criterion=inst_criterion(kind, N_INST_CLS, sparse=True)),
        train_cfg=dict(),
        test_cfg=dict(topk_insts=20, inst_score_thr=0.0, pan_score_thr=0.5, npoint_thr=2,
                      obj_normalization=True, sp_score_thr=0.4, nms=True,
                      matrix_nms_kernel='linear', stuff_classes=[0, 1]))
    cfg['test_cfg'].update(test_cfg)
    return cfg


# --------------------------------------------------------------------------- tiny rooms
BOXES = [((2, 4), (2, 4), (1, 3), 2), ((4, 6), (4, 8), (1, 3), 3), ((6, 8), (0, 2), (1, 2), 2)]


def make_scene(seed, grid=(8, 8, 4), pts_per_voxel=2, fill=0.6, offset=(1.0, 2.0, 0.5)):
    """A room of voxel-aligned parts: floor (class 0) and a wall (1) as stuff, three boxes
    (classes 2, 3, 2) as instances 0..2, the rest unlabelled (4, instance -1). Every label is
    constant inside a voxel, so voxel ground truth equals point ground truth.

    Returns points [N, 6] (xyz, colour in [-1, 1]; shuffled), sem [N], inst [N], voxel [N, 3].
    """
    g = torch.Generator().manual_seed(seed)
    axes = [torch.arange(n) for n in grid]
    vox = torch.stack(torch.meshgrid(*axes, indexing='ij'), -1).reshape(-1, 3)
    sem = torch.full((len(vox),), C_SEM)
    inst = torch.full((len(vox),), -1)
    sem[vox[:, 2] == 0] = 0
    sem[(vox[:, 0] == 0) & (vox[:, 2] > 0)] = 1
    for j, (xr, yr, zr, c) in enumerate(BOXES):
        inside = torch.ones(len(vox), dtype=torch.bool)
        for a, (lo, hi) in enumerate((xr, yr, zr)):
            inside &= (vox[:, a] >= lo) & (vox[:, a] < hi)
        sem[inside] = c
        inst[inside] = j
    keep = (sem < C_SEM) | (torch.rand(len(vox), generator=g) < fill)
    vox, sem, inst = vox[keep], sem[keep], inst[keep]
    vox = vox.repeat_interleave(pts_per_voxel, 0)
    sem = sem.repeat_interleave(pts_per_voxel)
    inst = inst.repeat_interleave(pts_per_voxel)
    u = 0.25 + 0.55 * torch.rand(len(vox), 3, generator=g)
    u[0] = 0.2  # the (0, 0, 0) voxel comes first: the scene minimum sits at u = 0.2
    xyz = (vox + u) * VOXEL + torch.tensor(offset)
    colour = 2 * torch.rand(len(vox), 3, generator=g) - 1
    perm = torch.randperm(len(vox), generator=g)
    points = torch.cat([xyz, colour], 1)[perm]
    return points, sem[perm], inst[perm], vox[perm]


def superpoints_of(sem, inst, vox):
    """Superpoints: 2x2x2 voxel blocks split by label (never mix labels) -> [N] ids 0..S-1."""
    key = torch.cat([sem[:, None], inst[:, None] + 1, vox // 2], 1)
    return torch.unique(key, dim=0, return_inverse=True)[1]


def s3dis_sample(sem, inst):
    ds = Det3DDataSample()
    ds.gt_pts_seg = PointData(pts_semantic_mask=sem.clone(), pts_instance_mask=inst.clone())
    labels = torch.tensor([c for (_, _, _, c) in BOXES])
    ds.gt_instances_3d = InstanceData(labels_3d=labels)
    return ds


def scannet_gt(sem, inst, sp):
    """AddSuperPointAnnotations-style targets: sp_masks [K + C + 1, S], labels_3d [K + C + 1]."""
    s = int(sp.max()) + 1
    k = int(inst.max()) + 1
    sp_inst = torch.full((s,), -1).scatter_(0, sp, inst)    # labels are constant per superpoint
    sp_sem = torch.zeros(s, dtype=torch.long).scatter_(0, sp, sem)
    inst_rows = sp_inst[None] == torch.arange(k)[:, None]
    sem_rows = sp_sem[None] == torch.arange(C_SEM + 1)[:, None]
    labels = torch.tensor([c - 2 for (_, _, _, c) in BOXES] + [0] * (C_SEM + 1))
    return torch.cat([inst_rows, sem_rows]), labels, sp_inst, sp_sem


def scannet_sample(sem, inst, vox):
    sp = superpoints_of(sem, inst, vox)
    sp_masks, labels, _, _ = scannet_gt(sem, inst, sp)
    ds = Det3DDataSample()
    ds.gt_pts_seg = PointData(pts_semantic_mask=sem.clone(), pts_instance_mask=inst.clone(),
                              sp_pts_mask=sp)
    ds.gt_instances_3d = InstanceData(labels_3d=labels, sp_masks=sp_masks)
    return ds


def batch(dataset, seeds=(0, 1), elastic=False):
    points, samples, elastic_coords = [], [], []
    for seed in seeds:
        p, sem, inst, vox = make_scene(seed)
        points.append(p)
        samples.append(s3dis_sample(sem, inst) if dataset == 's3dis' else
                       scannet_sample(sem, inst, vox))
        elastic_coords.append(p[:, :3] / VOXEL + 0.3 * torch.randn(len(p), 3))
    inputs = dict(points=points)
    if elastic:
        inputs['elastic_coords'] = elastic_coords
    return inputs, samples


def total(losses):
    return sum(v for k, v in losses.items() if 'loss' in k)


# =========================================================================== tests
def test_registry_names():
    for name in ('S3DISOneFormer3D', 'ScanNetOneFormer3D', 'S3DISUnifiedCriterion',
                 'S3DISSemanticCriterion', 'ScanNetUnifiedCriterion', 'ScanNetSemanticCriterion',
                 'InstanceCriterion', 'InfluencerCriterion', 'Det3DDataPreprocessor_'):
        assert MODELS.get(name) is not None, name


@pytest.mark.parametrize('cfg_fn,keys_file', [(upstream_s3dis, 'of3d_s3dis_keys.json'),
                                              (upstream_scannet, 'of3d_scannet_keys.json')])
def test_state_dict_matches_upstream(cfg_fn, keys_file):
    with open(os.path.join(KEYS, keys_file)) as f:
        ref = json.load(f)
    model = build(cfg_fn())
    ours = OrderedDict((k, list(v.shape)) for k, v in model.state_dict().items())
    assert sorted(set(ref) ^ set(ours)) == []
    assert ours == ref
    assert list(ours) == list(ref)  # same registration order as upstream


@pytest.mark.parametrize('dataset', ['s3dis', 'scannet'])
@pytest.mark.parametrize('kind', ['hungarian', 'influencer'])
def test_loss_forward_backward(dataset, kind):
    torch.manual_seed(0)
    model = build(tiny_s3dis(kind) if dataset == 's3dis' else tiny_scannet(kind))
    model.train()
    inputs, samples = batch(dataset, elastic=dataset == 'scannet')
    losses = model(inputs, samples, mode='loss')
    if dataset == 's3dis':
        assert set(losses) == {'inst_loss', 'last_layer_seg_loss', 'layer_0_seg_loss',
                               'layer_1_seg_loss'}
    else:
        assert set(losses) == {'inst_loss', 'seg_loss'}
    loss = total(losses)
    assert torch.isfinite(loss) and loss > 0
    # the criterion's time rides along with the log variables (read after the step), once
    _, log_vars = model.parse_losses(losses)
    assert set(log_vars) == {'loss', *losses, 'criterion_time'}
    assert 0 < float(log_vars['criterion_time']) < 60
    assert 'criterion_time' not in model.parse_losses(losses)[1]
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is None or torch.isfinite(g).all() for g in grads.values())
    assert grads['input_conv.0.weight'] is not None and grads['input_conv.0.weight'].abs().sum() > 0
    unet = [g.abs().sum() for n, g in grads.items() if n.startswith('unet.') and g is not None]
    assert unet and sum(unet) > 0
    assert grads['decoder.out_cls.2.weight'].abs().sum() > 0
    # the data samples are left as they were
    sp = samples[0].gt_pts_seg.get('sp_pts_mask', None)
    assert sp is None or int(sp.min()) == 0


def test_data_preprocessor_passes_elastic_coords_cpu():
    model = build(tiny_scannet())
    inputs, samples = batch('scannet', elastic=True)
    data = dict(inputs=inputs, data_samples=samples)
    out = model.data_preprocessor(data, True)
    assert set(out['inputs']) == {'points', 'elastic_coords'}
    for a, b in zip(out['inputs']['elastic_coords'], inputs['elastic_coords']):
        assert torch.equal(a, b)
    losses = model(**out, mode='loss')
    assert torch.isfinite(total(losses))
    plain = model.data_preprocessor(dict(inputs=dict(points=inputs['points']),
                                         data_samples=samples), False)
    assert set(plain['inputs']) == {'points'}


def test_scannet_query_selection():
    """query_thr: Q_i in [thr * S_i, S_i]; query_masks = the selected columns of sp_masks; the
    semantic criterion's targets are the last C + 1 rows."""
    model = build(tiny_scannet())
    seen = {}

    def record(pred, insts):
        seen['q'] = [c.shape[0] for c in pred['cls_preds']]
        seen['insts'] = insts
        return {'inst_loss': sum(m.sum() for m in pred['masks']) * 0}

    model.criterion.inst_criterion = record
    inputs, samples = batch('scannet')
    torch.manual_seed(3)
    model(inputs, samples, mode='loss')
    for q, gt, ds in zip(seen['q'], seen['insts'], samples):
        s = ds.gt_instances_3d.sp_masks.shape[1]
        assert 0.5 * s - 1 <= q <= s
        assert gt.query_masks.shape == (len(BOXES), q)
        assert gt.sp_masks.shape == (len(BOXES), s)
        cols = [int(torch.nonzero((gt.sp_masks.T == col).all(1))[0]) for col in gt.query_masks.T]
        assert all(torch.equal(gt.sp_masks[:, c], col) for c, col in zip(cols, gt.query_masks.T))


def test_s3dis_unified_criterion_splits_queries_without_mutating():
    crit = build(dict(type='S3DISUnifiedCriterion', num_semantic_classes=C_SEM,
                      sem_criterion=dict(type='S3DISSemanticCriterion', loss_weight=5.0),
                      inst_criterion=inst_criterion('hungarian', C_SEM)))
    g = torch.Generator().manual_seed(0)
    v, q = 30, 6 + C_SEM

    def layer():
        return dict(cls_preds=[torch.randn(q, C_SEM + 1, generator=g)],
                    scores=[torch.rand(q, 1, generator=g)], masks=[torch.randn(q, v, generator=g)])

    pred = layer()
    pred['aux_outputs'] = [layer(), layer()]
    gt = LooseInstanceData()
    owner = torch.randint(0, 4, (v,), generator=g)
    gt.labels_3d = torch.tensor([2, 3, 2])
    gt.sp_inst_masks = torch.stack([owner == j for j in range(3)])
    sem = torch.randint(0, C_SEM + 1, (v,), generator=g)
    gt.sp_sem_masks = sem[None] == torch.arange(C_SEM + 1)[:, None]
    sizes = [m.shape[0] for m in pred['masks']] + [a['masks'][0].shape[0] for a in pred['aux_outputs']]
    loss = crit(pred, [gt])
    assert sizes == [m.shape[0] for m in pred['masks']] + \
        [a['masks'][0].shape[0] for a in pred['aux_outputs']] == [q] * 3
    # reference: the instance criterion on the first 6 queries, sigmoid CE on the last C_SEM
    inst_only = {k: [t[:-C_SEM] for t in pred[k]] for k in ('cls_preds', 'scores', 'masks')}
    inst_only['aux_outputs'] = [{k: [t[:-C_SEM] for t in a[k]] for k in ('cls_preds', 'scores', 'masks')}
                                for a in pred['aux_outputs']]
    ref_inst = HungarianInstanceCriterion(matcher=dict(type='HungarianMatcher', costs=COSTS),
                                          loss_weight=[0.5, 1.0, 1.0, 0.5], non_object_weight=0.05,
                                          num_classes=C_SEM, fix_dice_loss_weight=True,
                                          iter_matcher=True, fix_mean_loss=True)(inst_only, [{
                                              'labels_3d': gt.labels_3d, 'sp_masks': gt.sp_inst_masks}])
    assert torch.allclose(loss['inst_loss'], ref_inst['inst_loss'])
    target = torch.nn.functional.one_hot(sem, C_SEM + 1)[:, :C_SEM].float()  # class C_SEM -> zeros
    for key, layer_ in [('last_layer_seg_loss', pred)] + \
            [(f'layer_{i}_seg_loss', a) for i, a in enumerate(pred['aux_outputs'])]:
        logits = layer_['masks'][0][-C_SEM:].T
        ref = 5.0 * torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        assert torch.allclose(loss[key], ref, atol=1e-6), key


def test_scannet_semantic_criterion_reference():
    crit = build(dict(type='ScanNetSemanticCriterion', ignore_index=C_SEM, loss_weight=0.2))
    g = torch.Generator().manual_seed(1)
    preds, gts, refs = [], [], []
    for q in (7, 5):
        logits = torch.randn(q, C_SEM + 1, generator=g)
        cls = torch.randint(0, C_SEM + 1, (q,), generator=g)
        cls[0] = 0
        preds.append(logits)
        gts.append({'sp_masks': cls[None] == torch.arange(C_SEM + 1)[:, None]})
        refs.append(torch.nn.functional.cross_entropy(logits[:, :-1], cls, ignore_index=C_SEM))
    out = crit({'sem_preds': preds}, gts)
    assert torch.allclose(out['seg_loss'], 0.2 * torch.stack(refs).mean())
    # a scene with only ignored targets contributes 0, not NaN
    out = crit({'sem_preds': preds[:1]}, [{'sp_masks': torch.zeros(C_SEM + 1, 7, dtype=torch.bool)
                                           .index_fill_(0, torch.tensor([C_SEM]), True)}])
    assert out['seg_loss'] == 0


def test_s3dis_voxel_targets():
    """Voxel targets from point labels. Semantic: majority (else the unlabelled row). Instance:
    upstream averages the integer one-hot with torch_scatter, which floor-divides, so a voxel
    belongs to an instance only if all its points do; 'majority' is the opt-in alternative."""
    cls = MODELS.get('S3DISOneFormer3D')
    vox = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3])
    inst = torch.tensor([0, 0, 0, 0, -1, 1, 1, -1, -1])
    sem = torch.tensor([2, 2, 3, 1, 1, 0, 3, 4, 4])
    assert cls.get_gt_inst_masks(inst, vox).tolist() == [[True, False, False, False],
                                                         [False, False, False, False]]
    assert cls.get_gt_inst_masks(inst, vox, 'majority').tolist() == [[True, False, False, False],
                                                                     [False, False, True, False]]
    sem_masks = cls.get_gt_semantic_masks(sem, vox, C_SEM)
    assert sem_masks.shape == (C_SEM + 1, 4)
    assert sem_masks.float().argmax(0).tolist() == [2, 1, C_SEM, C_SEM]
    assert cls.get_gt_inst_masks(torch.full((4,), -1), torch.arange(4)).shape == (0, 4)
    model = build(tiny_s3dis())
    model.train_cfg = dict(gt_inst_mask_rule='majority')
    p, s, i, _ = make_scene(0)
    assert torch.isfinite(total(model(dict(points=[p]), [s3dis_sample(s, i)], mode='loss')))
    model.train_cfg = dict(gt_inst_mask_rule='bogus')
    with pytest.raises(ValueError, match='gt_inst_mask_rule'):
        model(dict(points=[p]), [s3dis_sample(s, i)], mode='loss')


def test_training_steps_lower_loss():
    torch.manual_seed(0)
    model = build(tiny_s3dis('hungarian'))
    model.train()
    inputs, samples = batch('s3dis', seeds=(0,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for _ in range(8):
        loss = total(model(inputs, samples, mode='loss'))
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    assert all(np.isfinite(history))
    assert min(history[-3:]) < 0.8 * history[0], history


def _check_pred_format(sample, n_points, num_classes):
    pred = sample.pred_pts_seg
    sem, pan_sem = pred.pts_semantic_mask
    inst, pan_inst = pred.pts_instance_mask
    assert isinstance(inst, np.ndarray) and inst.dtype == np.bool_
    assert inst.ndim == 2 and inst.shape[1] == n_points
    for arr in (sem, pan_sem, pan_inst):
        assert isinstance(arr, np.ndarray) and arr.shape == (n_points,)
    assert pred.instance_labels.shape == pred.instance_scores.shape == (inst.shape[0],)
    assert ((pred.instance_labels >= 0) & (pred.instance_labels < num_classes)).all()
    return pred


@pytest.mark.parametrize('dataset', ['s3dis', 'scannet'])
def test_predict_format(dataset):
    torch.manual_seed(0)
    model = build(tiny_s3dis() if dataset == 's3dis' else tiny_scannet())
    model.eval()
    inputs, samples = batch(dataset)
    out = model(inputs, samples, mode='predict')
    assert out is samples
    for p, s in zip(inputs['points'], out):
        pred = _check_pred_format(s, len(p), model.num_classes)
        assert pred.instance_scores.dtype == np.float32
    # random weights give candidates once the thresholds are off
    model.test_cfg.update(npoint_thr=0, sp_score_thr=0.0)
    out = model.predict(inputs, samples)
    assert out[0].pred_pts_seg.pts_instance_mask[0].shape[0] > 0
    # decoder outputs in tensor mode
    raw = model(inputs, samples, mode='tensor')
    assert len(raw['masks']) == 2 and 'aux_outputs' in raw


def test_predict_needs_test_cfg_keys():
    model = build(tiny_s3dis())
    model.eval()
    del model.test_cfg['num_sem_cls']
    inputs, samples = batch('s3dis', seeds=(0,))
    with pytest.raises(KeyError, match='num_sem_cls'):
        model.predict(inputs, samples)


# --------------------------------------------------------------------------- matrix NMS
def _reference_matrix_nms(masks, labels, scores, kernel, sigma=2.0):
    """Matrix NMS written out per pair: decay of mask j = min over higher-scored masks i of the
    same label of f(iou_ij) / f(max IoU of i with masks scored above i); sorted output."""
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    m = masks[order].double()
    lab = labels[order].tolist()
    sc = scores[order].double()
    area = m.sum(1)
    n = len(order)
    iou = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if lab[i] == lab[j]:
                inter = float((m[i] * m[j]).sum())
                iou[i][j] = inter / (float(area[i] + area[j]) - inter)
    comp = [max([iou[k][i] for k in range(i)] + [0.0]) for i in range(n)]

    def f(x):
        return np.exp(-sigma * x * x) if kernel == 'gaussian' else 1 - x

    out = []
    for j in range(n):
        decay = min([f(iou[i][j]) / f(comp[i]) for i in range(j)] + [1.0]) if j else 1.0
        out.append(float(sc[j]) * decay)
    return sorted(out, reverse=True)


def test_matrix_nms_decays_duplicate_mask():
    base = torch.tensor([0.99, 0.99, 0.98, 0.01, 0.0, 0.0])
    other = torch.tensor([0.0, 0.0, 0.1, 0.9, 0.9, 0.8])
    masks = torch.stack([base, base, other, base])  # mask 1 duplicates mask 0 at a lower score
    labels = torch.tensor([1, 1, 1, 2])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    for kernel in ('linear', 'gaussian'):
        s, l, m, keep = mask_matrix_nms(masks, labels, scores, kernel=kernel)
        new = dict(zip(keep.tolist(), s.tolist()))
        assert new[0] == pytest.approx(0.9)                 # the best mask is kept as is
        assert new[1] < (0.1 if kernel == 'linear' else 0.2) * 0.8  # its duplicate is decayed
        assert new[2] > 0.6                                 # a different mask barely
        assert new[3] == pytest.approx(0.6)                 # another label: untouched
        assert m.shape == (4, 6) and torch.equal(m, masks[keep])
        assert torch.equal(l, labels[keep])
        assert s.tolist() == sorted(s.tolist(), reverse=True)
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(12, 40, generator=g)
    labels = torch.randint(0, 3, (12,), generator=g)
    scores = torch.rand(12, generator=g)
    for kernel in ('linear', 'gaussian'):
        s, _, _, _ = mask_matrix_nms(masks, labels, scores, kernel=kernel)
        assert np.allclose(s.double().numpy(), _reference_matrix_nms(masks, labels, scores, kernel),
                           atol=1e-5)
    s, l, m, keep = mask_matrix_nms(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long), torch.zeros(0))
    assert m.shape == (0, 5) and s.shape == l.shape == keep.shape == (0,)


# --------------------------------------------------------------------------- perfect decoders
class _Stub(torch.nn.Module):
    """Decoder replacement returning a fixed prediction built from the scene's features."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, queries=None):
        return self.fn(x)


def _voxel_labels(model, points, sem, inst):
    coords, _, inverse, _ = model.collate([points])
    vid = model._local_voxel_ids(coords, inverse, [len(points)], 1)[0]
    v = int(vid.max()) + 1
    return (torch.zeros(v, dtype=torch.long).scatter_(0, vid, sem),
            torch.full((v,), -1).scatter_(0, vid, inst))


def _assert_instances_equal(pred, inst, labels_by_inst, k):
    masks = pred.pts_instance_mask[0]
    assert masks.shape[0] == k
    found = []
    for m, lab in zip(masks, pred.instance_labels):
        ids = np.unique(inst.numpy()[m])
        assert len(ids) == 1 and ids[0] >= 0
        assert np.array_equal(m, inst.numpy() == ids[0])
        assert lab == labels_by_inst[ids[0]]
        found.append(ids[0])
    assert sorted(found) == list(range(k))
    assert (pred.instance_scores > 0.9).all()


def test_s3dis_predict_perfect_decoder_returns_gt():
    model = build(tiny_s3dis(inst_score_thr=0.1))
    model.eval()
    points, sem, inst, _ = make_scene(5)
    sem_v, inst_v = _voxel_labels(model, points, sem, inst)
    labels = [c for (_, _, _, c) in BOXES]
    k, q_inst = len(BOXES), 6

    def perfect(x):
        assert len(x) == 1 and x[0].shape[0] == len(sem_v)
        cls = torch.zeros(q_inst + C_SEM, C_SEM + 1)
        masks = torch.full((q_inst + C_SEM, len(sem_v)), -10.0)
        scores = torch.zeros(q_inst + C_SEM, 1)
        for j in range(q_inst):
            if j < k:
                cls[j, labels[j]] = 10
                masks[j] = torch.where(inst_v == j, 10.0, -10.0)
                scores[j] = 1
            else:
                cls[j, C_SEM] = 10
        for c in range(C_SEM):
            masks[q_inst + c] = torch.where(sem_v == c, 10.0, -10.0)
        return dict(cls_preds=[cls], masks=[masks], scores=[scores])

    model.decoder = _Stub(perfect)
    sample = model.predict(dict(points=[points]), [s3dis_sample(sem, inst)])[0]
    pred = _check_pred_format(sample, len(points), C_SEM)
    _assert_instances_equal(pred, inst, labels, k)
    sem_pred, pan_sem = pred.pts_semantic_mask
    labelled = sem.numpy() < C_SEM
    assert np.array_equal(sem_pred[labelled], sem.numpy()[labelled])
    stuff = sem.numpy() <= 1
    pan_inst = pred.pts_instance_mask[1]
    assert np.array_equal(pan_sem[stuff], sem.numpy()[stuff])
    assert np.array_equal(pan_inst[stuff], sem.numpy()[stuff])  # index in stuff_cls = [0, 1]
    # things: upstream numbers the instances 0.. in ascending score order and id 0 means "none",
    # so the lowest-scored instance is not painted; the others get ids >= len(stuff_cls)
    painted = []
    for j in range(k):
        ids = np.unique(pan_inst[inst.numpy() == j])
        assert len(ids) == 1
        if ids[0] >= 2:
            painted.append(ids[0])
            assert (pan_sem[inst.numpy() == j] == labels[j]).all()
    assert len(painted) == k - 1 and len(set(painted)) == k - 1


def test_scannet_predict_perfect_decoder_returns_gt():
    model = build(tiny_scannet(inst_score_thr=0.1))
    model.eval()
    points, sem, inst, vox = make_scene(6)
    sample = scannet_sample(sem, inst, vox)
    sp = sample.gt_pts_seg.sp_pts_mask
    _, _, sp_inst, sp_sem = scannet_gt(sem, inst, sp)
    s = len(sp_inst)
    k = len(BOXES)
    inst_labels = [c - 2 for (_, _, _, c) in BOXES]

    def perfect(x):
        assert len(x) == 1 and x[0].shape[0] == s
        cls = torch.zeros(s, N_INST_CLS + 1)
        cls[:, N_INST_CLS] = 10
        masks = torch.full((s, s), -10.0)
        for j in range(k):
            q = int(torch.nonzero(sp_inst == j)[0])
            cls[q] = 0
            cls[q, inst_labels[j]] = 10
            masks[q] = torch.where(sp_inst == j, 10.0, -10.0)
        sem_preds = torch.nn.functional.one_hot(sp_sem, C_SEM + 1).float() * 10
        return dict(cls_preds=[cls], masks=[masks], scores=[None], sem_preds=[sem_preds])

    model.decoder = _Stub(perfect)
    out = model.predict(dict(points=[points]), [sample])[0]
    pred = _check_pred_format(out, len(points), N_INST_CLS)
    _assert_instances_equal(pred, inst, inst_labels, k)
    sem_pred, pan_sem = pred.pts_semantic_mask
    labelled = sem.numpy() < C_SEM
    assert np.array_equal(sem_pred[labelled], sem.numpy()[labelled])
    pan_inst = pred.pts_instance_mask[1]
    stuff = sem.numpy() <= 1
    assert np.array_equal(pan_sem[stuff], sem.numpy()[stuff])
    assert np.array_equal(pan_inst[stuff], sem.numpy()[stuff])
    ids = set()
    for j in range(k):
        pts = inst.numpy() == j
        uniq = np.unique(pan_inst[pts])
        assert len(uniq) == 1 and uniq[0] >= 2
        ids.add(int(uniq[0]))
        assert (pan_sem[pts] == inst_labels[j] + 2).all()  # label + number of stuff classes
    assert ids == {2, 3, 4}
    # the data sample's superpoint ids are not shifted (upstream adds batch offsets in place)
    assert torch.equal(out.gt_pts_seg.sp_pts_mask, sp)


def test_predict_batch_of_two_projects_each_scene():
    model = build(tiny_s3dis(npoint_thr=0, sp_score_thr=0.0))
    model.eval()
    inputs, samples = batch('s3dis')
    single = [model.predict(dict(points=[p]), [s3dis_sample(*make_scene(seed)[1:3])])[0]
              for p, seed in zip(inputs['points'], (0, 1))]
    both = model.predict(inputs, samples)
    for a, b in zip(single, both):
        pa, pb = a.pred_pts_seg, b.pred_pts_seg
        assert np.array_equal(pa.pts_semantic_mask[0], pb.pts_semantic_mask[0])
        assert pa.pts_instance_mask[0].shape == pb.pts_instance_mask[0].shape


# --------------------------------------------------------------------------- SparseMatcher
def _reference_sparse_match(cost, query_masks, topk):
    """Per instance: the queries inside it whose cost is below its (topk+1)-th smallest cost,
    costs of queries outside it counting as 1e8."""
    q, k = cost.shape
    pairs = []
    for j in range(k):
        col = [float(cost[i, j]) if bool(query_masks[j, i]) else 1e8 for i in range(q)]
        thr = sorted(col)[topk] if q > topk else 1e8
        pairs += [(i, j) for i in range(q) if col[i] < thr]
    return sorted(pairs)


def test_sparse_matcher_matches_reference():
    g = torch.Generator().manual_seed(0)
    crit = HungarianInstanceCriterion(
        matcher=dict(type='SparseMatcher', costs=COSTS, topk=2), loss_weight=[0.5, 1.0, 1.0, 0.5],
        non_object_weight=0.1, num_classes=3, fix_dice_loss_weight=True, iter_matcher=True,
        fix_mean_loss=True)
    core = crit.core
    assert (crit.topk, core.matcher, core.class_cost, core.mask_cost) == (2, 'sparse', 0.5, 1.0)
    insts, layer = [], dict(cls_preds=[], masks=[], scores=[])
    for q, p, k in ((9, 20, 3), (4, 15, 2), (6, 10, 0)):
        owner = torch.randint(0, k + 1, (p,), generator=g)
        sp_masks = torch.stack([owner == j for j in range(k)]) if k else torch.zeros(0, p, dtype=torch.bool)
        ids = torch.randperm(p, generator=g)[:q]
        insts.append(dict(labels_3d=torch.randint(0, 3, (k,), generator=g), sp_masks=sp_masks,
                          query_masks=sp_masks[:, ids]))
        layer['cls_preds'].append(torch.randn(q, 4, generator=g))
        layer['masks'].append(torch.randn(q, p, generator=g))
        layer['scores'].append(torch.rand(q, 1, generator=g))
    from influencer_core.masks import pairwise_class_cost, pairwise_dice, pairwise_sigmoid_ce
    from influencerformer3d.models.criterion_inputs import core_outputs, core_targets
    outputs, targets = core_outputs(layer), core_targets(insts)
    indices = core.match(outputs, targets)
    for (iq, ik), cls, m, inst in zip(indices, layer['cls_preds'], layer['masks'], insts):
        t = inst['sp_masks'].float()
        if t.shape[0] == 0:
            assert iq.numel() == ik.numel() == 0
            continue
        cost = 0.5 * pairwise_class_cost(cls, inst['labels_3d']) + pairwise_sigmoid_ce(m, t) + \
            pairwise_dice(m, t)
        assert sorted(zip(iq.tolist(), ik.tolist())) == \
            _reference_sparse_match(cost, inst['query_masks'], 2)
        assert bool(inst['query_masks'][ik, iq].all())
    # scene 2 has 4 queries > topk: at most 2 per instance; the loss uses these pairs
    loss = crit(layer, insts)['inst_loss']
    ref = core.total_loss(core.layer_losses(outputs, targets, {}, 0))
    assert torch.allclose(loss, ref)
    # fewer queries than topk + 1: every allowed pair
    cost = torch.rand(2, 2, generator=g)
    qm = torch.tensor([[True, True], [False, True]])
    q_idx, k_idx = sparse_match(cost, qm, topk=2)
    assert sorted(zip(q_idx.tolist(), k_idx.tolist())) == [(0, 0), (1, 0), (1, 1)]
    with pytest.raises(KeyError, match='query_masks'):
        crit(layer, [{k: v for k, v in i.items() if k != 'query_masks'} for i in insts])


# --------------------------------------------------------------------------- checkpoints
def _tiny_model(seed):
    torch.manual_seed(seed)
    return build(tiny_s3dis())


def test_checkpoint_loading_both_spconv_layouts(tmp_path):
    src = _tiny_model(0)
    with torch.no_grad():  # non-trivial BN statistics too
        for n, b in src.named_buffers():
            if b.is_floating_point():
                b.uniform_(0.5, 1.5)
    ref = {k: v.clone() for k, v in src.state_dict().items()}
    sd = src.state_dict()
    spconv_keys = [k for k, v in sd.items() if v.dim() == 5]
    assert 'input_conv.0.weight' in spconv_keys and len(spconv_keys) > 5

    plain_v2 = {k: v.clone() for k, v in sd.items()}              # no metadata
    v1 = to_spconv1_layout(sd)                                      # fix_spconv_checkpoint.py
    v1_plain = {k: v.clone() for k, v in v1.items()}
    mmengine_file = tmp_path / 'epoch_1.pth'
    torch.save({'meta': {'epoch': 1}, 'state_dict': OrderedDict(
        (f'module.{k}', v) for k, v in v1.items())}, mmengine_file)
    saved = tmp_path / 'sd.pth'
    torch.save(sd, saved)

    # what goes wrong without the loader: mmdet3d's hook permutes spconv-2 weights w/o metadata
    with pytest.raises(RuntimeError, match='size mismatch'):
        _tiny_model(1).load_state_dict(plain_v2)

    for form in (sd, str(saved), plain_v2, v1, v1_plain, str(mmengine_file)):
        dst = _tiny_model(1)
        assert not torch.equal(dst.state_dict()['input_conv.0.weight'], ref['input_conv.0.weight'])
        result = load_oneformer3d_checkpoint(dst, form)
        assert not result.missing_keys and not result.unexpected_keys
        got = dst.state_dict()
        for k, v in ref.items():
            assert torch.equal(got[k], v), k
    # a checkpoint of another configuration: a clear error
    bad = dict(plain_v2)
    bad['input_conv.0.weight'] = torch.zeros(8, 3, 3, 3, 5)
    with pytest.raises(ValueError, match='input_conv.0.weight'):
        load_oneformer3d_checkpoint(_tiny_model(1), bad)
    # the loaded model predicts as the source model
    src.eval()
    dst.eval()
    inputs, samples = batch('s3dis', seeds=(0,))
    a = src(inputs, samples, mode='tensor')['masks'][0]
    b = dst(inputs, samples, mode='tensor')['masks'][0]
    assert torch.allclose(a, b)
