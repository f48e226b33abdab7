"""tools/demo_3d.py end to end on CPU: a small synthetic-rooms model trained for a few iterations
segments one generated room given as .ply, .npy, .txt or a prepared sample; the coloured .ply
files have the scene's points, the PNG is a real picture, the prediction equals the test
pipeline's; ScanNet-style models get superpoints computed with the data preparation's method;
bad input stops with exit status 2 and a message naming the file."""
import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip('spconv.pytorch')
pytest.importorskip('plyfile')

from influencer_data import s3dis  # noqa: E402
from influencer_data import synthetic_3d as synthetic  # noqa: E402
from influencer_data.ply import read_vertices, write_vertices  # noqa: E402
from influencer_data.point_cloud import read_scene  # noqa: E402
from influencerformer3d import inference  # noqa: E402
from influencerformer3d.runner import allow_mmengine_checkpoints, dataset_cfgs  # noqa: E402
from tests import ROOT, load_script  # noqa: E402

CONFIGS = os.path.join(ROOT, 'projects', 'InfluencerFormer3D', 'configs')
SYNTH = os.path.join(CONFIGS, 'influencerformer_synthetic-rooms.py')
SCANNET = os.path.join(CONFIGS, 'influencerformer_1xb4_scannet.py')
# a ScanNet-style model small enough to build in a second (random weights: only the plumbing counts)
SCANNET_TINY = ['model.num_channels=8', 'model.backbone.num_planes=[8,16,24,32,40]', 'model.decoder.in_channels=8',
                'model.decoder.num_layers=1', 'model.decoder.d_model=32', 'model.decoder.num_heads=2',
                'model.decoder.hidden_dim=64']
# After a few iterations the objectness head is still negative and the mask probabilities stay
# below 0.2 (median ~0.04), so the default thresholds (scores > 0, mask probability > 0.15) drop
# every candidate: the end-to-end runs lower them (the instance logic on known predictions:
# test_outputs_of_known_predictions).
KEEP_ALL = ['--score-thr', '-1', '--cfg-options', 'model.test_cfg.inst_score_thr=-1',
            'model.test_cfg.sp_score_thr=0.05']
demo = load_script('tools/demo_3d.py')
train_3d = load_script('tools/train_3d.py')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """(rooms data root, checkpoint of 6 training iterations, the room of Area 5)."""
    from mmengine.runner import Runner
    tmp = tmp_path_factory.mktemp('demo')
    rooms = str(tmp / 'rooms')
    # 2 rooms per area: training skips rooms without furniture (filter_empty_gt)
    made = synthetic.generate(rooms, num_rooms_per_area=2, areas=[1, 2, 3, 4, 5, 6], points=2500, seed=3,
                              superpoints=False)
    iters = 6
    args = train_3d.parse_args([SYNTH, '--work-dir', str(tmp / 'work'), '--data-root', rooms, '--cfg-options',
                                f'train_cfg.max_iters={iters}', 'train_cfg.val_interval=100',
                                f'param_scheduler.end={iters}', f'default_hooks.checkpoint.interval={iters}',
                                'randomness.seed=0'])
    cfg = train_3d.build_cfg(args)
    for ds in dataset_cfgs(cfg, ('train',)):
        for step in ds['pipeline']:
            if step['type'] == 'PointSample_':
                step['num_points'] = 2000
    allow_mmengine_checkpoints()
    torch.set_num_threads(1)
    Runner.from_cfg(cfg).train()
    room = os.path.join(rooms, 'points', made['rooms'][5][0] + '.bin')
    return rooms, str(tmp / 'work' / f'iter_{iters}.pth'), room


def _run(config, checkpoint, scene, out, *extra):
    return demo.main([config, checkpoint, scene, '--out', str(out), *extra])


def test_ply_scene_files_counts_and_picture(trained, tmp_path, capsys):
    from PIL import Image
    _, ckpt, room = trained
    pts = np.fromfile(room, np.float32).reshape(-1, 6)
    scene = tmp_path / 'room.ply'
    write_vertices(str(scene), dict(x=pts[:, 0], y=pts[:, 1], z=pts[:, 2], red=pts[:, 3].astype(np.uint8),
                                    green=pts[:, 4].astype(np.uint8), blue=pts[:, 5].astype(np.uint8)))
    assert _run(SYNTH, ckpt, str(scene), tmp_path / 'out', *KEEP_ALL) == 0
    printed = capsys.readouterr().out
    out = tmp_path / 'out'
    with open(out / 'room_instances.json') as f:
        summary = json.load(f)
    assert summary['points'] == len(pts) and summary['instances'], 'no instance (see KEEP_ALL)'
    assert f"{len(summary['instances'])} instances with score > -1" in printed
    for kind in ('instances', 'semantic'):
        v = read_vertices(str(out / f'room_{kind}.ply'))
        assert list(v) == ['x', 'y', 'z', 'red', 'green', 'blue', 'instance', 'semantic']
        assert len(v['x']) == len(pts)
        np.testing.assert_array_equal(np.stack([v['x'], v['y'], v['z']], 1), pts[:, :3])
    inst, sem = v['instance'], v['semantic']
    assert 0 <= sem.min() and sem.max() < 13
    # the JSON's instances are the PLY's ids 1..n with their point counts, best score first
    assert [r['id'] for r in summary['instances']] == list(range(1, len(summary['instances']) + 1))
    assert [r['points'] for r in summary['instances']] == \
        [int((inst == r['id']).sum()) for r in summary['instances']]
    scores = [r['score'] for r in summary['instances']]
    assert scores == sorted(scores, reverse=True)
    assert all(r['class'] in s3dis.S3DIS_CLASSES for r in summary['instances'])
    with Image.open(out / 'room.png') as im:
        assert im.size[0] >= 1000 and im.size[1] >= 800
        px = np.asarray(im.convert('RGB'))
    assert len(np.unique(px.reshape(-1, 3), axis=0)) > 50  # drawn points and legends, not a blank page
    # points coloured by instance: the instance PLY's colours follow its ids
    rgb = np.stack([read_vertices(str(out / 'room_instances.ply'))[k] for k in ('red', 'green', 'blue')], 1)
    for i in np.unique(inst):
        assert len(np.unique(rgb[inst == i], axis=0)) == 1


