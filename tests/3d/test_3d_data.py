"""InfluencerFormer3D data pipeline, datasets and UnifiedSegMetric (OneFormer3D interfaces).

Runs OneFormer3D's S3DIS train / test pipelines on tiny synthetic rooms
(datasets/prepare_synthetic_3d.py), a ScanNet-layout folder written from synthetic points,
each transform on hand-made inputs, the missing-data errors and the metric on perfect and
degraded predictions.
"""
import os
import pickle

import numpy as np
import pytest
import torch

import influencerformer3d  # noqa: F401  (registers everything)
from influencerformer3d.data import DatasetNotPreparedError
from influencerformer3d.structures import LooseInstanceData
from influencerformer3d.evaluation import UnifiedSegMetric
from influencerformer3d.evaluation.instance_seg_eval import instance_seg_eval
from influencerformer3d.evaluation.unified_metric import s3dis_panoptic_gt
from mmdet3d.registry import DATASETS, METRICS, TRANSFORMS
from mmdet3d.structures import DepthPoints
from mmengine.registry import DefaultScope

from influencer_data import s3dis
from influencer_data import synthetic_3d as syn

NUM_POINTS = 3000
SAMPLE = 1024
DATA_PREFIX = dict(pts='points', pts_instance_mask='instance_mask',
                   pts_semantic_mask='semantic_mask')
LOAD_POINTS = dict(type='LoadPointsFromFile', coord_type='DEPTH', shift_height=False,
                   use_color=True, load_dim=6, use_dim=[0, 1, 2, 3, 4, 5])
# OneFormer3D's configs/oneformer3d_1xb2_s3dis-area-5.py pipelines (smaller PointSample_)
S3DIS_TRAIN = [
    LOAD_POINTS,
    dict(type='LoadAnnotations3D', with_label_3d=False, with_bbox_3d=False,
         with_mask_3d=True, with_seg_3d=True),
    dict(type='PointSample_', num_points=SAMPLE),
    dict(type='PointInstClassMapping_', num_classes=13),
    dict(type='RandomFlip3D', sync_2d=False, flip_ratio_bev_horizontal=0.5,
         flip_ratio_bev_vertical=0.5),
    dict(type='GlobalRotScaleTrans', rot_range=[0.0, 0.0], scale_ratio_range=[0.9, 1.1],
         translation_std=[.1, .1, .1], shift_height=False),
    dict(type='NormalizePointsColor_', color_mean=[127.5, 127.5, 127.5]),
    dict(type='Pack3DDetInputs_',
         keys=['points', 'gt_labels_3d', 'pts_semantic_mask', 'pts_instance_mask']),
]
S3DIS_TEST = [
    LOAD_POINTS,
    dict(type='LoadAnnotations3D', with_bbox_3d=False, with_label_3d=False,
         with_mask_3d=True, with_seg_3d=True),
    dict(type='MultiScaleFlipAug3D', img_scale=(1333, 800), pts_scale_ratio=1, flip=False,
         transforms=[dict(type='NormalizePointsColor_', color_mean=[127.5, 127.5, 127.5])]),
    dict(type='Pack3DDetInputs_', keys=['points']),
]
# OneFormer3D's configs/oneformer3d_1xb4_scannet.py pipelines
SCANNET_LOAD = [
    LOAD_POINTS,
    dict(type='LoadAnnotations3D_', with_bbox_3d=False, with_label_3d=False,
         with_mask_3d=True, with_seg_3d=True, with_sp_mask_3d=True),
    dict(type='PointSegClassMapping'),
]
SP_ANNS = dict(type='AddSuperPointAnnotations', num_classes=20, stuff_classes=[0, 1],
               merge_non_stuff_cls=False)
SCANNET_TRAIN = SCANNET_LOAD + [
    dict(type='RandomFlip3D', sync_2d=False, flip_ratio_bev_horizontal=0.5,
         flip_ratio_bev_vertical=0.5),
    dict(type='GlobalRotScaleTrans', rot_range=[-3.14, 3.14], scale_ratio_range=[0.8, 1.2],
         translation_std=[0.1, 0.1, 0.1], shift_height=False),
    dict(type='NormalizePointsColor_', color_mean=[127.5, 127.5, 127.5]),
    SP_ANNS,
    dict(type='ElasticTransfrom', gran=[6, 20], mag=[40, 160], voxel_size=0.02, p=0.5),
    dict(type='Pack3DDetInputs_',
         keys=['points', 'gt_labels_3d', 'pts_semantic_mask', 'pts_instance_mask',
               'sp_pts_mask', 'gt_sp_masks', 'elastic_coords']),
]
SCANNET_TEST = SCANNET_LOAD + [
    dict(type='MultiScaleFlipAug3D', img_scale=(1333, 800), pts_scale_ratio=1, flip=False,
         transforms=[dict(type='NormalizePointsColor_', color_mean=[127.5, 127.5, 127.5]),
                     SP_ANNS]),
    dict(type='Pack3DDetInputs_', keys=['points', 'sp_pts_mask']),
]
SCANNET_CLASSES = ('wall', 'floor', 'cabinet', 'bed', 'chair', 'sofa', 'table', 'door',
                   'window', 'bookshelf', 'picture', 'counter', 'desk', 'curtain',
                   'refrigerator', 'showercurtrain', 'toilet', 'sink', 'bathtub',
                   'otherfurniture')
