"""The own-data converter (influencer_data.own_3d, datasets/prepare_own_3d.py): synthetic rooms
exported as labelled .ply files and S3DIS-style object files convert back to the same points and
labels; the label rules; clear errors naming the file; the split; the CLI and the config it
writes.  Numpy and plyfile only (training on the converted data: tests/3d/test_3d_own_data.py)."""
import json
import os
import pickle

import numpy as np
import pytest

from influencer_data import own_3d, s3dis
from influencer_data import synthetic_3d as synthetic
from tests import ROOT, load_script

pytest.importorskip('plyfile')

from influencer_data.ply import read_vertices, write_vertices  # noqa: E402

CLASSES = list(s3dis.S3DIS_CLASSES)
TEMPLATE = os.path.join(ROOT, 'projects', 'InfluencerFormer3D', 'configs', 'influencerformer_own-data.py')


def export_ply(path, points, instance, semantic, rgb_dtype=np.uint8, renames=None):
    """A room as a labelled .ply with the documented field names (``renames`` changes them)."""
    cols = dict(x=points[:, 0], y=points[:, 1], z=points[:, 2],
                red=np.round(points[:, 3]).astype(rgb_dtype) if rgb_dtype == np.uint8 else points[:, 3],
                green=np.round(points[:, 4]).astype(rgb_dtype) if rgb_dtype == np.uint8 else points[:, 4],
                blue=np.round(points[:, 5]).astype(rgb_dtype) if rgb_dtype == np.uint8 else points[:, 5],
                instance=instance, semantic=semantic)
    renames = renames or {}
    write_vertices(str(path), {renames.get(k, k): v for k, v in cols.items() if renames.get(k, k)})


def export_object_files(folder, points, instance, semantic):
    """A room as S3DIS-style Annotations/<class>_<n>.txt files (one per object)."""
    ann = os.path.join(folder, 'Annotations')
    os.makedirs(ann)
    counts = {}
    for k in np.unique(instance):
        sel = instance == k
        cls = CLASSES[int(semantic[sel][0])]
        counts[cls] = counts.get(cls, 0) + 1
        np.savetxt(os.path.join(ann, f'{cls}_{counts[cls]}.txt'), points[sel], fmt='%.9g')


@pytest.fixture(scope='module')
def rooms():
    """Four synthetic rooms (name, points [N, 6] float32, instance 1..K, semantic 0..12)."""
    return [synthetic.make_room(5, area, 0, 1500, max_objects=6) for area in (1, 2, 3, 4)]


@pytest.fixture
def exported(tmp_path, rooms):
    """Rooms 0-2 as .ply (uchar colours), room 3 as an object-file folder."""
    src = tmp_path / 'src'
    src.mkdir()
    for i, (name, pts, ins, sem) in enumerate(rooms):
        if i < 3:
            export_ply(src / f'scene{i}.ply', pts, ins, sem)
        else:
            export_object_files(str(src / f'scene{i}'), pts, ins, sem)
    return str(src)


def _pkl(path):
    with open(path, 'rb') as f:
        return pickle.load(f)


