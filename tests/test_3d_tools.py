"""InfluencerFormer3D configs and train / eval tools: every config loads (and builds its model
once the plugin registers it), the influencer configs differ from the baselines only in the
instance criterion, tools/train_3d.py / tools/test_3d.py option handling and data checks, the
result parsing of test_3d.py, and the argument handling of tools/train_3d.sh / eval_3d.sh
(through their dry-run mode).  No training here."""
import copy
import glob
import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.full_stack
pytest.importorskip('mmdet3d')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT = os.path.join(ROOT, 'projects', 'InfluencerFormer3D')
CONFIG_DIR = os.path.join(PROJECT, 'configs')
TOOLS = os.path.join(ROOT, 'tools')
CONFIGS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(CONFIG_DIR, '*.py')))

BASELINE_OF = {
    'influencerformer_1xb2_s3dis-area-5.py': 'oneformer3d_1xb2_s3dis-area-5.py',
    'influencerformer-reference_1xb2_s3dis-area-5.py': 'oneformer3d_1xb2_s3dis-area-5.py',
    'influencerformer_1xb4_scannet.py': 'oneformer3d_1xb4_scannet.py',
    'influencerformer-reference_1xb4_scannet.py': 'oneformer3d_1xb4_scannet.py',
    'synthetic-rooms_influencer.py': 'synthetic-rooms_baseline.py',
    'synthetic-rooms_reference.py': 'synthetic-rooms_baseline.py',
}
VARIANT_OF = {name: ('reference' if 'reference' in name else 'ot') for name in BASELINE_OF}
HUNGARIAN_ONLY_KEYS = {'matcher', 'fix_dice_loss_weight', 'fix_mean_loss', '_delete_'}


def _load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_3d = _load_module('train_3d', os.path.join(TOOLS, 'train_3d.py'))
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)  # test_3d.py imports train_3d
test_3d = _load_module('test_3d_tool', os.path.join(TOOLS, 'test_3d.py'))

from mmengine.config import Config  # noqa: E402

_CACHE = {}


def load(name):
    """Config.fromfile of configs/<name> (cached; callers that modify it get a deep copy)."""
    if name not in _CACHE:
        _CACHE[name] = Config.fromfile(os.path.join(CONFIG_DIR, name))
    return copy.deepcopy(_CACHE[name])


def _walk_keys(obj, path=''):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield f'{path}.{k}', k
            yield from _walk_keys(v, f'{path}.{k}')
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _walk_keys(v, f'{path}[{i}]')


def _without_inst_criterion(cfg):
    d = cfg.to_dict()
    d['model']['criterion'].pop('inst_criterion')
    for key in ('custom_imports', 'num_instance_classes'):
        d.pop(key, None)
    return d