SCANNET_VALID_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
# synthetic S3DIS class -> nyu40 id (22 ceiling, 30 whiteboard, 40 otherprop: not evaluated)
S3DIS_TO_NYU40 = np.array([22, 2, 1, 38, 38, 9, 8, 7, 5, 6, 10, 30, 40])
S3DIS_NAMES = ['ceiling', 'floor', 'wall', 'beam', 'column', 'window', 'door', 'table',
               'chair', 'sofa', 'bookcase', 'board', 'clutter', 'unlabeled']
S3DIS_STUFF = [0, 1, 2, 3, 4, 5, 6, 12]


@pytest.fixture(scope='module')
def scope():
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        yield


@pytest.fixture(scope='module')
def s3dis_root(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('synthetic_s3dis'))
    syn.generate(out, num_rooms_per_area=2, areas=(1, 5), seed=3, points=NUM_POINTS,
                 superpoints=False)
    return out


def _s3dis(root, area, pipeline, test_mode=False, **kw):
    return DATASETS.build(dict(
        type='S3DISSegDataset_', data_root=root, ann_file=f's3dis_infos_Area_{area}.pkl',
        pipeline=pipeline, filter_empty_gt=not test_mode, test_mode=test_mode,
        data_prefix=DATA_PREFIX, box_type_3d='Depth', backend_args=None, **kw))


# ----------------------------------------------------------------------------- registries
def test_names_registered():
    for name in ('PointSample_', 'PointInstClassMapping_', 'NormalizePointsColor_',
                 'Pack3DDetInputs_', 'LoadAnnotations3D_', 'ElasticTransfrom',
                 'AddSuperPointAnnotations', 'SwapChairAndFloor'):
        assert TRANSFORMS.get(name) is not None, name
    for name in ('S3DISSegDataset_', 'ScanNetSegDataset_'):
        assert DATASETS.get(name) is not None, name
    assert METRICS.get('UnifiedSegMetric') is UnifiedSegMetric


# ----------------------------------------------------------------------------- S3DIS pipelines
def test_s3dis_train_pipeline(s3dis_root, scope):
    ds = _s3dis(s3dis_root, 1, S3DIS_TRAIN)
    assert ds.metainfo['classes'][0] == 'ceiling' and len(ds.metainfo['classes']) == 13
    assert ds.metainfo['seg_valid_class_ids'] == tuple(range(13))
    np.random.seed(0)
    for idx in range(len(ds)):
        out = ds[idx]
        pts = out['inputs']['points']
        assert set(out['inputs']) == {'points'}
        assert pts.shape == (SAMPLE, 6) and pts.dtype == torch.float32
        assert pts[:, 3:].abs().max() <= 1.0 + 1e-6          # colours / 127.5 after -127.5
        sample = out['data_samples']
        assert sample.eval_ann_info is None
        assert set(sample.gt_pts_seg.keys()) == {'pts_semantic_mask', 'pts_instance_mask'}
        assert set(sample.gt_instances_3d.keys()) == {'labels_3d'}
        assert isinstance(sample.gt_instances_3d, LooseInstanceData)
        sem, inst = sample.gt_pts_seg.pts_semantic_mask, sample.gt_pts_seg.pts_instance_mask
        labels = sample.gt_instances_3d.labels_3d
        assert sem.shape == inst.shape == (SAMPLE,)
        assert sem.dtype == inst.dtype == labels.dtype == torch.int64
        assert sem.min() >= 0 and sem.max() <= 12
        k = len(labels)
        assert k > 0 and inst.min() >= 0                   # every S3DIS point is annotated
        assert torch.equal(torch.unique(inst), torch.arange(k))     # contiguous 0..K-1
        for i in range(k):                                  # label = class of its points
            assert torch.all(sem[inst == i] == labels[i])