def test_round_trip_equals_the_rooms(exported, rooms, tmp_path):
    out = str(tmp_path / 'own')
    res = own_3d.convert(exported, out, CLASSES, val_scenes=['scene1'], superpoints=True, verbose=False)
    assert res['classes'] == CLASSES
    assert {n: s['split'] for n, s in res['scenes'].items()} == \
        {'scene0': 'train', 'scene1': 'val', 'scene2': 'train', 'scene3': 'train'}
    for i, (_, pts, ins, sem) in enumerate(rooms):
        got_pts, got_ins, got_sem, sp = s3dis.read_room(out, f'scene{i}', superpoints=True)
        assert got_pts.shape == pts.shape and len(sp) == len(pts) and sp.min() == 0
        if i == 3:  # object files: points grouped by file, objects numbered in file-name order
            a, b = np.lexsort(pts[:, :3].T), np.lexsort(got_pts[:, :3].T)
            pts, ins, sem = pts[a], ins[a], sem[a]
            got_pts, got_ins, got_sem = got_pts[b], got_ins[b], got_sem[b]
            np.testing.assert_array_equal(got_pts[:, 3:], pts[:, 3:])  # exact text
            pairs = np.unique(np.stack([ins, got_ins], 1), axis=0)
            assert len(pairs) == len(np.unique(ins)) == len(np.unique(got_ins))  # a bijection
        else:  # .ply: colours stored as uchar, ids as given (already 1..K)
            np.testing.assert_array_equal(got_pts[:, 3:], np.round(pts[:, 3:]))
            np.testing.assert_array_equal(got_ins, ins)
        np.testing.assert_array_equal(got_pts[:, :3], pts[:, :3])  # min corner already at 0
        np.testing.assert_array_equal(got_sem, sem)
        assert res['scenes'][f'scene{i}']['offset'] == [0.0, 0.0, 0.0]
    train, val = _pkl(res['infos']['train']), _pkl(res['infos']['val'])
    assert train['metainfo'] == dict(categories={c: i for i, c in enumerate(CLASSES)}, dataset='own',
                                     info_version='1.1')
    assert [e['lidar_points']['lidar_path'] for e in train['data_list']] == \
        ['scene0.bin', 'scene2.bin', 'scene3.bin']
    assert [e['sample_idx'] for e in train['data_list']] == [0, 1, 2]
    entry = val['data_list'][0]
    assert entry['super_pts_path'] == entry['pts_instance_mask_path'] == 'scene1.bin'
    _, _, ins, sem = rooms[1]
    # a box per object of every class, labelled with its class id
    assert [b['bbox_label_3d'] for b in entry['instances']] == \
        [int(sem[ins == k][0]) for k in range(1, ins.max() + 1)]
    with open(os.path.join(out, own_3d.META_FILE)) as f:
        assert json.load(f)['scenes']['scene3']['source'] == 'scene3'


def test_label_rules_offsets_aliases_and_float_colours(tmp_path):
    """Loose labelled points become one object per class, unlabelled points class N / no object,
    objects renumbered 1..K, coordinates shifted (the shift recorded), 0..1 colours scaled."""
    xyz = np.random.default_rng(0).random((8, 3)) + [1000.0, -5.0, 2.0]
    pts = np.concatenate([xyz, np.full((8, 3), 0.5)], 1)
    inst = np.array([7, 7, 40, 0, 0, -1, 0, 3])
    sem = np.array([2, 2, 1, 0, 0, 0, -1, 2])
    src = tmp_path / 'src'
    src.mkdir()
    export_ply(src / 'room.ply', pts, inst, sem, rgb_dtype=np.float64,
               renames=dict(instance='instance_id', semantic='class'))
    res = own_3d.convert(str(src), str(tmp_path / 'own'), ['floor', 'wall', 'chair'], val_fraction=0,
                         superpoints=False, verbose=False)
    got_pts, got_ins, got_sem = s3dis.read_room(str(tmp_path / 'own'), 'room')
    np.testing.assert_array_equal(got_ins, [2, 2, 3, 4, 4, 4, 0, 1])
    np.testing.assert_array_equal(got_sem, [2, 2, 1, 0, 0, 0, 3, 2])
    np.testing.assert_allclose(got_pts[:, 3:], 127.5)
    np.testing.assert_allclose(got_pts[:, :3] + res['scenes']['room']['offset'], xyz, atol=1e-4)
    assert got_pts[:, :3].min() == 0.0
    assert _pkl(res['infos']['val'])['data_list'] == []


def _convert_error(tmp_path, classes=('floor', 'wall', 'chair'), out='own'):
    with pytest.raises(own_3d.OwnDataError) as exc:
        own_3d.convert(str(tmp_path / 'src'), str(tmp_path / out), classes, verbose=False,
                       superpoints=False)
    return str(exc.value)


