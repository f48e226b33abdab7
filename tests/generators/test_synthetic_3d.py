"""Synthetic S3DIS-format rooms (datasets/prepare_synthetic_3d.py) and the
real-data wrappers (datasets/prepare_s3dis.py, datasets/prepare_scannet.py).

The generated data must be readable, unchanged, by mmdet3d 1.4's S3DIS
datasets and loading transforms exactly as OneFormer3D's S3DIS config uses
them; those tests are marked ``full_stack`` and skip without mmdet3d.
"""
import hashlib
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from influencer_data import s3dis, scannet
from influencer_data import synthetic_3d as syn
from tests import ROOT, load_script

DATASETS_DIR = os.path.join(ROOT, 'datasets')
syn_cli = load_script('datasets/prepare_synthetic_3d.py')
s3dis_cli = load_script('datasets/prepare_s3dis.py')

AREAS = (1, 2, 5)
ROOMS = 3
POINTS = 5000
KW = dict(num_rooms_per_area=ROOMS, areas=AREAS, seed=7, points=POINTS)
DATA_PREFIX = dict(pts='points', pts_instance_mask='instance_mask',
                   pts_semantic_mask='semantic_mask')
# loading transforms exactly as in OneFormer3D's configs/oneformer3d_1xb2_s3dis-area-5.py
LOAD_POINTS = dict(type='LoadPointsFromFile', coord_type='DEPTH', shift_height=False,
                   use_color=True, load_dim=6, use_dim=[0, 1, 2, 3, 4, 5])
LOAD_ANNS = dict(type='LoadAnnotations3D', with_label_3d=False, with_bbox_3d=False,
                 with_mask_3d=True, with_seg_3d=True)


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('synthetic_s3dis'))
    res = syn.generate(out, **KW)
    assert not res['skipped']
    return out


def _load_pkl(path):
    with open(path, 'rb') as f:
        return pickle.load(f)


def _entries(root, area):
    return _load_pkl(os.path.join(root, f's3dis_infos_Area_{area}.pkl'))['data_list']


def _all_rooms(root):
    for area in AREAS:
        for e in _entries(root, area):
            name = e['lidar_points']['lidar_path'][:-4]
            yield area, e, name


def _digest(root):
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            p = os.path.join(dirpath, f)
            h.update(os.path.relpath(p, root).encode())
            with open(p, 'rb') as fh:
                h.update(fh.read())
    return h.hexdigest()


# ----------------------------------------------------------------------------
# files and labels
# ----------------------------------------------------------------------------
def test_layout_and_lengths(data_root):
    for sub in ('points', 'instance_mask', 'semantic_mask', 'super_points', 'seg_info'):
        assert os.path.isdir(os.path.join(data_root, sub)), sub
    for area in AREAS:
        assert os.path.isfile(os.path.join(data_root, f's3dis_infos_Area_{area}.pkl'))
        for f in ('resampled_scene_idxs', 'label_weight'):
            assert os.path.isfile(os.path.join(data_root, 'seg_info', f'Area_{area}_{f}.npy'))
    assert len(os.listdir(os.path.join(data_root, 'points'))) == ROOMS * len(AREAS)
    for _, e, name in _all_rooms(data_root):
        pbytes = os.path.getsize(os.path.join(data_root, 'points', f'{name}.bin'))
        assert pbytes % (6 * 4) == 0
        n = pbytes // 24
        assert 0.7 * POINTS <= n <= 1.5 * POINTS
        for sub in ('instance_mask', 'semantic_mask', 'super_points'):
            assert os.path.getsize(os.path.join(data_root, sub, f'{name}.bin')) == 8 * n, sub
        pts, ins, sem, sp = s3dis.read_room(data_root, name, superpoints=True)
        assert pts.dtype == np.float32 and pts.shape == (n, 6)
        assert ins.dtype == np.int64 and sem.dtype == np.int64 and sp.dtype == np.int64
        assert np.isfinite(pts).all()
        assert np.allclose(pts[:, :3].min(0), 0, atol=1e-5)      # shifted like the converter
        assert pts[:, 3:].min() >= 0 and pts[:, 3:].max() <= 255  # colours in 0..255