def test_s3dis_test_pipeline(s3dis_root, scope):
    ds = _s3dis(s3dis_root, 5, S3DIS_TEST, test_mode=True)
    for idx in range(len(ds)):
        name = ds.get_data_info(idx)['lidar_points']['lidar_path']
        pts, ins, sem = s3dis.read_room(s3dis_root, os.path.basename(name)[:-4])
        out = ds[idx]
        points = out['inputs']['points']
        assert points.shape == (len(pts), 6)                # whole room, no sampling
        np.testing.assert_allclose(points[:, :3].numpy(), pts[:, :3], atol=1e-6)
        np.testing.assert_allclose(points[:, 3:].numpy(), (pts[:, 3:] - 127.5) / 127.5,
                                   atol=1e-5)
        sample = out['data_samples']
        assert len(sample.gt_pts_seg.keys()) == 0 and len(sample.gt_instances_3d.keys()) == 0
        ev = sample.eval_ann_info
        assert isinstance(ev, dict)
        np.testing.assert_array_equal(ev['pts_semantic_mask'], sem)
        np.testing.assert_array_equal(ev['pts_instance_mask'], ins)


def test_missing_data_errors(tmp_path, s3dis_root, scope):
    missing = str(tmp_path / 'nowhere')
    with pytest.raises(DatasetNotPreparedError) as err:
        _s3dis(missing, 5, S3DIS_TEST, test_mode=True)
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert f'python datasets/prepare_s3dis.py --data-root {missing}' in msg
    assert 'python datasets/prepare_synthetic_3d.py' in msg and 'does not exist' in msg
    with pytest.raises(FileNotFoundError, match='s3dis_infos_Area_3.pkl'):
        _s3dis(s3dis_root, 3, S3DIS_TEST, test_mode=True)     # root exists, area 3 does not
    with pytest.raises(FileNotFoundError, match='python datasets/prepare_scannet.py'):
        DATASETS.build(dict(type='ScanNetSegDataset_', data_root=missing,
                            ann_file='scannet_oneformer3d_infos_val.pkl',
                            pipeline=SCANNET_TEST, test_mode=True))


# ----------------------------------------------------------------------------- transforms
def _points(n, color=None):
    rng = np.random.default_rng(0)
    xyz = np.stack([np.arange(n, dtype=np.float32), rng.normal(size=n), rng.normal(size=n)], 1)
    col = rng.uniform(0, 255, (n, 3)) if color is None else color
    return DepthPoints(np.concatenate([xyz, col], 1).astype(np.float32), points_dim=6,
                       attribute_dims=dict(color=[3, 4, 5]))


def test_point_sample():
    n = 40
    inst = np.repeat([-1, 4, 9, 2], 10)
    sem = np.repeat([13, 1, 2, 3], 10)
    sp = np.repeat([7, 3, 11, 5, 20], 8)
    t = TRANSFORMS.build(dict(type='PointSample_', num_points=25))
    np.random.seed(1)
    res = t(dict(points=_points(n), pts_instance_mask=inst, pts_semantic_mask=sem,
                 sp_pts_mask=sp))
    idx = res['points'].tensor[:, 0].numpy().astype(int)     # x encodes the source index
    assert len(idx) == 25
    np.testing.assert_array_equal(res['pts_semantic_mask'], sem[idx])
    old = inst[idx]
    kept = np.unique(old[old >= 0])
    expect = np.where(old >= 0, np.searchsorted(kept, old), -1)
    np.testing.assert_array_equal(res['pts_instance_mask'], expect)
    np.testing.assert_array_equal(res['sp_pts_mask'], np.unique(sp[idx], return_inverse=True)[1])
    # fewer points than requested: N draws (with replacement, as OneFormer3D)
    res = TRANSFORMS.build(dict(type='PointSample_', num_points=100))(
        dict(points=_points(n), pts_instance_mask=inst, pts_semantic_mask=sem))
    assert len(res['points']) == n and res['pts_instance_mask'].dtype == np.int64


def test_point_inst_class_mapping():
    sem = np.array([0, 0, 13, 2, 2, 5, 13])
    inst = np.array([3, 3, 7, 1, 1, 9, 3])
    res = TRANSFORMS.build(dict(type='PointInstClassMapping_', num_classes=13))(
        dict(pts_instance_mask=inst.copy(), pts_semantic_mask=sem.copy()))
    np.testing.assert_array_equal(res['pts_instance_mask'], [1, 1, -1, 0, 0, 2, -1])
    np.testing.assert_array_equal(res['pts_semantic_mask'], [0, 0, -1, 2, 2, 5, -1])
    np.testing.assert_array_equal(res['gt_labels_3d'], [2, 0, 5])
    assert res['gt_labels_3d'].dtype == np.int64
    # no unlabelled point: ids simply compacted
    res = TRANSFORMS.build(dict(type='PointInstClassMapping_', num_classes=13))(
        dict(pts_instance_mask=np.array([5, 5, 8]), pts_semantic_mask=np.array([4, 4, 7])))
    np.testing.assert_array_equal(res['pts_instance_mask'], [0, 0, 1])
    np.testing.assert_array_equal(res['gt_labels_3d'], [4, 7])
    # structured3d: all walls (0) one instance, all floors (1) another
    res = TRANSFORMS.build(dict(type='PointInstClassMapping_', num_classes=3,
                                structured3d=True))(
        dict(pts_instance_mask=np.array([0, 1, 2, 3, 4]),
             pts_semantic_mask=np.array([0, 0, 1, 2, 3])))
    np.testing.assert_array_equal(res['pts_instance_mask'], [1, 1, 2, 0, -1])
    np.testing.assert_array_equal(res['gt_labels_3d'], [2, 0, 1])