def test_prepared_sample_equals_the_test_pipeline(trained):
    """The demo's prediction of a prepared room is the test loop's prediction of it."""
    from mmdet3d.registry import DATASETS
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from influencerformer3d.runner import set_data_root
    rooms, ckpt, room = trained
    cfg = Config.fromfile(SYNTH)
    set_data_root(cfg, rooms)
    cfg.model.test_cfg.inst_score_thr, cfg.model.test_cfg.sp_score_thr = -1, 0.05  # see KEEP_ALL
    model = inference.build_model(cfg, ckpt)
    ds = DATASETS.build(cfg.test_dataloader.dataset)
    item = ds[0]
    assert item['data_samples'].lidar_path == room
    ref = model.test_step(pseudo_collate([item]))[0].pred_pts_seg
    scene = read_scene(room)
    assert scene.superpoints is None  # generated without them
    pred = inference.predict_points(model, cfg, scene.model_points())
    assert pred['masks'].shape[1] == len(scene) and len(pred['scores']) > 0
    np.testing.assert_array_equal(pred['masks'], ref.pts_instance_mask[0])
    np.testing.assert_array_equal(pred['scores'], ref.instance_scores)
    np.testing.assert_array_equal(pred['labels'], ref.instance_labels)
    np.testing.assert_array_equal(pred['semantic'], ref.pts_semantic_mask[0])
    assert not inference.needs_superpoints(cfg)
    names, palette, offset = inference.class_info(cfg)
    assert names == list(s3dis.S3DIS_CLASSES) and palette.shape == (13, 3) and offset == 0