def test_labels_consistent(data_root):
    for _, _, name in _all_rooms(data_root):
        pts, ins, sem = s3dis.read_room(data_root, name)
        assert sem.min() >= 0 and sem.max() < len(s3dis.S3DIS_CLASSES)
        # S3DIS convention: ids from 1 (0 = unannotated never occurs), contiguous
        ids = np.unique(ins)
        assert ids[0] == 1 and np.array_equal(ids, np.arange(1, len(ids) + 1))
        for i in ids:
            assert len(np.unique(sem[ins == i])) == 1, (name, i)
        classes = set(sem.tolist())
        assert s3dis.S3DIS_CLASS_TO_ID['floor'] in classes
        n_walls = len(np.unique(ins[sem == s3dis.S3DIS_CLASS_TO_ID['wall']]))
        assert 2 <= n_walls <= 4
        assert np.bincount(ins)[1:].min() >= 10      # no degenerate instances


def test_rooms_vary(data_root):
    n_inst, n_pts, n_boxes, classes = [], [], [], set()
    for _, e, name in _all_rooms(data_root):
        pts, ins, sem = s3dis.read_room(data_root, name)
        n_inst.append(int(ins.max()))
        n_pts.append(len(pts))
        n_boxes.append(len(e['instances']))
        classes |= set(sem.tolist())
        ext = pts[:, :3].max(0)
        assert 2.0 < ext[2] < 3.6 and ext[0] > 2.5 and ext[1] > 2.5
    assert len(set(n_inst)) >= 3 and len(set(n_pts)) >= 3 and len(set(n_boxes)) >= 2
    assert len(classes) >= 8
    # larger sample: every class shows up, object counts span 0..~15
    counts, objects = np.zeros(13, int), []
    for r in range(40):
        _, _, ins, sem = syn.make_room(0, 1, r, 1500)
        first = np.unique(ins, return_index=True)[1]
        counts += np.bincount(sem[first], minlength=13)
        objects.append(int(np.isin(sem[first], [0, 1, 2], invert=True).sum()))
    assert (counts > 0).all(), counts
    assert min(objects) <= 2 and max(objects) >= 10


def test_info_pkls_v2(data_root):
    for area in AREAS:
        info = _load_pkl(os.path.join(data_root, f's3dis_infos_Area_{area}.pkl'))
        assert set(info) == {'metainfo', 'data_list'}
        assert info['metainfo'] == dict(
            categories={'table': 0, 'chair': 1, 'sofa': 2, 'bookcase': 3, 'board': 4},
            dataset='s3dis', info_version='1.1')
        assert len(info['data_list']) == ROOMS
        for idx, e in enumerate(info['data_list']):
            assert {'sample_idx', 'lidar_points', 'instances', 'pts_semantic_mask_path',
                    'pts_instance_mask_path'} <= set(e)
            assert e['sample_idx'] == idx
            assert e['lidar_points']['num_pts_feats'] == 6
            name = e['lidar_points']['lidar_path']
            assert name.startswith(f'Area_{area}_') and name.endswith('.bin') and '/' not in name
            assert e['pts_semantic_mask_path'] == e['pts_instance_mask_path'] == name
            pts, ins, sem = s3dis.read_room(data_root, name[:-4])
            expect = []
            for i in range(1, ins.max() + 1):
                c = sem[ins == i][0]
                if 7 <= c <= 11:
                    p = pts[ins == i, :3]
                    expect.append((c - 7, (p.min(0) + p.max(0)) / 2, p.max(0) - p.min(0)))
            assert len(e['instances']) == len(expect)
            for inst, (label, center, size) in zip(e['instances'], expect):
                assert set(inst) == {'bbox_3d', 'bbox_label_3d'}
                assert inst['bbox_label_3d'] == label
                assert len(inst['bbox_3d']) == 6
                np.testing.assert_allclose(inst['bbox_3d'][:3], center, atol=1e-4)
                np.testing.assert_allclose(inst['bbox_3d'][3:], size, atol=1e-4)


def test_superpoints_fallback(data_root):
    for _, _, name in _all_rooms(data_root):
        pts, ins, _, sp = s3dis.read_room(data_root, name, superpoints=True)
        ids = np.unique(sp)
        assert np.array_equal(ids, np.arange(len(ids)))
        assert len(pts) / 200 < len(ids) < len(pts) / 4
        purity = sum(np.bincount(ins[sp == u]).max() for u in ids) / len(pts)
        assert purity > 0.9, (name, purity)
    xyz = np.random.default_rng(0).random((500, 3))
    vox = s3dis.voxel_superpoints(xyz, 0.25)
    assert vox.max() + 1 == len(np.unique(np.floor(xyz / 0.25), axis=0))