def test_add_superpoint_annotations():
    sem = np.array([0, 0, 1, 1, 1, 2, 2, 3])
    inst = np.array([5, 5, 2, 2, 2, 7, 7, 9])
    sp = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    t = TRANSFORMS.build(dict(type='AddSuperPointAnnotations', num_classes=3,
                              stuff_classes=[0], merge_non_stuff_cls=False))
    res = t(dict(pts_instance_mask=inst, pts_semantic_mask=sem, sp_pts_mask=sp))
    np.testing.assert_array_equal(res['pts_instance_mask'], [-1, -1, 0, 0, 0, 1, 1, -1])
    np.testing.assert_array_equal(res['gt_labels_3d'], [0, 1, 0, 0, 0, 0])
    T, F = True, False
    expect = np.array([[F, T, F, F], [F, F, F, F],                     # 2 instances
                       [T, F, F, F], [F, T, F, F], [F, F, F, F], [F, F, T, T]])  # 4 classes
    assert res['gt_sp_masks'].dtype == bool
    np.testing.assert_array_equal(res['gt_sp_masks'], expect)
    # merged non-stuff rows (int 0/1 as in OneFormer3D) and the panoptic eval ids
    t = TRANSFORMS.build(dict(type='AddSuperPointAnnotations', num_classes=3,
                              stuff_classes=[0]))
    res = t(dict(pts_instance_mask=inst, pts_semantic_mask=sem, sp_pts_mask=sp,
                 eval_ann_info=dict()))
    np.testing.assert_array_equal(res['gt_labels_3d'], [0, 1, 0, 0])
    np.testing.assert_array_equal(res['gt_sp_masks'],
                                  [[0, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 1, 1]])
    np.testing.assert_array_equal(res['eval_ann_info']['pts_instance_mask'],
                                  [0, 0, 1, 1, 1, 2, 2, -1])
    # a scene with instances only in thing classes, no ignored point
    res = t(dict(pts_instance_mask=np.array([4, 4, 6]), pts_semantic_mask=np.array([1, 1, 2]),
                 sp_pts_mask=np.array([0, 0, 1])))
    np.testing.assert_array_equal(res['pts_instance_mask'], [0, 0, 1])
    np.testing.assert_array_equal(res['gt_labels_3d'], [0, 1, 0, 0])


def test_swap_chair_and_floor_and_colors():
    res = TRANSFORMS.build(dict(type='SwapChairAndFloor'))(
        dict(pts_semantic_mask=np.array([0, 2, 3, 2, 5]), eval_ann_info={}))
    np.testing.assert_array_equal(res['pts_semantic_mask'], [0, 3, 2, 3, 5])
    assert res['eval_ann_info']['pts_semantic_mask'] is res['pts_semantic_mask']
    col = np.array([[0, 127.5, 255], [255, 0, 51]])
    res = TRANSFORMS.build(dict(type='NormalizePointsColor_', color_mean=[127.5] * 3))(
        dict(points=_points(2, col)))
    np.testing.assert_allclose(res['points'].color.numpy(), (col - 127.5) / 127.5, atol=1e-6)
    res = TRANSFORMS.build(dict(type='NormalizePointsColor_', color_mean=None, color_std=255.))(
        dict(points=_points(2, col)))
    np.testing.assert_allclose(res['points'].color.numpy(), col / 255., atol=1e-6)


def _elastic_reference(x, gran, mag):
    """Straightforward version: box blur by ndimage.convolve, trilinear grid interpolation."""
    from scipy import interpolate, ndimage
    shape = np.abs(x).max(0).astype(np.int32) // gran + 3
    noise = [np.random.randn(*shape).astype('float32') for _ in range(3)]
    kernels = [np.ones(s, 'float32') / 3 for s in ((3, 1, 1), (1, 3, 1), (1, 1, 3))] * 2
    for k in kernels:
        noise = [ndimage.convolve(n, k, mode='constant', cval=0) for n in noise]
    grid = [np.linspace(-(b - 1) * gran, (b - 1) * gran, b) for b in shape]
    return x + np.stack([interpolate.RegularGridInterpolator(
        grid, n, bounds_error=False, fill_value=0)(x) for n in noise], 1) * mag