def _scene(tmp_path, name='bad', n=6, **renames):  # renames: field=new name (None: left out)
    src = tmp_path / 'src'
    src.mkdir(exist_ok=True)
    pts = np.concatenate([np.random.default_rng(1).random((n, 3)), np.full((n, 3), 100.0)], 1)
    path = src / f'{name}.ply'
    export_ply(path, pts, np.arange(1, n + 1), np.zeros(n, np.int64), renames=renames)
    return path, pts


def test_bad_input_is_named(tmp_path):
    path, pts = _scene(tmp_path, semantic=None)  # no semantic field
    msg = _convert_error(tmp_path)
    assert str(path) in msg and "no 'semantic' vertex property" in msg

    v = read_vertices(str(path))
    v['semantic'] = np.array([0, 1, 2, 3, 9, -1])  # 3 and 9 out of range for 3 classes
    write_vertices(str(path), v)
    msg = _convert_error(tmp_path)
    assert str(path) in msg and 'semantic ids must be 0..2' in msg and 'found 3, 9 at 2 points' in msg

    v['semantic'] = np.array([0, 0, 1, 1, 2, 2])
    v['instance'] = np.array([1, 1, 1, 2, 2, 2])  # object 1 is floor and wall
    write_vertices(str(path), v)
    msg = _convert_error(tmp_path)
    assert str(path) in msg and 'object 1 has points of classes 0, 1' in msg

    write_vertices(str(path), {k: a[:0] for k, a in v.items()})  # empty scene
    msg = _convert_error(tmp_path)
    assert str(path) in msg and 'no points' in msg

    v['semantic'] = np.full(6, -1)
    write_vertices(str(path), v)
    assert 'every point is unlabelled' in _convert_error(tmp_path)

    path.write_bytes(b'not a ply file\n')
    with pytest.raises(ValueError, match='not a readable PLY file'):
        own_3d.convert(str(tmp_path / 'src'), str(tmp_path / 'own'), ['a'], verbose=False)
    os.remove(path)

    path, _ = _scene(tmp_path, name='twice', instance='instance_label')
    v = read_vertices(str(path))
    v['instance'] = v['instance_label']
    write_vertices(str(path), v)
    assert "both 'instance' and 'instance_label'" in _convert_error(tmp_path)
    os.remove(path)

    _scene(tmp_path, name='ok')
    with pytest.raises(own_3d.OwnDataError, match='give the class names'):
        own_3d.convert(str(tmp_path / 'src'), str(tmp_path / 'own'), None, verbose=False)
    with pytest.raises(own_3d.OwnDataError, match='given twice: wall'):
        own_3d.convert(str(tmp_path / 'src'), str(tmp_path / 'own'), ['wall', 'wall'], verbose=False)


def test_object_files_class_names(tmp_path):
    room = tmp_path / 'src' / 'room' / 'Annotations'
    room.mkdir(parents=True)
    rows = np.concatenate([np.random.default_rng(2).random((5, 3)), np.full((5, 3), 9.0)], 1)
    for name in ('coffee_table_1', 'floor_1', 'coffee_table_2'):
        np.savetxt(room / f'{name}.txt', rows)
    res = own_3d.convert(str(tmp_path / 'src'), str(tmp_path / 'own'), verbose=False, superpoints=False)
    assert res['classes'] == ['coffee_table', 'floor']  # sorted names; underscores kept
    _, ins, sem = s3dis.read_room(str(tmp_path / 'own'), 'room')
    np.testing.assert_array_equal(sem, np.repeat([0, 0, 1], 5))
    np.testing.assert_array_equal(ins, np.repeat([1, 2, 3], 5))
    msg = _convert_error(tmp_path, classes=['floor'], out='own2')
    assert str(room / 'coffee_table_1.txt') in msg and "class 'coffee_table' is not among" in msg
    (room / 'floor_1.txt').write_text('1 2 3\n')
    msg = _convert_error(tmp_path, classes=['coffee_table', 'floor'], out='own2')
    assert str(room / 'floor_1.txt') in msg and 'x y z r g b' in msg
    (room / 'floor.txt').write_text('1 2 3 4 5 6\n')
    assert '<class>_<n>.txt' in _convert_error(tmp_path, classes=['coffee_table', 'floor'], out='own2')
    assert not os.listdir(tmp_path / 'own2')  # a failed conversion leaves nothing behind