def test_outputs_of_known_predictions(tmp_path):
    """Instance ids 1..n by score (the higher scored instance wins shared points, low scores are
    dropped), class names and colours in the files, for predictions made up by hand."""
    from mmengine.config import Config
    from influencer_data.point_cloud import scene_from_array
    cfg = Config.fromfile(SYNTH)
    scene = scene_from_array(np.arange(18, dtype=np.float64).reshape(6, 3), 'six.npy')
    pred = dict(masks=np.array([[1, 1, 0, 0, 0, 0], [0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 0]], bool),
                scores=np.array([0.5, 0.9, 0.2]), labels=np.array([2, 7, 8]), semantic=np.array([2, 7, 7, 7, 8, 0]))
    paths, rows = demo.write_outputs(str(tmp_path), 'six', scene, pred, 0.3, cfg)
    assert [(r['id'], r['class'], r['score'], r['points']) for r in rows] == [(1, 'table', 0.9, 3), (2, 'wall', 0.5, 1)]
    v = read_vertices(paths['instances'])
    np.testing.assert_array_equal(v['instance'], [2, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(v['semantic'], pred['semantic'])
    rgb = np.stack([v['red'], v['green'], v['blue']], 1)
    assert (rgb[4:] == 128).all() and len({tuple(c) for c in rgb[:4]}) == 2
    sem_rgb = np.stack([read_vertices(paths['semantic'])[k] for k in ('red', 'green', 'blue')], 1)
    _, palette, _ = inference.class_info(cfg)
    np.testing.assert_array_equal(sem_rgb, palette[pred['semantic']])
    with open(paths['json']) as f:
        assert json.load(f)['instances'][0] == {'id': 1, 'label': 7, 'class': 'table', 'score': 0.9, 'points': 3}
    assert os.path.getsize(paths['png']) > 10_000


def test_npy_and_txt_scenes_keep_their_coordinates(trained, tmp_path, capsys):
    _, ckpt, room = trained
    pts = np.fromfile(room, np.float32).reshape(-1, 6).astype(np.float64)
    xyz = pts[:, :3] + [5e5, 4e6, 10.0]  # map coordinates: written back as doubles
    np.save(tmp_path / 'map.npy', xyz)
    assert _run(SYNTH, ckpt, str(tmp_path / 'map.npy'), tmp_path / 'out') == 0
    assert 'has no colours' in capsys.readouterr().out
    v = read_vertices(str(tmp_path / 'out' / 'map_semantic.ply'))
    assert v['x'].dtype == np.float64
    np.testing.assert_array_equal(np.stack([v['x'], v['y'], v['z']], 1), xyz)
    np.savetxt(tmp_path / 'cols.txt', np.concatenate([pts[:, :3], pts[:, 3:] / 255.0], 1), delimiter=',')
    assert _run(SYNTH, ckpt, str(tmp_path / 'cols.txt'), tmp_path / 'out') == 0
    assert len(read_vertices(str(tmp_path / 'out' / 'cols_instances.ply'))['x']) == len(pts)
    np.testing.assert_allclose(read_scene(str(tmp_path / 'cols.txt')).rgb, pts[:, 3:], atol=1e-3)


def test_superpoints_for_scannet_models(trained, tmp_path, monkeypatch):
    """A ScanNet-style model reads superpoints: computed by s3dis.compute_superpoints (graph) for a
    scene without them, taken from <data_root>/super_points for a prepared sample with them."""
    from mmdet3d.registry import MODELS
    from mmengine.registry import init_default_scope
    rooms, _, room = trained
    cfg = demo._config(demo.parse_args([SCANNET, 'model.pth', 'scene.ply', '--cfg-options', *SCANNET_TINY]))
    assert inference.needs_superpoints(cfg)
    names, _, offset = inference.class_info(cfg)
    assert len(names) == 20 and names[:2] == ['wall', 'floor'] and offset == 2  # 18 instance classes
    init_default_scope('mmdet3d')
    ckpt = tmp_path / 'scannet.pth'
    torch.save(dict(state_dict=MODELS.build(cfg.model).state_dict()), ckpt)

    calls = []
    real = s3dis.compute_superpoints
    monkeypatch.setattr(s3dis, 'compute_superpoints', lambda p, m='graph', **kw: calls.append((p, m)) or real(p, m))
    pts = np.fromfile(room, np.float32).reshape(-1, 6)
    np.save(tmp_path / 'room.npy', pts)
    assert _run(SCANNET, str(ckpt), str(tmp_path / 'room.npy'), tmp_path / 'out', '--cfg-options',
                *SCANNET_TINY) == 0
    assert len(calls) == 1 and calls[0][1] == 'graph'
    np.testing.assert_array_equal(calls[0][0], read_scene(str(tmp_path / 'room.npy')).model_points())
    assert len(read_vertices(str(tmp_path / 'out' / 'room_semantic.ply'))['x']) == len(pts)

    # a prepared sample with its own superpoints: used as they are
    sp_dir = os.path.join(rooms, 'super_points')
    os.makedirs(sp_dir, exist_ok=True)
    real(pts, 'voxel').tofile(os.path.join(sp_dir, os.path.basename(room)))
    try:
        np.testing.assert_array_equal(read_scene(room).superpoints, real(pts, 'voxel'))
        assert _run(SCANNET, str(ckpt), room, tmp_path / 'out', '--cfg-options', *SCANNET_TINY) == 0
        assert len(calls) == 1
    finally:
        os.remove(os.path.join(sp_dir, os.path.basename(room)))


def test_errors_name_the_file(trained, tmp_path, capsys):
    _, ckpt, room = trained
    out = tmp_path / 'out'

    def error(scene, checkpoint=ckpt):
        assert _run(SYNTH, checkpoint, str(scene), out) == 2
        return capsys.readouterr().err

    assert f'scene file not found: {tmp_path / "none.ply"}' in error(tmp_path / 'none.ply')
    np.save(tmp_path / 'four.npy', np.zeros((10, 4)))
    assert f'{tmp_path / "four.npy"}: 4 columns; expected 3 (x y z) or 6' in error(tmp_path / 'four.npy')
    (tmp_path / 'bad.ply').write_bytes(b'ply\nformat ascii 1.0\nelement vertex two\n')
    assert f'{tmp_path / "bad.ply"}: not a readable PLY file' in error(tmp_path / 'bad.ply')
    write_vertices(str(tmp_path / 'noz.ply'), dict(x=np.zeros(3), y=np.zeros(3)))
    assert 'no vertex properties z' in error(tmp_path / 'noz.ply')
    (tmp_path / 'scene.las').write_bytes(b'')
    assert 'unsupported file type .las' in error(tmp_path / 'scene.las')
    (tmp_path / 'odd.bin').write_bytes(np.zeros(7, np.float32).tobytes())
    assert 'not a multiple of 6' in error(tmp_path / 'odd.bin')
    assert f'checkpoint not found: {tmp_path / "no.pth"}' in error(room, str(tmp_path / 'no.pth'))
    assert not out.exists()
    # a checkpoint of another model
    assert _run(SCANNET, ckpt, room, out, '--cfg-options', *SCANNET_TINY) == 2
    assert 'does not fit the model of the config' in capsys.readouterr().err