def test_elastic_transform():
    pts = _points(50)
    t = TRANSFORMS.build(dict(type='ElasticTransfrom', gran=[6, 20], mag=[40, 160],
                              voxel_size=0.02, p=0.0))
    res = t(dict(points=pts))
    np.testing.assert_allclose(res['elastic_coords'], pts.tensor[:, :3].numpy() / 0.02)
    assert torch.equal(res['points'].tensor, pts.tensor)                   # points untouched
    t.p = 1.0
    np.random.seed(5)
    got = t(dict(points=pts))['elastic_coords']
    np.random.seed(5)
    np.random.rand()
    ref = pts.tensor[:, :3].numpy() / 0.02
    ref = _elastic_reference(_elastic_reference(ref, 6, 40), 20, 160)
    assert got.shape == (50, 3) and np.isfinite(got).all()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-3)
    assert np.abs(got - pts.tensor[:, :3].numpy() / 0.02).max() > 1e-3


def test_pack_inputs():
    pack = TRANSFORMS.build(dict(type='Pack3DDetInputs_', keys=[
        'points', 'elastic_coords', 'gt_labels_3d', 'gt_sp_masks', 'pts_semantic_mask',
        'pts_instance_mask', 'sp_pts_mask']))
    res = pack(dict(points=_points(4), elastic_coords=np.zeros((4, 3)),
                    gt_labels_3d=np.array([1, 0, 0, 0, 0]), gt_sp_masks=np.ones((5, 2), bool),
                    pts_semantic_mask=np.arange(4), pts_instance_mask=np.array([0, 0, -1, 1]),
                    sp_pts_mask=np.array([0, 1, 1, 0]), sample_idx=3))
    assert set(res['inputs']) == {'points', 'elastic_coords'}
    assert res['inputs']['elastic_coords'].dtype == torch.float32          # float64 -> 32
    s = res['data_samples']
    assert s.metainfo['sample_idx'] == 3 and s.eval_ann_info is None
    assert set(s.gt_instances_3d.keys()) == {'labels_3d', 'sp_masks'}
    assert s.gt_instances_3d.sp_masks.dtype == torch.bool
    assert set(s.gt_pts_seg.keys()) == {'pts_semantic_mask', 'pts_instance_mask', 'sp_pts_mask'}
    with pytest.raises(NotImplementedError, match='bogus'):
        TRANSFORMS.build(dict(type='Pack3DDetInputs_', keys=['bogus']))(dict(bogus=np.ones(2)))


# ----------------------------------------------------------------------------- ScanNet
@pytest.fixture(scope='module')
def scannet_root(s3dis_root, tmp_path_factory):
    """OneFormer3D's ScanNet layout (as datasets/prepare_scannet.py writes it) built from
    the synthetic rooms: nyu40 semantic ids, instance ids objectId + 1 (0: unannotated)."""
    root = str(tmp_path_factory.mktemp('scannet'))
    entries = []
    names = [f[:-4] for f in sorted(os.listdir(os.path.join(s3dis_root, 'points')))][:2]
    for k, name in enumerate(names):
        pts, ins, sem = s3dis.read_room(s3dis_root, name)
        scene = f'scene{k:04d}_00'
        nyu = S3DIS_TO_NYU40[sem]
        ins = np.where(np.isin(nyu, SCANNET_VALID_IDS), ins, 0)     # unannotated -> 0
        sp = s3dis.voxel_superpoints(pts[:, :3], 0.25)
        for sub, arr in (('points', pts.astype(np.float32)), ('semantic_mask', nyu),
                         ('instance_mask', ins), ('super_points', sp)):
            os.makedirs(os.path.join(root, sub), exist_ok=True)
            np.ascontiguousarray(arr, dtype=np.float32 if sub == 'points' else np.int64
                                 ).tofile(os.path.join(root, sub, f'{scene}.bin'))
        fname = f'{scene}.bin'
        entries.append(dict(lidar_points=dict(num_pts_feats=6, lidar_path=fname),
                            super_pts_path=fname, pts_semantic_mask_path=fname,
                            pts_instance_mask_path=fname, axis_align_matrix=np.eye(4).tolist(),
                            instances=[]))
    with open(os.path.join(root, 'scannet_oneformer3d_infos_val.pkl'), 'wb') as f:
        pickle.dump(dict(metainfo=dict(dataset='scannet', info_version='1.1'),
                         data_list=entries), f, protocol=2)
    return root


def _scannet(root, pipeline, test_mode):
    return DATASETS.build(dict(
        type='ScanNetSegDataset_', data_root=root, ann_file='scannet_oneformer3d_infos_val.pkl',
        metainfo=dict(classes=SCANNET_CLASSES),
        data_prefix=dict(DATA_PREFIX, sp_pts_mask='super_points'), pipeline=pipeline,
        ignore_index=20, scene_idxs=None, test_mode=test_mode))