def test_split_and_output_guard(tmp_path):
    names = [f's{i}' for i in range(10)]
    split = own_3d.split_scenes(names, 0.2, seed=0)
    assert sorted(split.values()).count('val') == 2 and split == own_3d.split_scenes(names, 0.2, seed=0)
    assert list(own_3d.split_scenes(['a', 'b'], 0.1).values()).count('val') == 1  # at least one
    assert set(own_3d.split_scenes(['a'], 0.5).values()) == {'train'}  # one scene: it trains
    with pytest.raises(own_3d.OwnDataError, match='unknown scenes: x'):
        own_3d.split_scenes(names, val_scenes=['x'])
    with pytest.raises(own_3d.OwnDataError, match='at least one for training'):
        own_3d.split_scenes(['a'], val_scenes=['a'])
    _scene(tmp_path, name='ok')
    own_3d.convert(str(tmp_path / 'src'), str(tmp_path / 'own'), ['floor'], verbose=False, superpoints=False)
    with pytest.raises(FileExistsError, match='--force'):
        own_3d.convert(str(tmp_path / 'src'), str(tmp_path / 'own'), ['floor'], verbose=False)
    (tmp_path / 'own' / 'keep.txt').write_text('mine')
    own_3d.convert(str(tmp_path / 'src'), str(tmp_path / 'own'), ['floor'], verbose=False,
                   superpoints=False, force=True)
    assert (tmp_path / 'own' / 'keep.txt').read_text() == 'mine'  # --force removes only its own files
    with pytest.raises(own_3d.OwnDataError, match='no scenes found'):
        own_3d.list_scenes(str(tmp_path / 'own' / 'points'))


def test_cli_prints_or_writes_the_config_block(exported, tmp_path, capsys):
    cli = load_script('datasets/prepare_own_3d.py')
    out = str(tmp_path / 'own')
    cfg = str(tmp_path / 'cfg' / 'own.py')
    assert cli.main(['--input', exported, '--out', out, '--classes', *CLASSES, '--stuff', 'floor', 'wall',
                     '--no-superpoints', '--write-config', cfg]) == 0
    assert f'python tools/train_3d.py {cfg}' in capsys.readouterr().out
    text = open(cfg).read()
    assert f"class_names = {CLASSES!r}\nstuff_classes = [1, 2]  # floor, wall\ndata_root = '{out}/'\n" in text
    assert f"_base_ = ['{os.path.dirname(TEMPLATE)}/influencerformer_1xb2_s3dis-area-5.py']" in text
    assert cli.main(['--input', exported, '--out', out, '--classes', *CLASSES]) == 2
    assert 'already holds converted data' in capsys.readouterr().err
    assert cli.main(['--input', exported, '--out', out, '--classes', *CLASSES, '--stuff', 'lawn']) == 2
    assert 'stuff classes lawn are not among' in capsys.readouterr().err
    assert cli.main(['--input', exported, '--out', out, '--classes', *CLASSES, '--force',
                     '--no-superpoints']) == 0
    printed = capsys.readouterr().out
    assert 'stuff classes: ceiling (the first class' in printed and "stuff_classes = [0]" in printed
    assert cli.main(['--input', str(tmp_path / 'nothing'), '--out', out, '--classes', 'a']) == 2
    assert 'input folder not found' in capsys.readouterr().err
