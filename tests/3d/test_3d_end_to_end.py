"""InfluencerFormer3D end to end on CPU: synthetic rooms -> tools/train_3d.py's config -> a few
training iterations (the loss goes down) -> validation with UnifiedSegMetric -> resume."""
import os

import numpy as np
import pytest
import torch

pytest.importorskip('spconv.pytorch')

from influencer_data import synthetic_3d as synthetic  # noqa: E402
from influencerformer3d.runner import allow_mmengine_checkpoints, dataset_cfgs  # noqa: E402
from tests import ROOT, load_script  # noqa: E402

CONFIGS = os.path.join(ROOT, 'projects', 'InfluencerFormer3D', 'configs')
train_3d = load_script('tools/train_3d.py')


@pytest.fixture(scope='module')
def rooms(tmp_path_factory):
    out = tmp_path_factory.mktemp('rooms') / 'synthetic_s3dis'
    synthetic.generate(str(out), num_rooms_per_area=3, areas=[1, 2, 3, 4, 5, 6], points=3000, seed=3)
    return str(out)


def _cfg(config, rooms, work_dir, iters, *options, flags=()):
    args = train_3d.parse_args([
        os.path.join(CONFIGS, config), '--work-dir', str(work_dir), '--data-root', rooms, *flags, '--cfg-options',
        f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}', f'param_scheduler.end={iters}',
        f'default_hooks.checkpoint.interval={iters}', 'default_hooks.logger.interval=1',
        'log_processor.window_size=1', 'randomness.seed=0', *options])
    cfg = train_3d.build_cfg(args)
    for ds in dataset_cfgs(cfg, ('train',)):
        for step in ds['pipeline']:
            if step['type'] == 'PointSample_':
                step['num_points'] = 2000
    return cfg


def _train(cfg):
    from mmengine.runner import Runner
    torch.set_num_threads(1)
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


@pytest.mark.parametrize('config', ['influencerformer_synthetic-rooms.py', 'oneformer3d_synthetic-rooms.py'])
def test_training_lowers_the_loss_and_validation_reports_map(config, rooms, tmp_path):
    allow_mmengine_checkpoints()
    runner = _train(_cfg(config, rooms, tmp_path, 16))
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    assert len(losses) == 16 and np.isfinite(losses).all()
    assert np.mean(losses[-4:]) < 0.9 * np.mean(losses[:4])
    metrics = {k[4:]: v.current() for k, v in runner.message_hub.log_scalars.items() if k.startswith('val/')}
    for key in ('all_ap', 'all_ap_50%', 'all_ap_25%', 'miou', 'pq', 'duplicate_rate'):
        assert key in metrics and 0.0 <= metrics[key] <= 1.0, (key, metrics)
    assert metrics['all_ap'] <= metrics['all_ap_50%'] <= metrics['all_ap_25%']
    assert (tmp_path / 'iter_16.pth').exists()
    assert 0 < runner.message_hub.get_scalar('train/criterion_time').current() < 60
    if config.startswith('influencerformer_'):  # variant 'ot': the near-hard plan, not annealed
        crit = runner.model.criterion.inst_criterion
        assert (crit.epsilon, crit.core.sinkhorn_iters, crit.fix_dice_loss_weight) == (0.002, 300, True)
        assert 'train/epsilon' not in runner.message_hub.log_scalars


def test_resume_continues_from_the_checkpoint(rooms, tmp_path):
    allow_mmengine_checkpoints()
    first = _train(_cfg('influencerformer_synthetic-rooms.py', rooms, tmp_path, 2, 'train_cfg.val_interval=100'))
    weights = {k: v.clone() for k, v in first.model.state_dict().items()}
    # the work dir holds the first run: training into it again needs --resume (or --overwrite)
    cfg = _cfg('influencerformer_synthetic-rooms.py', rooms, tmp_path, 3, 'train_cfg.val_interval=100',
               flags=('--resume', str(tmp_path / 'iter_2.pth')))
    assert cfg.resume is True and cfg.load_from == str(tmp_path / 'iter_2.pth')
    from mmengine.runner import Runner
    second = Runner.from_cfg(cfg)
    second.load_or_resume()
    assert second.iter == 2
    state = second.model.state_dict()
    assert all(torch.equal(weights[k], state[k]) for k in weights)


def test_test_tool_reports_the_metric_results(rooms, tmp_path, capsys):
    """tools/test_3d.py on a trained checkpoint: the per-class instance APs it prints and writes
    come from UnifiedSegMetric's results (its overall row equals the returned mAPs)."""
    import json
    allow_mmengine_checkpoints()
    _train(_cfg('influencerformer_synthetic-rooms.py', rooms, tmp_path, 2, 'train_cfg.val_interval=100'))
    test_3d = load_script('tools/test_3d.py')
    config = os.path.join(CONFIGS, 'influencerformer_synthetic-rooms.py')
    assert test_3d.main([config, str(tmp_path / 'iter_2.pth'), '--data-root', rooms,
                         '--work-dir', str(tmp_path / 'eval')]) == 0
    with open(tmp_path / 'eval' / 'test_metrics.json') as f:
        res = json.load(f)
    metrics = {k.split('/')[-1]: v for k, v in res['metrics'].items()}
    per_class = res['instance_per_class']
    assert len(per_class) > 1 and list(per_class)[-1] == 'Overall'
    overall = per_class['Overall']
    for key, name in (('ap', 'all_ap'), ('ap50', 'all_ap_50%'), ('ap25', 'all_ap_25%')):
        assert overall[key] == metrics[name]
    out = capsys.readouterr().out
    assert 'Instance segmentation (%), per class and overall:' in out and 'duplicate rate' in out