def test_scannet_pipelines(scannet_root, scope):
    np.random.seed(0)
    ds = _scannet(scannet_root, SCANNET_TRAIN, test_mode=False)
    assert len(ds) == 2                          # one pass per scene, no scene_idxs needed
    out = ds[0]
    pts = out['inputs']['points']
    n = len(pts)
    assert set(out['inputs']) == {'points', 'elastic_coords'}
    assert out['inputs']['elastic_coords'].shape == (n, 3)
    s = out['data_samples']
    seg, ins3d = s.gt_pts_seg, s.gt_instances_3d
    assert set(seg.keys()) == {'pts_semantic_mask', 'pts_instance_mask', 'sp_pts_mask'}
    assert set(ins3d.keys()) == {'labels_3d', 'sp_masks'}
    sem, inst, sp = seg.pts_semantic_mask, seg.pts_instance_mask, seg.sp_pts_mask
    assert sem.min() >= 0 and sem.max() <= 20 and (sem == 20).any()   # 20: unlabelled
    k = int(inst.max()) + 1
    assert torch.equal(torch.unique(inst[inst >= 0]), torch.arange(k))
    assert torch.all(inst[(sem < 2) | (sem == 20)] == -1)        # stuff / unlabelled: -1
    assert ins3d.labels_3d.shape == (k + 21,) and ins3d.sp_masks.shape == (k + 21, sp.max() + 1)
    assert torch.all(ins3d.labels_3d[:k] >= 0) and torch.all(ins3d.labels_3d[:k] < 18)

    ds = _scannet(scannet_root, SCANNET_TEST, test_mode=True)
    out = ds[1]
    s = out['data_samples']
    assert set(out['inputs']) == {'points'}
    assert set(s.gt_pts_seg.keys()) == {'sp_pts_mask'}
    ev = s.eval_ann_info
    assert ev['lidar_idx'] == 'scene0001_00'
    raw_sp = np.fromfile(os.path.join(scannet_root, 'super_points', 'scene0001_00.bin'), np.int64)
    np.testing.assert_array_equal(ev['sp_pts_mask'], raw_sp)
    sem = ev['pts_semantic_mask']
    pan = ev['pts_instance_mask']
    assert set(np.unique(pan[sem == 0])) <= {0} and set(np.unique(pan[sem == 1])) <= {1}
    assert np.all(pan[sem == 20] == -1) and np.all(pan[(sem >= 2) & (sem < 20)] >= 2)


def _scannet_perfect(ev, drop_half=False):
    sem, pan = ev['pts_semantic_mask'], ev['pts_instance_mask']
    ids, counts = np.unique(pan[pan >= 2], return_counts=True)
    if drop_half:                       # every other instance large enough to be evaluated
        ids = np.setdiff1d(ids, ids[counts >= 100][::2])
    masks = pan[None] == ids[:, None]
    labels = np.array([sem[pan == i][0] - 2 for i in ids], dtype=np.int64)
    return dict(pts_semantic_mask=[sem.copy(), sem.copy()],
                pts_instance_mask=[masks, pan.copy()],
                instance_labels=labels, instance_scores=np.linspace(1, 0.5, len(ids)))


def test_unified_metric_scannet(scannet_root, scope, tmp_path):
    ds = _scannet(scannet_root, SCANNET_TEST, test_mode=True)
    evs = [ds[i]['data_samples'].eval_ann_info for i in range(len(ds))]
    names = list(SCANNET_CLASSES) + ['unlabeled']
    metric = UnifiedSegMetric(
        stuff_class_inds=[0, 1], thing_class_inds=list(range(2, 20)), min_num_points=1,
        id_offset=2 ** 16, sem_mapping=list(SCANNET_VALID_IDS),
        inst_mapping=list(SCANNET_VALID_IDS[2:]),
        metric_meta=dict(label2cat=dict(enumerate(names)), ignore_index=[20], classes=names,
                         dataset_name='ScanNet'))
    metric.dataset_meta = ds.metainfo
    perfect = metric.compute_metrics([(ev, _scannet_perfect(ev)) for ev in evs])
    assert perfect['miou'] == pytest.approx(1.0)
    for key in ('all_ap', 'all_ap_50%', 'all_ap_25%'):
        assert perfect[key] == pytest.approx(1.0), key
    present = {names[c] for ev in evs for c in np.unique(ev['pts_semantic_mask']) if c < 20}
    pan = metric.detailed_results['panoptic']
    assert pan['pq'] == pytest.approx(len(present) / 20)     # absent classes count as 0
    half = metric.compute_metrics([(ev, _scannet_perfect(ev, True)) for ev in evs])
    assert 0.0 < half['all_ap'] < 1.0 and half['all_ap_50%'] < 1.0
    # ScanNet benchmark files; without ground truth only the files are written
    metric.submission_prefix_semantic = str(tmp_path / 'sem')
    metric.submission_prefix_instance = str(tmp_path / 'inst')
    pred = _scannet_perfect(evs[0])
    assert metric.compute_metrics([(dict(lidar_idx='scene0001_00'), pred)]) == {}
    sem_txt = np.loadtxt(tmp_path / 'sem' / 'scene0001_00.txt', dtype=np.int64)
    np.testing.assert_array_equal(sem_txt,                      # unlabelled (20) -> 0
                                  np.append(SCANNET_VALID_IDS, 0)[evs[0]['pts_semantic_mask']])
    lines = (tmp_path / 'inst' / 'scene0001_00.txt').read_text().split('\n')[:-1]
    assert len(lines) == len(pred['instance_labels'])
    rel, label, _ = lines[0].split()
    assert int(label) == SCANNET_VALID_IDS[2 + pred['instance_labels'][0]]
    np.testing.assert_array_equal(np.loadtxt(tmp_path / 'inst' / rel),
                                  pred['pts_instance_mask'][0][0])
    metric.submission_prefix_semantic = metric.submission_prefix_instance = None
    with pytest.raises(ValueError, match='eval_ann_info'):
        metric.compute_metrics([(None, pred)])