# ----------------------------------------------------------------------------
# determinism, idempotency, CLI
# ----------------------------------------------------------------------------
def test_deterministic(data_root, tmp_path):
    again = str(tmp_path / 'again')
    syn.generate(again, **KW)
    assert _digest(again) == _digest(data_root)
    other = str(tmp_path / 'other')
    syn.generate(other, **dict(KW, seed=8))
    assert _digest(other) != _digest(data_root)
    # a room does not depend on how many rooms are generated
    one = str(tmp_path / 'one')
    syn.generate(one, **dict(KW, num_rooms_per_area=1, areas=(5,)))
    name = _entries(one, 5)[0]['lidar_points']['lidar_path'][:-4]
    for a, b in zip(s3dis.read_room(one, name), s3dis.read_room(data_root, name)):
        np.testing.assert_array_equal(a, b)


def test_idempotent_and_force(tmp_path):
    out = str(tmp_path / 'idem')
    kw = dict(num_rooms_per_area=1, areas=(1,), seed=0, points=2000, superpoints=False)
    first = syn.generate(out, **kw)
    assert not first['skipped'] and list(first['rooms']) == [1] and len(first['rooms'][1]) == 1
    pkl = os.path.join(out, 's3dis_infos_Area_1.pkl')
    mtime = os.stat(pkl).st_mtime_ns
    again = syn.generate(out, **kw)
    assert again['skipped'] and again['rooms'] == first['rooms']
    assert os.stat(pkl).st_mtime_ns == mtime
    with pytest.raises(FileExistsError):
        syn.generate(out, **dict(kw, seed=1))
    res = syn.generate(out, **dict(kw, seed=1, areas=(2,)), force=True)
    assert not res['skipped']
    assert not os.path.exists(pkl)                       # stale outputs removed
    assert len(os.listdir(os.path.join(out, 'points'))) == 1
    with open(os.path.join(out, syn.META_FILE)) as f:
        assert json.load(f)['params']['seed'] == 1


def test_cli(tmp_path):
    out = str(tmp_path / 'cli')
    args = ['--out', out, '--rooms-per-area', '1', '--areas', '3', '--points', '2000',
            '--seed', '3', '--no-superpoints']
    assert syn_cli.main(args) == 0
    assert syn_cli.main(args) == 0                           # up to date: nothing to do
    assert syn_cli.main(args[:-1] + ['--seed', '4', '--no-superpoints']) == 1   # needs --force
    assert syn_cli.main(args + ['--force']) == 0
    assert os.path.isfile(os.path.join(out, 's3dis_infos_Area_3.pkl'))
    assert not os.path.isdir(os.path.join(out, 'super_points'))


# ----------------------------------------------------------------------------
# mmdet3d reads the data
# ----------------------------------------------------------------------------
@pytest.fixture(scope='module')
def mm():
    pytest.importorskip('mmdet3d')
    from mmcv.transforms import BaseTransform
    from mmdet3d.registry import DATASETS, TRANSFORMS
    from mmdet3d.utils import register_all_modules
    from mmengine.registry import DefaultScope
    register_all_modules(init_default_scope=False)

    class InstLabelsFromMasks(BaseTransform):
        """Stand-in for OneFormer3D's PointInstClassMapping_: one label per
        instance (its semantic class), instance ids made 0-based."""

        def transform(self, results):
            ins, sem = results['pts_instance_mask'], results['pts_semantic_mask']
            ids, first, inv = np.unique(ins, return_index=True, return_inverse=True)
            results['pts_instance_mask'] = inv.reshape(-1)
            results['gt_labels_3d'] = sem[first].astype(np.int64)
            return results

    TRANSFORMS.register_module(name='SyntheticTestInstLabels', module=InstLabelsFromMasks,
                               force=True)
    # string transform types resolve in mmdet3d's scope; restored afterwards
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        yield DATASETS


def _check_sample(root, name, out):
    pts, ins, sem = s3dis.read_room(root, name)
    points = out['points']
    assert type(points).__name__ == 'DepthPoints'
    assert points.attribute_dims == {'color': [3, 4, 5]}
    np.testing.assert_array_equal(points.tensor.numpy(), pts)
    np.testing.assert_array_equal(out['pts_instance_mask'], ins)
    np.testing.assert_array_equal(out['pts_semantic_mask'], sem)