def _type_names(obj):
    """Every ``type`` string of a config subtree."""
    out = set()
    if isinstance(obj, dict):
        if isinstance(obj.get('type'), str):
            out.add(obj['type'])
        for v in obj.values():
            out |= _type_names(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            out |= _type_names(v)
    return out


# ---------------------------------------------------------------------------------- configs
def test_config_set():
    assert set(CONFIGS) >= {
        'oneformer3d_1xb2_s3dis-area-5.py', 'influencerformer_1xb2_s3dis-area-5.py',
        'influencerformer-reference_1xb2_s3dis-area-5.py', 'oneformer3d_1xb4_scannet.py',
        'influencerformer_1xb4_scannet.py', 'synthetic-rooms_baseline.py',
        'synthetic-rooms_influencer.py'}


@pytest.mark.parametrize('name', CONFIGS)
def test_config_loads(name):
    cfg = load(name)
    assert cfg.custom_imports == dict(imports=['influencerformer3d'], allow_failed_imports=False)
    assert cfg.default_scope == 'mmdet3d'  # from mmdet3d::_base_/default_runtime.py
    assert cfg.model.type in ('S3DISOneFormer3D', 'ScanNetOneFormer3D')
    assert not [p for p, k in _walk_keys(cfg.to_dict()) if k == '_delete_'], \
        '_delete_ left in the merged config'
    for split in ('train', 'val', 'test'):
        assert train_3d.dataset_cfgs(cfg, (split,)), f'{split}_dataloader has no dataset'


@pytest.mark.parametrize('name', sorted(BASELINE_OF))
def test_influencer_configs_swap_only_the_instance_criterion(name):
    cfg, base = load(name), load(BASELINE_OF[name])
    inst = cfg.model.criterion.inst_criterion
    assert inst.type == 'InfluencerCriterion'
    assert inst.variant == VARIANT_OF[name]
    assert not HUNGARIAN_ONLY_KEYS & set(inst), f'Hungarian keys leaked: {set(inst)}'
    assert list(inst.loss_weight) == [0.5, 1.0] and inst.bg_weight == 0.1
    assert inst.num_classes == base.model.criterion.inst_criterion.num_classes
    assert inst.non_object_weight == base.model.criterion.inst_criterion.non_object_weight
    for key in ('attr_weight', 'rep_weight', 'rep_margin', 'temperature', 'iter_matcher'):
        assert key in inst
    # the only other difference: variant 'ot' anneals its transport temperature
    hooks = list(cfg.get('custom_hooks', []))
    annealing = [h for h in hooks if h['type'] == 'EpsilonAnnealingHook']
    assert len(annealing) == (1 if inst.variant == 'ot' else 0)
    if annealing:
        assert annealing[0]['start'] == inst.epsilon and annealing[0]['end'] < inst.epsilon
    cfg.custom_hooks = [h for h in hooks if h['type'] != 'EpsilonAnnealingHook']
    assert _without_inst_criterion(cfg) == _without_inst_criterion(base)


def test_baseline_criteria_are_hungarian():
    for name in ('oneformer3d_1xb2_s3dis-area-5.py', 'synthetic-rooms_baseline.py'):
        inst = load(name).model.criterion.inst_criterion
        assert inst.type == 'InstanceCriterion' and inst.matcher.type == 'HungarianMatcher'
        assert list(inst.loss_weight) == [0.5, 1.0, 1.0, 0.5]
    inst = load('oneformer3d_1xb4_scannet.py').model.criterion.inst_criterion
    assert inst.matcher.type == 'SparseMatcher' and inst.matcher.topk == 1


def test_s3dis_baseline_values():
    cfg = load('oneformer3d_1xb2_s3dis-area-5.py')
    assert cfg.model.voxel_size == 0.05
    assert cfg.model.decoder.num_instance_queries == 400 and cfg.model.decoder.num_layers == 3
    sample = [t for t in cfg.train_pipeline if t['type'] == 'PointSample_']
    assert sample and sample[0]['num_points'] == 180000
    assert cfg.optim_wrapper.optimizer == dict(type='AdamW', lr=0.0001, weight_decay=0.05)
    assert cfg.optim_wrapper.clip_grad.max_norm == 10
    assert cfg.param_scheduler.type == 'PolyLR' and cfg.param_scheduler.power == 0.9
    assert cfg.train_cfg.max_epochs == 512 and cfg.train_cfg.val_interval == 16
    assert cfg.train_dataloader.batch_size == 2
    train = train_3d.dataset_cfgs(cfg, ('train',))
    assert [d.ann_file for d in train] == [f's3dis_infos_Area_{a}.pkl' for a in (1, 2, 3, 4, 6)]
    assert [d.ann_file for d in train_3d.dataset_cfgs(cfg, ('val', 'test'))] == \
        ['s3dis_infos_Area_5.pkl'] * 2
    assert {d.data_root for d in train_3d.dataset_cfgs(cfg)} == {'data/s3dis/'}
    assert cfg.val_evaluator.type == 'UnifiedSegMetric'
    assert cfg.model.test_cfg.topk_insts == 450 and cfg.model.test_cfg.npoint_thr == 300
    assert cfg.load_from is None


def test_scannet_baseline_values():
    cfg = load('oneformer3d_1xb4_scannet.py')
    assert cfg.train_dataloader.batch_size == 4
    assert {d.data_root for d in train_3d.dataset_cfgs(cfg)} == {'data/scannet/'}
    assert cfg.model.voxel_size == 0.02 and cfg.model.decoder.type == 'ScanNetQueryDecoder'
    assert cfg.val_evaluator.type == 'UnifiedSegMetric'
    assert cfg.val_evaluator.inst_mapping == cfg.val_evaluator.sem_mapping[2:]
    assert cfg.train_dataloader.dataset.ann_file == 'scannet_oneformer3d_infos_train.pkl'
    assert cfg.val_dataloader.dataset.ann_file == 'scannet_oneformer3d_infos_val.pkl'


def test_synthetic_configs_fit_a_cpu():
    gen = _load_module('prepare_synthetic_3d', train_3d.SYNTHETIC_GENERATOR)
    for name in ('synthetic-rooms_baseline.py', 'synthetic-rooms_influencer.py'):
        cfg = load(name)
        assert cfg.model.num_channels <= 32 and cfg.model.decoder.num_instance_queries <= 64
        assert cfg.model.decoder.num_layers == 2
        assert cfg.train_cfg.type == 'IterBasedTrainLoop' and cfg.train_cfg.max_iters <= 1000
        assert cfg.train_cfg.val_interval == cfg.train_cfg.max_iters  # one validation, at the end
        assert cfg.param_scheduler.by_epoch is False
        for split in ('train', 'val', 'test'):
            loader = cfg[f'{split}_dataloader']
            assert loader.num_workers <= 2
            assert not (loader.num_workers == 0 and loader.get('persistent_workers', False))
        assert {d.data_root for d in train_3d.dataset_cfgs(cfg)} == \
            {'datasets/generated/synthetic_s3dis/'}
        # the generator's own defaults, so prepare_synthetic_3d.py without options matches
        assert gen._params(**{**dict(num_rooms_per_area=6, areas=(1, 2, 3, 4, 5, 6), seed=0,
                                     points=12000, max_objects=15, superpoints=True,
                                     rotate=True), **cfg.synthetic_data}) == \
            gen._params(6, (1, 2, 3, 4, 5, 6), 0, 12000, 15, True, True)
        topk = cfg.model.test_cfg.topk_insts
        assert topk <= cfg.model.decoder.num_instance_queries * cfg.model.num_classes


def _missing_data_registrations(cfg):
    """Dataset, transform and metric types of cfg that the registries do not hold (yet)."""
    from mmdet3d.registry import DATASETS, METRICS, TRANSFORMS
    import influencerformer3d  # noqa: F401  (registers)
    missing = []
    for ds in train_3d.dataset_cfgs(cfg):
        if DATASETS.get(ds.type) is None:
            missing.append(ds.type)
        missing += [t for t in sorted(_type_names(ds.pipeline)) if TRANSFORMS.get(t) is None]
    if METRICS.get(cfg.val_evaluator.type) is None:
        missing.append(cfg.val_evaluator.type)
    return sorted(set(missing))


@pytest.mark.parametrize('name', CONFIGS)
def test_model_builds(name):
    from mmdet3d.registry import MODELS
    cfg = load(name)
    import influencerformer3d  # noqa: F401
    missing = [n for n in sorted(_type_names(cfg.model.to_dict())) if MODELS.get(n) is None
               and n not in ('HungarianMatcher', 'SparseMatcher', 'QueryClassificationCost',
                             'MaskBCECost', 'MaskDiceCost')]
    if missing:
        pytest.skip(f'not registered (yet): {missing}')
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet3d')  # as the Runner does (default_scope of the config)
    model = MODELS.build(cfg.model)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params > 0
    inst = model.criterion.inst_criterion
    if name in BASELINE_OF:
        assert type(inst).__name__ == 'InfluencerCriterion' and inst.variant == VARIANT_OF[name]
    if name.startswith('synthetic'):
        assert n_params < 4_000_000  # 2.9M: the U-Net planes 16-80 dominate


def test_synthetic_dataset_pipeline_runs(tmp_path):
    """The synthetic config's train and test pipelines on 1 tiny room per area."""
    cfg = load('synthetic-rooms_influencer.py')
    missing = _missing_data_registrations(cfg)
    if missing:
        pytest.skip(f'not registered (yet): {missing}')
    from mmdet3d.registry import DATASETS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet3d')  # as the Runner does (default_scope of the config)
    root = str(tmp_path / 'rooms')
    cfg.synthetic_data = dict(num_rooms_per_area=2, areas=[1, 2, 3, 4, 5, 6], points=1500,
                              superpoints=False, seed=0)
    train_3d.set_data_root(cfg, root)
    assert train_3d.ensure_data(cfg, ('train', 'val')) == [root + '/']
    test = DATASETS.build(cfg.test_dataloader.dataset)
    item = test[0]
    assert item['inputs']['points'].shape[1] == 6
    train = DATASETS.build(cfg.train_dataloader.dataset)
    assert len(train) > 0
    item = train[0]
    n = cfg.train_pipeline[2]['num_points']
    assert item['inputs']['points'].shape == (n, 6) or item['inputs']['points'].shape[0] <= n
    assert item['data_samples'].gt_pts_seg.pts_instance_mask.shape[0] == \
        item['inputs']['points'].shape[0]


# ---------------------------------------------------------------------------------- train_3d.py
SYNTH = os.path.join(CONFIG_DIR, 'synthetic-rooms_influencer.py')
S3DIS = os.path.join(CONFIG_DIR, 'oneformer3d_1xb2_s3dis-area-5.py')


def test_train_args_and_resume(tmp_path):
    a = train_3d.parse_args([SYNTH])
    assert a.resume is None and a.launcher == 'none' and not a.amp
    a = train_3d.parse_args([SYNTH, '--resume', '--amp'])
    assert a.resume == 'auto' and a.amp
    a = train_3d.parse_args([SYNTH, '--resume', 'x.pth', '--launcher', 'pytorch',
                             '--cfg-options', 'train_cfg.max_iters=5', 'model.voxel_size=0.1',
                             '--work-dir', str(tmp_path)])
    assert a.resume == 'x.pth' and a.launcher == 'pytorch'
    with pytest.raises(SystemExit):
        train_3d.parse_args([SYNTH, '--launcher', 'nope'])

    cfg = train_3d.load_config(a)
    assert cfg.train_cfg.max_iters == 5 and cfg.model.voxel_size == 0.1
    assert cfg.work_dir == str(tmp_path) and cfg.launcher == 'pytorch'
    cfg = train_3d.load_config(train_3d.parse_args([SYNTH]))
    assert cfg.work_dir == os.path.join('./work_dirs', 'synthetic-rooms_influencer')

    cfg = train_3d.apply_train_options(cfg, train_3d.parse_args([SYNTH, '--resume']))
    assert cfg.resume is True and cfg.load_from is None
    ckpt = tmp_path / 'iter_5.pth'
    ckpt.write_bytes(b'')
    cfg = train_3d.apply_train_options(cfg, train_3d.parse_args([SYNTH, '--resume', str(ckpt)]))
    assert cfg.resume is True and cfg.load_from == str(ckpt)
    with pytest.raises(train_3d.ToolError, match='not found'):
        train_3d.apply_train_options(cfg, train_3d.parse_args([SYNTH, '--resume', 'nope.pth']))
    cfg = train_3d.apply_train_options(load('synthetic-rooms_baseline.py'),
                                       train_3d.parse_args([SYNTH, '--amp']))
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    cfg = load('synthetic-rooms_baseline.py')
    cfg.load_from = str(tmp_path / 'missing.pth')
    with pytest.raises(train_3d.ToolError, match='load_from'):
        train_3d.apply_train_options(cfg, train_3d.parse_args([SYNTH]))


def test_paths_set_for_plugin_import():
    assert ROOT in sys.path and PROJECT in sys.path
    parts = os.environ['PYTHONPATH'].split(os.pathsep)
    assert ROOT in parts and PROJECT in parts


def test_cpu_guards():
    import torch
    if torch.cuda.is_available():
        pytest.skip('CUDA present')
    cfg = load('synthetic-rooms_baseline.py')
    with pytest.raises(train_3d.ToolError, match='CUDA'):
        train_3d.check_device(cfg, launcher='pytorch')
    with pytest.raises(train_3d.ToolError, match='--amp'):
        train_3d.check_device(cfg, amp=True)
    train_3d.check_device(cfg)  # CPU, single process: fine


def test_cpu_threads(monkeypatch):
    import torch
    if torch.cuda.is_available():
        pytest.skip('CUDA present: threads are left alone')
    assert train_3d.parse_args([SYNTH, '--cpu-threads', '2']).cpu_threads == 2
    assert test_3d.parse_args([SYNTH, 'x.pth', '--cpu-threads', '0']).cpu_threads == 0
    old = torch.get_num_threads()
    try:
        monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
        assert train_3d.set_cpu_threads() == 1
        monkeypatch.setenv('OMP_NUM_THREADS', '2')
        assert train_3d.set_cpu_threads() == 2
        assert train_3d.set_cpu_threads(1) == 1
        assert train_3d.set_cpu_threads(0) == 1  # 0: unchanged
    finally:
        torch.set_num_threads(old)


def test_data_root_override(tmp_path):
    a = train_3d.parse_args([S3DIS, '--data-root', str(tmp_path)])
    cfg = train_3d.load_config(a)
    roots = {d.data_root for d in train_3d.dataset_cfgs(cfg)}
    assert roots == {str(tmp_path) + '/'} and cfg.data_root == str(tmp_path) + '/'
    assert len(train_3d.required_files(cfg, ('train', 'val'))) == 6


def test_missing_real_data_fails_early_with_command(tmp_path, capsys):
    rc = train_3d.main([S3DIS, '--data-root', str(tmp_path / 'nothing')])
    err = capsys.readouterr().err
    assert rc == 2
    assert 's3dis_infos_Area_1.pkl' in err and 'datasets/prepare_s3dis.py' in err
    with pytest.raises(train_3d.ToolError, match='prepare_scannet.py'):
        cfg = load('oneformer3d_1xb4_scannet.py')
        train_3d.set_data_root(cfg, str(tmp_path / 'nothing'))
        train_3d.ensure_data(cfg)
    assert train_3d.main([str(tmp_path / 'no_config.py')]) == 2


def test_synthetic_data_generated_on_demand(tmp_path):
    cfg = load('synthetic-rooms_baseline.py')
    root = str(tmp_path / 'synthetic')
    train_3d.set_data_root(cfg, root)
    cfg.synthetic_data = dict(num_rooms_per_area=1, areas=[1, 2, 3, 4, 5, 6], points=600,
                              max_objects=2, superpoints=False)
    assert train_3d.ensure_data(cfg, ('train', 'val')) == [root + '/']
    assert all(os.path.isfile(f) for f in train_3d.required_files(cfg, ('train', 'val', 'test')))
    assert train_3d.ensure_data(cfg, ('train', 'val')) == []  # present: nothing to do
    cfg.synthetic_data = dict(num_rooms_per_area=1, areas=[1, 2], points=600, superpoints=False)
    os.remove(os.path.join(root, 's3dis_infos_Area_6.pkl'))
    with pytest.raises(train_3d.ToolError):
        train_3d.ensure_data(cfg, ('train',))


# ---------------------------------------------------------------------------------- test_3d.py
def test_test_args(tmp_path):
    ckpt = tmp_path / 'model.pth'
    ckpt.write_bytes(b'')
    a = test_3d.parse_args([SYNTH, str(ckpt)])
    assert a.checkpoint == str(ckpt) and a.show_dir is None
    a = test_3d.parse_args([SYNTH, '--checkpoint', str(ckpt), '--show-dir', 'vis'])
    assert a.checkpoint == str(ckpt) and a.show_dir == 'vis'
    with pytest.raises(SystemExit):
        test_3d.parse_args([SYNTH])
    a = test_3d.parse_args([S3DIS, str(ckpt), '--data-root', str(tmp_path), '--no-data-check'])
    cfg = test_3d.build_cfg(a)
    assert cfg.load_from == str(ckpt) and cfg.resume is False
    assert test_3d.main([S3DIS, str(tmp_path / 'missing.pth')]) == 2
    assert test_3d.main([S3DIS, str(ckpt), '--data-root', str(tmp_path)]) == 2  # no data


def test_instance_results_per_class():
    """Per-class APs come from UnifiedSegMetric's instance results (perfect predictions -> AP 1)."""
    import types
    from influencerformer3d.evaluation import instance_seg_eval
    sem = np.repeat([0, 1, 2], 150)  # instances above the 100-point minimum region size
    inst = np.repeat([0, 1, 2], 150)
    ret = instance_seg_eval([sem], [inst], [inst[None] == np.arange(3)[:, None]],
                            [np.array([0, 1, 2])], [np.array([0.9, 0.8, 0.7])],
                            valid_class_ids=(0, 1, 2), class_labels=('table', 'chair', 'sofa'))
    per_class = test_3d.per_class_from_results(ret)
    assert list(per_class) == ['table', 'chair', 'sofa', 'Overall']
    assert per_class['chair'] == dict(ap=1.0, ap50=1.0, ap25=1.0)
    assert per_class['Overall']['ap'] == ret['all_ap']
    evaluator = types.SimpleNamespace(metrics=[
        types.SimpleNamespace(), types.SimpleNamespace(detailed_results=dict(instance=ret))])
    assert test_3d.instance_per_class(evaluator) == per_class
    text = test_3d.summarize({'all_ap': 0.5, 'all_ap_50%': 0.75, 'all_ap_25%': 1.0,
                              'miou': 0.25, 'pq': 0.1}, per_class)
    assert 'mAP50' in text and 'chair' in text and 'semantic mIoU 25.00' in text
    assert text.splitlines()[-2].split() == ['overall', '50.00', '75.00', '100.00']
    assert test_3d.per_class_from_results(None) == {}
    assert test_3d.instance_per_class(types.SimpleNamespace(metrics=[])) == {}


def test_instance_ids_and_ply(tmp_path):
    masks = np.array([[1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 1, 0]], dtype=bool)
    ids = test_3d.instance_ids(masks, np.array([0.5, 0.9, 0.1]), score_thr=0.3)
    assert ids.tolist() == [0, 1, 1, -1, -1]
    assert test_3d.instance_ids(np.zeros((0, 4), bool), np.zeros(0), 0.3).tolist() == [-1] * 4
    path = tmp_path / 'x.ply'
    test_3d.write_ply(str(path), np.zeros((5, 3), np.float32), np.zeros((5, 3), np.uint8))
    data = path.read_bytes()
    assert data.startswith(b'ply\nformat binary_little_endian 1.0\nelement vertex 5\n')
    assert len(data.split(b'end_header\n', 1)[1]) == 5 * 15


# ---------------------------------------------------------------------------------- shell
def _sh(script, *args, **env):
    full_env = dict(os.environ, PYTHON_BIN='python')
    for key in ('PRINT_ONLY', 'GPUS', 'PORT'):
        full_env.pop(key, None)
    full_env.update(env)
    return subprocess.run(['bash', os.path.join(TOOLS, script), *args], capture_output=True,
                          text=True, env=full_env, timeout=60)


@pytest.mark.parametrize('args', [(), ('foo',), ('s3dis', 'bogus'), ('scannet', 'hungarian')])
def test_train_sh_bad_arguments(args):
    r = _sh('train_3d.sh', *args)
    assert r.returncode == 2 and 'usage: tools/train_3d.sh' in r.stderr and 'error:' in r.stderr


def test_train_sh_gpus_and_configs(tmp_path):
    r = _sh('train_3d.sh', 's3dis', 'baseline', '--dry-run', GPUS='2', PORT='29611',
            PYTHON_BIN=sys.executable)
    assert r.returncode == 0, r.stderr
    cmd = r.stdout.strip()
    assert re.search(r'(torchrun|-m torch\.distributed\.run) --nproc_per_node=2 '
                     r'--master_port=29611 tools/train_3d\.py', cmd), cmd
    assert 'configs/oneformer3d_1xb2_s3dis-area-5.py --work-dir work_dirs/s3dis_baseline' in cmd
    assert cmd.endswith('--launcher pytorch')

    r = _sh('train_3d.sh', 'synthetic', '--cfg-options', 'train_cfg.max_iters=5',
            GPUS='0', PRINT_ONLY='1')
    assert r.stdout.strip() == (
        'CUDA_VISIBLE_DEVICES= python tools/train_3d.py projects/InfluencerFormer3D/configs/'
        'synthetic-rooms_influencer.py --work-dir work_dirs/synthetic_influencer '
        '--cfg-options train_cfg.max_iters=5')

    r = _sh('train_3d.sh', 'scannet', 'reference', '--resume', '--dry-run', GPUS='1')
    assert r.stdout.split()[:2] == ['python', 'tools/train_3d.py']
    assert 'influencerformer-reference_1xb4_scannet.py' in r.stdout
    assert r.stdout.split()[-1] == '--resume' and '--launcher' not in r.stdout

    ckpt = tmp_path / 'epoch_3.pth'
    ckpt.write_bytes(b'')
    r = subprocess.run(['bash', os.path.join(TOOLS, 'train_3d.sh'), 's3dis', 'influencer',
                        '--resume', ckpt.name, '--amp'], cwd=tmp_path, capture_output=True,
                       text=True, env=dict(os.environ, PYTHON_BIN='python', GPUS='1',
                                           PRINT_ONLY='1'), timeout=60)
    assert f'--resume {ckpt} --amp' in r.stdout, r.stdout + r.stderr

    r = _sh('train_3d.sh', 'synthetic', GPUS='x', PRINT_ONLY='1')
    assert r.returncode == 2 and 'GPUS' in r.stderr


def test_eval_sh(tmp_path):
    r = _sh('eval_3d.sh', 'synthetic', 'influencer')
    assert r.returncode == 2 and 'usage: tools/eval_3d.sh' in r.stderr
    r = _sh('eval_3d.sh', 'mars', 'influencer', 'x.pth')
    assert r.returncode == 2 and 'unknown dataset' in r.stderr
    r = _sh('eval_3d.sh', 's3dis', 'baseline', '/abs/model.pth', '--show-dir', 'vis', '--dry-run',
            GPUS='0')
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == (
        'CUDA_VISIBLE_DEVICES= python tools/test_3d.py projects/InfluencerFormer3D/configs/'
        'oneformer3d_1xb2_s3dis-area-5.py /abs/model.pth --work-dir work_dirs/s3dis_baseline/eval '
        '--show-dir vis')
    r = _sh('eval_3d.sh', 'scannet', 'influencer', 'm.pth', GPUS='4', PRINT_ONLY='1',
            PYTHON_BIN=sys.executable)
    assert re.search(r'(torchrun|-m torch\.distributed\.run) --nproc_per_node=4 ', r.stdout)
    assert 'tools/test_3d.py' in r.stdout
    assert r.stdout.strip().endswith('--launcher pytorch')