# ----------------------------------------------------------------------------- metric (S3DIS)
def _s3dis_metric():
    meta = dict(label2cat=dict(enumerate(S3DIS_NAMES)), ignore_index=[13],
                classes=S3DIS_NAMES, dataset_name='S3DIS')
    return METRICS.build(dict(
        type='UnifiedSegMetric', stuff_class_inds=S3DIS_STUFF,
        thing_class_inds=[7, 8, 9, 10, 11], min_num_points=1, id_offset=2 ** 16,
        sem_mapping=list(range(13)), inst_mapping=list(range(13)),
        submission_prefix_semantic=None, submission_prefix_instance=None,
        metric_meta=meta))


def _s3dis_prediction(ev, keep=None, sem_noise=None):
    """Prediction in the detector's output format made from ground truth."""
    sem, ins = ev['pts_semantic_mask'], ev['pts_instance_mask']
    ids, first = np.unique(ins, return_index=True)
    if keep is not None:
        ids, first = ids[keep], first[keep]
    masks = ins[None] == ids[:, None]
    pan = s3dis_panoptic_gt(sem, ins, S3DIS_STUFF)['pts_instance_mask']
    pred_sem = sem.copy() if sem_noise is None else sem_noise(sem.copy())
    return dict(pts_semantic_mask=[pred_sem, pred_sem.copy()],
                pts_instance_mask=[masks, pan], instance_labels=sem[first].astype(np.int64),
                instance_scores=np.linspace(0.9, 0.3, len(ids)))


def test_unified_metric_s3dis(s3dis_root, scope, tmp_path):
    from mmengine.logging import MMLogger
    ds = _s3dis(s3dis_root, 5, S3DIS_TEST, test_mode=True)
    evs = [ds[i]['data_samples'].eval_ann_info for i in range(len(ds))]
    metric = _s3dis_metric()
    metric.dataset_meta = ds.metainfo
    # through the evaluator interface, as the test loop calls it
    for ev in evs:
        metric.process({}, [dict(eval_ann_info=ev, pred_pts_seg=_s3dis_prediction(ev))])
    log = tmp_path / 'metric.log'
    MMLogger.get_instance('test_3d_data_metric', log_file=str(log))
    perfect = metric.evaluate(len(evs))
    assert set(perfect) == {'miou', 'all_ap', 'all_ap_50%', 'all_ap_25%', 'pq', 'duplicate_rate'}
    assert perfect['duplicate_rate'] == 0.0
    for key in ('miou', 'all_ap', 'all_ap_50%', 'all_ap_25%'):
        assert perfect[key] == pytest.approx(1.0), key
    detail = metric.detailed_results
    big = {S3DIS_NAMES[int(ev['pts_semantic_mask'][ev['pts_instance_mask'] == i][0])]
           for ev in evs for i in np.unique(ev['pts_instance_mask'])
           if (ev['pts_instance_mask'] == i).sum() >= 100}
    assert 'ceiling' in big or 'floor' in big
    for name in big:                                  # per-class AP: 1 for every evaluated class
        assert detail['instance']['classes'][name]['ap'] == pytest.approx(1.0), name
    assert detail['instance']['classes'].keys() == set(S3DIS_NAMES[:-1])
    text = log.read_text()                            # per-class table went to the logger
    assert 'AP_0.50' in text and 'Overall' in text and 'bookcase' in text
    assert detail['instance']['table'] in text

    # drop half of the instances that are large enough to be evaluated
    degraded = []
    for ev in evs:
        ins = ev['pts_instance_mask']
        ids, counts = np.unique(ins, return_counts=True)
        large = np.flatnonzero(counts >= 100)
        keep = np.setdiff1d(np.arange(len(ids)), large[::2])
        degraded.append((ev, _s3dis_prediction(ev, keep=keep)))
    half = metric.compute_metrics(degraded)
    for key in ('all_ap', 'all_ap_50%', 'all_ap_25%'):
        assert 0.0 < half[key] < 1.0, key
    assert half['miou'] == pytest.approx(1.0)

    def swap_floor_wall(sem):
        return np.where(sem == 1, 2, np.where(sem == 2, 1, sem))
    worse = metric.compute_metrics([(ev, _s3dis_prediction(ev, sem_noise=swap_floor_wall))
                                    for ev in evs])
    assert worse['miou'] < 1.0