@pytest.mark.full_stack
def test_mmengine_loads_infos(data_root, mm, tmp_path):
    import mmengine
    for area in AREAS:
        path = os.path.join(data_root, f's3dis_infos_Area_{area}.pkl')
        info = mmengine.load(path)
        assert set(info) == {'metainfo', 'data_list'} and info == _load_pkl(path)
        # the files are byte-identical to what mmengine.dump writes
        again = str(tmp_path / f'{area}.pkl')
        mmengine.dump(info, again)
        with open(path, 'rb') as a, open(again, 'rb') as b:
            assert a.read() == b.read()


@pytest.mark.full_stack
def test_mmdet3d_s3dis_dataset_reads_bins(data_root, mm):
    ds = mm.build(dict(type='S3DISDataset', data_root=data_root,
                       ann_file='s3dis_infos_Area_1.pkl', data_prefix=DATA_PREFIX,
                       pipeline=[LOAD_POINTS, LOAD_ANNS], box_type_3d='Depth',
                       test_mode=True))
    assert len(ds) == ROOMS
    for i, e in enumerate(_entries(data_root, 1)):
        out = ds[i]
        assert out['lidar_path'] == os.path.join(data_root, 'points',
                                                 e['lidar_points']['lidar_path'])
        _check_sample(data_root, e['lidar_points']['lidar_path'][:-4], out)
        assert len(out['eval_ann_info']['gt_labels_3d']) == len(e['instances'])

    # training mode with boxes from the info file (GSDN-style detection labels)
    ds = mm.build(dict(type='S3DISDataset', data_root=data_root,
                       ann_file='s3dis_infos_Area_5.pkl', data_prefix=DATA_PREFIX,
                       pipeline=[LOAD_POINTS,
                                 dict(LOAD_ANNS, with_bbox_3d=True, with_label_3d=True),
                                 dict(type='Pack3DDetInputs', keys=['points', 'gt_bboxes_3d',
                                      'gt_labels_3d', 'pts_semantic_mask', 'pts_instance_mask'])],
                       box_type_3d='Depth', filter_empty_gt=True))
    for i, e in enumerate(_entries(data_root, 5)):
        out = ds.prepare_data(i)
        if not e['instances']:
            assert out is None          # filter_empty_gt drops rooms without furniture
            continue
        gt = out['data_samples'].gt_instances_3d
        assert gt.labels_3d.tolist() == [b['bbox_label_3d'] for b in e['instances']]
        boxes = np.array([b['bbox_3d'] for b in e['instances']])
        np.testing.assert_allclose(gt.bboxes_3d.gravity_center.numpy(), boxes[:, :3], atol=1e-4)
        np.testing.assert_allclose(gt.bboxes_3d.dims.numpy(), boxes[:, 3:], atol=1e-4)
        assert len(out['data_samples'].gt_pts_seg.pts_semantic_mask) == len(out['inputs']['points'])


@pytest.mark.full_stack
@pytest.mark.filterwarnings('ignore:point got color value')
def test_oneformer3d_style_s3dis_pipeline(data_root, mm):
    """OneFormer3D's ``S3DISSegDataset_`` is mmdet3d's S3DISDataset with the 13
    S3DIS classes as METAINFO; its train set is a ConcatDataset of areas."""
    from mmdet3d.datasets import S3DISDataset
    from mmengine.dataset import ConcatDataset

    class S3DISSegDatasetLike(S3DISDataset):
        METAINFO = dict(classes=s3dis.S3DIS_CLASSES,
                        seg_valid_class_ids=tuple(range(13)),
                        seg_all_class_ids=tuple(range(14)))

    pipeline = [LOAD_POINTS, LOAD_ANNS, dict(type='SyntheticTestInstLabels'),
                dict(type='RandomFlip3D', sync_2d=False, flip_ratio_bev_horizontal=0.5,
                     flip_ratio_bev_vertical=0.5),
                dict(type='GlobalRotScaleTrans', rot_range=[0.0, 0.0],
                     scale_ratio_range=[0.9, 1.1], translation_std=[.1, .1, .1],
                     shift_height=False),
                dict(type='NormalizePointsColor', color_mean=[127.5, 127.5, 127.5]),
                dict(type='Pack3DDetInputs', keys=['points', 'gt_labels_3d',
                                                   'pts_semantic_mask', 'pts_instance_mask'])]
    train = ConcatDataset([S3DISSegDatasetLike(
        data_root=data_root, ann_file=f's3dis_infos_Area_{a}.pkl', pipeline=pipeline,
        filter_empty_gt=True, data_prefix=DATA_PREFIX, box_type_3d='Depth')
        for a in (1, 2)])
    assert len(train) == 2 * ROOMS
    np.random.seed(0)
    for i in range(len(train)):
        out = train[i]
        seg = out['data_samples'].gt_pts_seg
        labels = out['data_samples'].gt_instances_3d.labels_3d
        n = len(out['inputs']['points'])
        assert out['inputs']['points'].shape == (n, 6)
        assert len(seg.pts_instance_mask) == len(seg.pts_semantic_mask) == n
        assert int(seg.pts_instance_mask.max()) + 1 == len(labels)
        assert labels.max() < 13
    val = S3DISSegDatasetLike(data_root=data_root, ann_file='s3dis_infos_Area_5.pkl',
                              pipeline=[LOAD_POINTS, LOAD_ANNS], test_mode=True,
                              data_prefix=DATA_PREFIX, box_type_3d='Depth')
    e = _entries(data_root, 5)[0]
    _check_sample(data_root, e['lidar_points']['lidar_path'][:-4], val[0])


