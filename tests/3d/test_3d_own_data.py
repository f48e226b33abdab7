"""Own data end to end on CPU: synthetic rooms exported as labelled .ply files ->
datasets/prepare_own_3d.py's converter -> the config template filled in for the rooms' 13 classes
-> OwnSegDataset returns the converted points and labels -> tools/train_3d.py's config trains a
small model for a few iterations and validates with UnifiedSegMetric."""
import os

import numpy as np
import pytest
import torch

pytest.importorskip('spconv.pytorch')
pytest.importorskip('plyfile')

from influencer_data import own_3d, s3dis  # noqa: E402
from influencer_data import synthetic_3d as synthetic  # noqa: E402
from influencer_data.ply import write_vertices  # noqa: E402
from influencerformer3d.runner import allow_mmengine_checkpoints, dataset_cfgs  # noqa: E402
from tests import ROOT, load_script  # noqa: E402

TEMPLATE = os.path.join(ROOT, 'projects', 'InfluencerFormer3D', 'configs', 'influencerformer_own-data.py')
CLASSES = list(s3dis.S3DIS_CLASSES)
train_3d = load_script('tools/train_3d.py')
# the synthetic-rooms config's model size (a CPU fits it); the template has the S3DIS model's
TINY = ['model.num_channels=16', 'model.backbone.num_planes=[16,32,48,64,80]', 'model.decoder.in_channels=16',
        'model.decoder.num_layers=2', 'model.decoder.num_instance_queries=32', 'model.decoder.d_model=64',
        'model.decoder.num_heads=4', 'model.decoder.hidden_dim=128', 'model.test_cfg.topk_insts=100',
        'model.test_cfg.npoint_thr=20']
LOADERS = [f'{s}_dataloader.{k}' for s in ('train', 'val', 'test')
           for k in ('num_workers=0', 'persistent_workers=False')]


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    """(data root, filled-in config, {scene: (points, instance, semantic)}): 5 rooms, 'scene4' validates."""
    tmp = tmp_path_factory.mktemp('own')
    src = tmp / 'src'
    src.mkdir()
    rooms = {}
    for i in range(5):
        _, pts, ins, sem = synthetic.make_room(7, 1, i, 1500, max_objects=6)
        pts[:, 3:] = np.round(pts[:, 3:])  # .ply colours are uchar
        write_vertices(str(src / f'scene{i}.ply'), dict(
            x=pts[:, 0], y=pts[:, 1], z=pts[:, 2], red=pts[:, 3].astype(np.uint8),
            green=pts[:, 4].astype(np.uint8), blue=pts[:, 5].astype(np.uint8), instance=ins, semantic=sem))
        rooms[f'scene{i}'] = (pts, ins, sem)
    out = str(tmp / 'data')
    own_3d.convert(str(src), out, CLASSES, val_scenes=['scene4'], superpoints=False, verbose=False)
    config = own_3d.write_config(TEMPLATE, str(tmp / 'own.py'), CLASSES, ['ceiling', 'floor', 'wall'], out)
    return out, config, rooms


def _cfg(config, work_dir, *options):
    args = train_3d.parse_args([config, '--work-dir', str(work_dir), '--cfg-options', *TINY, *LOADERS,
                                'randomness.seed=0', *options])
    return train_3d.build_cfg(args)


def test_template_counts_follow_the_class_names(converted, tmp_path):
    cfg = _cfg(converted[1], tmp_path)
    assert cfg.class_names == CLASSES and cfg.num_classes == 13
    assert cfg.model.decoder.num_semantic_queries == cfg.model.criterion.num_semantic_classes == 13
    assert cfg.model.test_cfg.stuff_cls == [0, 1, 2] and cfg.model.test_cfg.thing_cls == list(range(3, 13))
    assert cfg.val_evaluator.metric_meta.classes == CLASSES + ['unlabeled']
    assert cfg.val_evaluator.metric_meta.ignore_index == [13]
    assert [t['num_classes'] for t in cfg.train_pipeline if t['type'] == 'PointInstClassMapping_'] == [13]
    assert {d.data_root for d in dataset_cfgs(cfg)} == {converted[0] + '/'}


def test_dataset_returns_the_converted_scenes(converted, tmp_path):
    from mmdet3d.registry import DATASETS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet3d')
    cfg = _cfg(converted[1], tmp_path)
    val = DATASETS.build(cfg.val_dataloader.dataset)
    assert list(val.metainfo['classes']) == CLASSES and val.metainfo['seg_valid_class_ids'] == tuple(range(13))
    item = val[0]
    pts, ins, sem = converted[2]['scene4']
    np.testing.assert_allclose(item['inputs']['points'][:, :3].numpy(), pts[:, :3])
    np.testing.assert_array_equal(item['data_samples'].eval_ann_info['pts_semantic_mask'], sem)
    np.testing.assert_array_equal(item['data_samples'].eval_ann_info['pts_instance_mask'], ins)
    train = DATASETS.build(cfg.train_dataloader.dataset)
    assert len(train) == 4
    sample = train[0]['data_samples']
    assert len(sample.gt_instances_3d.labels_3d) == len(np.unique(converted[2]['scene0'][1]))

    bad = cfg.val_dataloader.dataset.copy()
    bad.metainfo = dict(classes=CLASSES[::-1])
    with pytest.raises(ValueError, match='converted with classes'):
        DATASETS.build(bad)


def test_missing_data_names_the_converter(tmp_path, capsys):
    from mmdet3d.registry import DATASETS
    from influencerformer3d.data import DatasetNotPreparedError
    missing = str(tmp_path / 'nothing')
    assert train_3d.main([TEMPLATE, '--data-root', missing]) == 2
    err = capsys.readouterr().err
    assert 'own_infos_train.pkl' in err and 'python datasets/prepare_own_3d.py --input <folder> --out ' + missing in err
    with pytest.raises(DatasetNotPreparedError, match='prepare_own_3d.py'):
        DATASETS.build(dict(type='OwnSegDataset', data_root=missing, ann_file='own_infos_val.pkl',
                            metainfo=dict(classes=['a']), pipeline=[], test_mode=True))
    with pytest.raises(ValueError, match=r'needs metainfo=dict\(classes'):
        DATASETS.build(dict(type='OwnSegDataset', data_root=missing, ann_file='own_infos_val.pkl'))


def test_a_few_training_iterations_and_validation(converted, tmp_path):
    from mmengine.runner import Runner
    allow_mmengine_checkpoints()
    torch.set_num_threads(1)
    cfg = _cfg(converted[1], tmp_path, 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
               'param_scheduler.end=1', 'default_hooks.logger.interval=1', 'log_processor.window_size=1')
    runner = Runner.from_cfg(cfg)
    runner.train()
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    assert len(losses) == 2 and np.isfinite(losses).all()  # 4 scenes, batch 2
    metrics = {k[4:]: v.current() for k, v in runner.message_hub.log_scalars.items() if k.startswith('val/')}
    for key in ('all_ap', 'all_ap_50%', 'miou', 'pq'):
        assert key in metrics and 0.0 <= metrics[key] <= 1.0, (key, metrics)
    assert (tmp_path / 'epoch_1.pth').exists()