def test_duplicate_rate_per_query_counts_copies_of_different_queries_only(s3dis_root, scope):
    """One query reported under two classes is a duplicate of the plain rate, not of the
    per-query rate; the same mask from two queries is a duplicate of both."""
    ds = _s3dis(s3dis_root, 5, S3DIS_TEST, test_mode=True)
    ev = ds[0]['data_samples'].eval_ann_info
    pred = _s3dis_prediction(ev)
    n = len(pred['instance_scores'])
    masks = pred['pts_instance_mask'][0]
    # the first instance again, once from its own query (another class) and once from query n
    pred['pts_instance_mask'][0] = np.concatenate([masks, masks[:1], masks[:1]])
    pred['instance_labels'] = np.concatenate([pred['instance_labels'], [0, 1]])
    n_counted = int((pred['instance_scores'] >= 0.5).sum())  # the metric's duplicate_score_thr
    pred['instance_scores'] = np.concatenate([pred['instance_scores'], [0.95, 0.94]])
    pred['instance_queries'] = np.concatenate([np.arange(n), [0, n]])
    metric = _s3dis_metric()
    metric.dataset_meta = ds.metainfo
    res = metric.compute_metrics([(ev, pred)])
    # plain: the original and the 0.94 copy duplicate the 0.95 one; per query: query 0 keeps its
    # 0.95 prediction only, and query n's copy is the one duplicate
    assert res['duplicate_rate'] == pytest.approx(2 / (n_counted + 2))
    assert res['duplicate_rate_per_query'] == pytest.approx(1 / (n_counted + 1))


def test_instance_eval_counts_class_zero(s3dis_root, scope):
    """mmdet3d 1.4's instance_seg_eval needs tensors, one id per point, and drops every
    ground-truth instance of class id 0 (S3DIS ceiling); ours counts it."""
    from mmdet3d.evaluation.functional import instance_seg_eval as mmdet3d_eval
    n = 300
    sem = np.repeat([0, 8], [200, 100])
    ins = np.repeat([1, 2], [200, 100])
    masks = ins[None] == np.array([1, 2])[:, None]
    labels, scores = np.array([0, 8]), np.array([0.9, 0.8])
    ours = instance_seg_eval([sem], [ins], [masks], [labels], [scores],
                             valid_class_ids=tuple(range(13)), class_labels=S3DIS_NAMES[:-1])
    assert ours['classes']['ceiling']['ap'] == pytest.approx(1.0)
    assert ours['classes']['chair']['ap'] == pytest.approx(1.0)
    with pytest.raises(AttributeError):                       # numpy ground truth
        mmdet3d_eval([sem], [ins], [torch.tensor(ins - 1)], [torch.tensor(labels)],
                     [torch.tensor(scores)], valid_class_ids=tuple(range(13)),
                     class_labels=S3DIS_NAMES[:-1])
    theirs = mmdet3d_eval([torch.tensor(sem)], [torch.tensor(ins)], [torch.tensor(ins - 1)],
                          [torch.tensor(labels)], [torch.tensor(scores)],
                          valid_class_ids=tuple(range(13)), class_labels=S3DIS_NAMES[:-1])
    assert np.isnan(theirs['classes']['ceiling']['ap'])       # ceiling never evaluated
    assert theirs['classes']['chair']['ap'] == pytest.approx(1.0)
    # integer per-point predictions are accepted too; bad shapes give a clear error
    same = instance_seg_eval([sem], [ins], [ins - 1], [labels], [scores],
                             valid_class_ids=tuple(range(13)), class_labels=S3DIS_NAMES[:-1])
    assert same['all_ap'] == pytest.approx(1.0)
    with pytest.raises(ValueError, match='points'):
        instance_seg_eval([sem], [ins], [masks[:, :n - 1]], [labels], [scores],
                          valid_class_ids=tuple(range(13)), class_labels=S3DIS_NAMES[:-1])