@pytest.mark.full_stack
def test_mmdet3d_s3dis_seg_dataset(data_root, mm):
    ds = mm.build(dict(
        type='S3DISSegDataset', data_root=data_root,
        ann_files=[f's3dis_infos_Area_{a}.pkl' for a in (1, 2)],
        metainfo=dict(classes=s3dis.S3DIS_CLASSES), data_prefix=DATA_PREFIX,
        pipeline=[LOAD_POINTS, LOAD_ANNS, dict(type='PointSegClassMapping')],
        scene_idxs=[f'seg_info/Area_{a}_resampled_scene_idxs.npy' for a in (1, 2)]))
    idxs = np.concatenate([np.load(os.path.join(data_root, 'seg_info',
                                                f'Area_{a}_resampled_scene_idxs.npy'))
                           for a in (1, 2)])
    assert len(ds) == len(idxs) > 0
    out = ds[0]
    assert out['pts_semantic_mask'].max() < 13


# ----------------------------------------------------------------------------
# real-data wrappers
# ----------------------------------------------------------------------------
def _run(script, *args):
    return subprocess.run([sys.executable, os.path.join(DATASETS_DIR, script), *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_wrappers_fail_clearly_without_data(tmp_path):
    missing = str(tmp_path / 'nothing_here')
    r = _run('prepare_s3dis.py', '--data-root', missing)
    assert r.returncode != 0
    assert 'Stanford3dDataset_v1.2_Aligned_Version' in r.stderr
    assert 'buildingparser.stanford.edu' in r.stderr
    assert f'python datasets/prepare_s3dis.py --data-root {missing}' in r.stderr
    r = _run('prepare_scannet.py', '--data-root', missing)
    assert r.returncode != 0
    assert 'github.com/ScanNet/ScanNet' in r.stderr and 'download-scannet.py' in r.stderr
    assert f'python datasets/prepare_scannet.py --data-root {missing}' in r.stderr
    # partially present data is reported precisely
    os.makedirs(os.path.join(missing, s3dis.RAW_DIRNAME, 'Area_1'))
    assert s3dis_cli.main(['--data-root', missing]) == 2
    msg = s3dis.check_raw(missing, [1])
    assert 'no <room>/Annotations' in msg


def _fake_s3dis(root):
    raw = os.path.join(root, s3dis.RAW_DIRNAME)
    rng = np.random.default_rng(0)
    rooms = {1: {'office_1': ['ceiling_1', 'floor_1', 'wall_1', 'chair_1', 'chair_2', 'stairs_1'],
                 'WC_1': ['floor_1', 'wall_1', 'wall_2']},
             2: {'hallway_1': ['floor_1', 'table_1', 'board_1', 'clutter_1']}}
    for area, rs in rooms.items():
        for room, objs in rs.items():
            ann = os.path.join(raw, f'Area_{area}', room, 'Annotations')
            os.makedirs(ann)
            with open(os.path.join(raw, f'Area_{area}', room, f'{room}.txt'), 'w') as f:
                f.write('0 0 0 0 0 0\n')            # the room's full cloud: not used
            for k, obj in enumerate(objs):
                xyz = rng.uniform(0, 3, (20 + k, 3)) + [10, -5, 1]
                rgb = rng.integers(0, 256, (20 + k, 3))
                lines = [' '.join(f'{v:.3f}' for v in p) + ' ' + ' '.join(str(c) for c in q)
                         for p, q in zip(xyz, rgb)]
                text = '\n'.join(lines) + '\n'
                if obj == 'ceiling_1':   # the stray byte of Area_5/hallway_6/ceiling_1.txt
                    text = text.replace(' ', '\x10', 1)
                with open(os.path.join(ann, f'{obj}.txt'), 'w') as f:
                    f.write(text)
    return rooms


def test_prepare_s3dis_converts_raw_layout(tmp_path):
    root = str(tmp_path / 's3dis')
    rooms = _fake_s3dis(root)
    out = str(tmp_path / 'processed')
    written = s3dis.convert(root, out, areas=(1, 2), superpoints=True, verbose=False)
    assert set(written) == {1, 2}
    info = _load_pkl(written[1])
    assert [e['lidar_points']['lidar_path'] for e in info['data_list']] == \
        ['Area_1_WC_1.bin', 'Area_1_office_1.bin']
    pts, ins, sem, sp = s3dis.read_room(out, 'Area_1_office_1', superpoints=True)
    objs = sorted(rooms[1]['office_1'])     # files are read in sorted order
    sizes = [20 + rooms[1]['office_1'].index(o) for o in objs]
    assert len(pts) == sum(sizes) and len(sp) == len(pts)
    names = [o.split('_')[0] for o in objs]
    expect_sem = [s3dis.S3DIS_CLASS_TO_ID.get(n, 12) for n in names]   # stairs -> clutter
    np.testing.assert_array_equal(sem, np.repeat(expect_sem, sizes))
    np.testing.assert_array_equal(ins, np.repeat(np.arange(1, len(objs) + 1), sizes))
    assert np.allclose(pts[:, :3].min(0), 0)
    chairs = [b for b in info['data_list'][1]['instances']]
    assert [b['bbox_label_3d'] for b in chairs] == [1, 1]
    # re-running re-uses the bins and rewrites identical infos
    before = _digest(out)
    s3dis.convert(root, out, areas=(1, 2), superpoints=True, verbose=False)
    assert _digest(out) == before


def _fake_scannet(root):
    from plyfile import PlyData, PlyElement
    scene = 'scene0000_00'
    sdir = os.path.join(root, 'scans', scene)
    os.makedirs(sdir)
    rng = np.random.default_rng(1)
    n = 60
    xyz = rng.uniform(0, 2, (n, 3)).astype(np.float32)
    seg = np.repeat([100, 7, 8, 55, 999], 12)         # 999: unannotated
    v = np.zeros(n, dtype=[('x', 'f4'), ('y', 'f4'), ('z', 'f4'), ('red', 'u1'),
                           ('green', 'u1'), ('blue', 'u1'), ('alpha', 'u1')])
    v['x'], v['y'], v['z'] = xyz.T
    v['red'], v['green'], v['blue'] = rng.integers(0, 256, (3, n))
    faces = np.zeros(n - 2, dtype=[('vertex_indices', 'i4', (3,))])
    faces['vertex_indices'] = np.stack([np.arange(n - 2), np.arange(1, n - 1), np.arange(2, n)], 1)
    PlyData([PlyElement.describe(v, 'vertex'), PlyElement.describe(faces, 'face')]).write(
        os.path.join(sdir, f'{scene}_vh_clean_2.ply'))
    with open(os.path.join(sdir, f'{scene}_vh_clean_2.0.010000.segs.json'), 'w') as f:
        json.dump(dict(segIndices=seg.tolist()), f)
    groups = [dict(objectId=0, label='floor', segments=[100]),
              dict(objectId=1, label='chair', segments=[7, 8]),
              dict(objectId=2, label='table', segments=[55])]
    with open(os.path.join(sdir, f'{scene}.aggregation.json'), 'w') as f:
        json.dump(dict(segGroups=groups), f)
    align = np.array([[0, -1, 0, 1], [1, 0, 0, 2], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    with open(os.path.join(sdir, f'{scene}.txt'), 'w') as f:
        f.write('axisAlignment = ' + ' '.join(str(x) for x in align.reshape(-1)) + '\n')
    with open(os.path.join(root, scannet.LABEL_MAP_NAME), 'w') as f:
        f.write('id\traw_category\tcategory\tnyu40id\n1\tfloor\tfloor\t2\n'
                '2\tchair\tchair\t5\n3\ttable\ttable\t7\n')
    os.makedirs(os.path.join(root, 'meta_data'))
    for split, names in (('train', [scene]), ('val', [scene])):
        with open(os.path.join(root, 'meta_data', f'scannetv2_{split}.txt'), 'w') as f:
            f.write('\n'.join(names) + '\n')
    return scene, xyz, seg, align


def test_prepare_scannet_converts_raw_layout(tmp_path):
    pytest.importorskip('plyfile')
    root = str(tmp_path / 'scannet')
    scene, xyz, seg, align = _fake_scannet(root)
    written = scannet.convert(root, splits=('train', 'val', 'test'),
                              superpoints='segs_json', verbose=False)
    assert set(written) == {'train', 'val'}           # no scans_test: test split skipped
    info = _load_pkl(written['train'])
    assert info['metainfo']['dataset'] == 'scannet'
    e = info['data_list'][0]
    assert e['lidar_points'] == dict(num_pts_feats=6, lidar_path=f'{scene}.bin')
    assert e['super_pts_path'] == e['pts_semantic_mask_path'] == f'{scene}.bin'
    np.testing.assert_allclose(e['axis_align_matrix'], align)
    pts = np.fromfile(os.path.join(root, 'points', f'{scene}.bin'), np.float32).reshape(-1, 6)
    sem = np.fromfile(os.path.join(root, 'semantic_mask', f'{scene}.bin'), np.int64)
    ins = np.fromfile(os.path.join(root, 'instance_mask', f'{scene}.bin'), np.int64)
    sp = np.fromfile(os.path.join(root, 'super_points', f'{scene}.bin'), np.int64)
    np.testing.assert_allclose(pts[:, :3], xyz)       # stored unaligned, like OneFormer3D
    np.testing.assert_array_equal(sem, np.repeat([2, 5, 5, 7, 0], 12))
    np.testing.assert_array_equal(ins, np.repeat([1, 2, 2, 3, 0], 12))
    np.testing.assert_array_equal(sp, np.unique(seg, return_inverse=True)[1])
    # boxes: chair (label 2) and table (label 4) in axis-aligned coordinates
    assert [b['bbox_label_3d'] for b in e['instances']] == [2, 4]
    aligned = xyz.astype(np.float64) @ align[:3, :3].T + align[:3, 3]
    chair = aligned[ins == 2]
    np.testing.assert_allclose(e['instances'][0]['bbox_3d'],
                               np.concatenate([(chair.min(0) + chair.max(0)) / 2,
                                               chair.max(0) - chair.min(0)]), atol=1e-5)
    # graph fallback gives a valid partition too
    sp2 = scannet.scene_superpoints(os.path.join(root, 'scans', scene), scene, pts, 'graph')
    assert len(sp2) == len(pts) and sp2.min() == 0


@pytest.mark.full_stack
def test_prepare_scannet_output_reads_in_mmdet3d(tmp_path, mm):
    pytest.importorskip('plyfile')
    root = str(tmp_path / 'scannet')
    scene, _, _, _ = _fake_scannet(root)
    scannet.convert(root, splits=('val',), superpoints='segs_json', verbose=False)
    ds = mm.build(dict(
        type='ScanNetSegDataset', data_root=root,
        ann_file='scannet_oneformer3d_infos_val.pkl',
        metainfo=dict(classes=('wall', 'floor', 'cabinet', 'bed', 'chair', 'sofa', 'table',
                               'door', 'window', 'bookshelf', 'picture', 'counter', 'desk',
                               'curtain', 'refrigerator', 'showercurtrain', 'toilet', 'sink',
                               'bathtub', 'otherfurniture')),
        data_prefix=dict(DATA_PREFIX, sp_pts_mask='super_points'),
        pipeline=[LOAD_POINTS, LOAD_ANNS, dict(type='PointSegClassMapping')],
        test_mode=True))
    out = ds[0]
    # nyu40 floor=2 -> 1, chair=5 -> 4, table=7 -> 6, unannotated -> ignore (20)
    np.testing.assert_array_equal(out['pts_semantic_mask'], np.repeat([1, 4, 4, 6, 20], 12))
    assert out['super_pts_path'] == f'{scene}.bin'     # OneFormer3D joins data_prefix itself
