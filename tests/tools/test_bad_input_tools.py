"""Bad input never trains silently (issue #12, tools): a damaged checkpoint stops the 2D and 3D
tools with an error naming the file and the setting it came from (before data generation in
tools/test_3d.py); training into a folder that holds a previous run needs --resume or --overwrite
(which deletes that run's files first, so metrics never mix); --resume with nothing to resume warns;
tools/visualize_predictions.py --num 0 is an argparse error."""
import json
import os
import pickle
import subprocess

import numpy as np
import pytest
import torch

from influencer_core.run_files import CheckpointError
from tests import ROOT, load_script

TOOLS = os.path.join(ROOT, 'tools')
CONFIG_2D = os.path.join(ROOT, 'projects', 'InfluencerFormer2D', 'configs', 'synthetic.yaml')


def _damaged(folder, kind):
    """A checkpoint file that cannot be read: empty, random bytes, a text .pkl, or cut short."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == 'truncated':
        path = folder / 'truncated.pth'
        torch.save({'model': {'w': torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[:2000])
        return str(path)
    path = folder / {'empty': 'empty.pth', 'random': 'random.pth', 'garbage_pkl': 'garbage.pkl'}[kind]
    path.write_bytes({'empty': b'', 'garbage_pkl': b'not a pickle, just text\n' * 20,
                      'random': bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8))}[kind])
    return str(path)


def _assert_checkpoint_message(msg, path, source):
    assert f'could not read checkpoint {path} ({source}): truncated or not a checkpoint (' in msg, msg
    assert 'copy or download it again' in msg
    assert 'weights_only' not in msg and 'invalid load key' not in msg


# ---------------------------------------------------------------------------------------------- 2D
@pytest.fixture(scope='module')
def d2():
    pytest.importorskip('detectron2')
    from influencerformer2d.checkpoint import CheckedCheckpointer
    return CheckedCheckpointer


@pytest.fixture(scope='module')
def syn2d(tmp_path_factory, d2):
    from influencer_data.synthetic_2d import generate
    from influencerformer2d.data.datasets import register_synthetic_coco
    root = str(tmp_path_factory.mktemp('bad2d'))
    generate(root, num_train=4, num_val=2, image_size=64, seed=1)
    register_synthetic_coco(root, prefix='bad2d')
    return root


def _train_argv(out_dir, *flags, weights=''):
    return ['--config-file', CONFIG_2D, *flags, 'DATASETS.TRAIN', "('bad2d_train_panoptic',)", 'DATASETS.TEST', '()',
            'INPUT.IMAGE_SIZE', '64', 'DATALOADER.NUM_WORKERS', '0', 'SOLVER.MAX_ITER', '1', 'TEST.EVAL_PERIOD', '0',
            'MODEL.MASK_FORMER.TRAIN_NUM_POINTS', '256', 'MODEL.WEIGHTS', weights, 'OUTPUT_DIR', str(out_dir)]


@pytest.mark.parametrize('kind', ['empty', 'random', 'garbage_pkl', 'truncated'])
def test_2d_checkpointer_names_a_damaged_file(tmp_path, d2, kind):
    path = _damaged(tmp_path, kind)
    with pytest.raises(CheckpointError) as info:
        d2(torch.nn.Linear(2, 2)).resume_or_load(path, resume=False)
    _assert_checkpoint_message(str(info.value), path, 'MODEL.WEIGHTS')


def test_2d_checkpointer_loads_real_checkpoints_like_detectron2(tmp_path, d2):
    from detectron2.checkpoint import DetectionCheckpointer
    src = torch.nn.Linear(3, 2)
    pth, pkl = str(tmp_path / 'model.pth'), str(tmp_path / 'zoo.pkl')
    torch.save({'model': src.state_dict(), 'iteration': 5}, pth)
    with open(pkl, 'wb') as f:   # model-zoo layout: numpy arrays, __author__
        pickle.dump({'model': {k: v.numpy() for k, v in src.state_dict().items()}, '__author__': 'x'}, f)
    for path in (pth, pkl):
        ours, theirs = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
        extra = d2(ours).load(path)
        assert extra == DetectionCheckpointer(theirs).load(path)
        assert all(torch.equal(ours.state_dict()[k], v) for k, v in src.state_dict().items())


def test_2d_resume_without_checkpoint_warns(tmp_path, d2, caplog):
    with caplog.at_level('WARNING', logger='influencerformer2d'):
        d2(torch.nn.Linear(2, 2), str(tmp_path)).resume_or_load('', resume=True)
    assert f'--resume: no checkpoint in {tmp_path} to resume from' in caplog.text
    assert 'starting from scratch' in caplog.text
    (tmp_path / 'last_checkpoint').write_text('model_0000099.pth')
    with pytest.raises(CheckpointError, match=r'last_checkpoint names .*model_0000099.pth, which does not exist'):
        d2(torch.nn.Linear(2, 2), str(tmp_path)).resume_or_load('', resume=True)


def test_train_net_damaged_weights_exit_2_naming_them(tmp_path, syn2d, capsys):
    train_net = load_script('tools/train_net.py')
    bad = _damaged(tmp_path / 'weights', 'random')
    assert train_net.cli(_train_argv(tmp_path / 'out', weights=bad)) == 2
    _assert_checkpoint_message(capsys.readouterr().err, bad, 'MODEL.WEIGHTS')
    assert not (tmp_path / 'out' / 'model_final.pth').exists()
    # checked before the datasets are read: an unregistered dataset is not reached
    argv = _train_argv(tmp_path / 'out2', weights=bad)
    argv[argv.index("('bad2d_train_panoptic',)")] = "('not_registered',)"
    assert train_net.cli(argv) == 2
    _assert_checkpoint_message(capsys.readouterr().err, bad, 'MODEL.WEIGHTS')
    # a damaged file found only by the real load (the structural check passes) is named too
    legacy = tmp_path / 'weights' / 'legacy.pth'
    torch.save({'model': {'w': torch.zeros(100)}}, legacy, _use_new_zipfile_serialization=False)
    legacy.write_bytes(legacy.read_bytes()[:-100])   # the tensor data cut short
    assert train_net.cli(_train_argv(tmp_path / 'out3', weights=str(legacy))) == 2
    _assert_checkpoint_message(capsys.readouterr().err, str(legacy), 'MODEL.WEIGHTS')


def test_train_net_missing_dataset_files_exit_2_with_the_fix(tmp_path, syn2d, capsys):
    """Dataset files that are missing are the user's to create: the message and how, no traceback."""
    from influencerformer2d.data.datasets import register_synthetic_coco
    train_net = load_script('tools/train_net.py')
    register_synthetic_coco(str(tmp_path / 'not_generated'), prefix='gone2d')
    argv = _train_argv(tmp_path / 'out')
    argv[argv.index("('bad2d_train_panoptic',)")] = "('gone2d_train_panoptic',)"
    assert train_net.cli(argv) == 2
    err = capsys.readouterr().err
    assert 'error: missing dataset files: ' in err and str(tmp_path / 'not_generated') in err
    # no exception trace (detectron2's loggers of earlier tests may print logging errors of their
    # own into the captured stream, so look for the exception's name, not for 'Traceback')
    assert 'prepare_synthetic_2d.py' in err and 'MissingDatasetError' not in err
    # a name that is not registered at all
    argv[argv.index("('gone2d_train_panoptic',)")] = "('nope',)"
    assert train_net.cli(argv) == 2
    err = capsys.readouterr().err
    assert "error: DATASETS.TRAIN: 'nope' not registered" in err and 'DATASETS.OWN' in err
    assert 'synthetic_coco_train_panoptic' in err and 'KeyError' not in err


def _previous_2d_run(out):
    out.mkdir(parents=True)
    torch.save({'model': {}}, out / 'model_final.pth')
    (out / 'last_checkpoint').write_text('model_final.pth')
    (out / 'metrics.json').write_text(json.dumps({'iteration': 99, 'previous_run': 1}) + '\n')
    (out / 'notes.txt').write_text('mine')


def test_train_net_refuses_an_output_dir_with_a_previous_run(tmp_path, syn2d, capsys):
    train_net = load_script('tools/train_net.py')
    out = tmp_path / 'out'
    _previous_2d_run(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert train_net.cli(_train_argv(out)) == 2
    err = capsys.readouterr().err
    assert f'error: {out} (OUTPUT_DIR) already holds a training run (last_checkpoint, metrics.json, ' \
           'model_final.pth)' in err
    assert '--resume to continue' in err and '--overwrite to delete' in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before   # nothing touched, no log.txt
    assert train_net.cli(_train_argv(out, '--resume', '--overwrite')) == 2
    assert 'give only one' in capsys.readouterr().err


def test_train_net_overwrite_starts_a_clean_run(tmp_path, syn2d, capsys):
    """--overwrite deletes the previous run's files before detectron2 opens its logs there (setup:
    the training itself then writes into a folder without them, as a fresh one)."""
    train_net = load_script('tools/train_net.py')
    out = tmp_path / 'out'
    _previous_2d_run(out)
    (out / 'log.txt').write_text('previous run\n')
    (out / 'events.out.tfevents.1.host.1.0').write_bytes(b'x' * 10)
    weights = out / 'start.pth'           # the weights the new run starts from stay
    torch.save({'model': {}}, weights)
    train_net.setup(train_net.argument_parser().parse_args(_train_argv(out, '--overwrite', weights=str(weights))))
    assert '--overwrite: removed 5 files / folders of the previous run' in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ['config.yaml', 'log.txt', 'notes.txt', 'start.pth']
    assert 'previous run' not in (out / 'log.txt').read_text()


def test_visualize_needs_at_least_one_image(capsys):
    pytest.importorskip('detectron2')
    visualize = load_script('tools/visualize_predictions.py')
    for num in ('0', '-2'):
        with pytest.raises(SystemExit) as info:
            visualize.parse_args(['--config-file', CONFIG_2D, '--num', num])
        assert info.value.code == 2
        assert f'--num: must be >= 1 (the number of images to draw), got {num}' in capsys.readouterr().err
    assert visualize.parse_args(['--config-file', CONFIG_2D, '--num', '2']).num == 2


def test_ab_benchmark_reruns_arms_with_overwrite(tmp_path, monkeypatch):
    """A study run again into the same --output retrains its arms into their old folders: the tools
    must be told (--overwrite); --reuse keeps finished runs without calling them."""
    ab = load_script('tools/ab_benchmark.py')
    calls = []

    def fake_run(cmd, log_path):
        calls.append(cmd)
        out = cmd[cmd.index('OUTPUT_DIR') + 1] if 'OUTPUT_DIR' in cmd else cmd[cmd.index('--work-dir') + 1]
        with open(os.path.join(out, 'metrics.json'), 'w') as f:
            f.write(json.dumps({'iteration': 1, 'time': 0.1}) + '\n')
        return 0

    monkeypatch.setattr(ab, 'run_child', fake_run)
    monkeypatch.setattr(ab, 'summarise_run_3d', lambda out_dir: ([], {}))

    class Args:
        config_file, num_gpus, iters, eval_period, opts, reuse = ab.DEFAULT_CFG, 1, 4, 2, ['K', 'V'], False
        configs_3d = {'ot': 'cfg.py'}
        base_arm, arm_opts, data_root_3d = {'ot': 'ot'}, {}, None
    ab.run_one(Args, 'ot', 0, str(tmp_path / 'a'))
    ab.run_one_3d(Args, 'ot', 0, str(tmp_path / 'b'))
    two_d, three_d = calls
    assert two_d.index('--overwrite') < two_d.index('MODEL.MASK_FORMER.CRITERION')   # before the KEY VALUE opts
    assert three_d.index('--overwrite') < three_d.index('--cfg-options')
    Args.reuse = True
    torch.save({}, tmp_path / 'a' / 'model_final.pth')
    ab.run_one(Args, 'ot', 0, str(tmp_path / 'a'))
    assert len(calls) == 2


# ---------------------------------------------------------------------------------------------- 3D
@pytest.fixture(scope='module')
def tools3d():
    pytest.importorskip('mmdet3d')
    from influencerformer3d import runner
    from influencer_core import arms
    return dict(train=load_script('tools/train_3d.py'), test=load_script('tools/test_3d.py'), runner=runner,
                synth=os.path.join(ROOT, arms.config_3d('synthetic', 'ot')))


@pytest.mark.parametrize('kind', ['empty', 'random', 'truncated'])
def test_test_3d_damaged_checkpoint_stops_before_data_generation(tmp_path, tools3d, capsys, kind):
    bad = _damaged(tmp_path, kind)
    rooms = tmp_path / 'rooms'   # the synthetic config would generate its rooms here first
    assert tools3d['test'].main([tools3d['synth'], bad, '--data-root', str(rooms),
                                 '--work-dir', str(tmp_path / 'eval')]) == 2
    _assert_checkpoint_message(capsys.readouterr().err, bad, 'the CHECKPOINT argument')
    assert not rooms.exists()


@pytest.mark.parametrize('option, source', [
    (lambda bad: ['--resume', bad], '--resume'),
    (lambda bad: ['--cfg-options', f'load_from={bad}'], 'load_from'),
])
def test_train_3d_damaged_resume_or_load_from(tmp_path, tools3d, capsys, option, source):
    bad = _damaged(tmp_path, 'random')
    rooms = tmp_path / 'rooms'
    assert tools3d['train'].main([tools3d['synth'], '--work-dir', str(tmp_path / 'w'), '--data-root', str(rooms),
                                  *option(bad)]) == 2
    _assert_checkpoint_message(capsys.readouterr().err, bad, source)
    assert not rooms.exists()


def _train_cfg(tools3d, work_dir, *flags):
    args = tools3d['train'].parse_args([tools3d['synth'], '--work-dir', str(work_dir), '--no-data-check', *flags])
    return tools3d['train'].build_cfg(args)


def test_train_3d_resume_with_nothing_to_resume_warns(tmp_path, tools3d, capsys):
    cfg = _train_cfg(tools3d, tmp_path / 'empty', '--resume')
    assert cfg.resume is False
    assert f'--resume: no checkpoint in {tmp_path / "empty"} to resume from (no last_checkpoint file); starting ' \
           'from scratch' in capsys.readouterr().err
    work = tmp_path / 'w'
    work.mkdir()
    (work / 'last_checkpoint').write_text(str(work / 'iter_4.pth'))
    with pytest.raises(tools3d['runner'].ToolError, match=r'last_checkpoint names .*iter_4.pth, which does not'):
        _train_cfg(tools3d, work, '--resume')
    bad = _damaged(work, 'empty')
    (work / 'last_checkpoint').write_text(bad)
    with pytest.raises(tools3d['runner'].ToolError) as info:
        _train_cfg(tools3d, work, '--resume')
    _assert_checkpoint_message(str(info.value), bad, f'--resume, from {work / "last_checkpoint"}')


def _previous_3d_run(work):
    (work / '20260101_000000' / 'vis_data').mkdir(parents=True)
    (work / '20260101_000000' / 'vis_data' / 'scalars.json').write_text('{"loss": 1.0, "step": 2}\n')
    torch.save({'meta': {}, 'state_dict': {}}, work / 'iter_2.pth')
    (work / 'last_checkpoint').write_text(str(work / 'iter_2.pth'))
    (work / 'eval').mkdir()
    (work / 'eval' / 'test_metrics.json').write_text('{}')


def test_train_3d_refuses_a_work_dir_with_a_previous_run(tmp_path, tools3d, capsys):
    work, rooms = tmp_path / 'w', tmp_path / 'rooms'
    _previous_3d_run(work)
    assert tools3d['train'].main([tools3d['synth'], '--work-dir', str(work), '--data-root', str(rooms)]) == 2
    err = capsys.readouterr().err
    assert f'error: {work} (--work-dir) already holds a training run (20260101_000000/vis_data/scalars.json, ' \
           'iter_2.pth, last_checkpoint)' in err
    assert '--resume to continue' in err and '--overwrite to delete' in err
    assert not rooms.exists() and (work / 'iter_2.pth').exists()
    # --resume continues that run; --overwrite deletes its checkpoints and log folders, nothing else
    cfg = _train_cfg(tools3d, work, '--resume')
    assert cfg.resume is True and cfg.load_from is None
    cfg = _train_cfg(tools3d, work, '--overwrite')
    assert cfg.resume is False
    assert sorted(os.listdir(work)) == ['eval']
    assert '--overwrite: removed 3 files / folders' in capsys.readouterr().out


def test_train_sh_passes_overwrite_through(tools3d):
    env = dict(os.environ, PYTHON_BIN='python', GPUS='0', PRINT_ONLY='1')
    r = subprocess.run(['bash', os.path.join(TOOLS, 'train_3d.sh'), 'synthetic', '--overwrite'],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and r.stdout.rstrip().endswith('--work-dir work_dirs/synthetic_ot --overwrite'), r


def test_mmengine_reads_checkpoints_through_the_check(tmp_path, tools3d, monkeypatch):
    from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint
    monkeypatch.setattr(CheckpointLoader, '_schemes', dict(CheckpointLoader._schemes))   # restored afterwards
    tools3d['runner'].use_checked_checkpoint_loading()
    bad = _damaged(tmp_path, 'truncated')
    with pytest.raises(CheckpointError) as info:
        _load_checkpoint(bad, map_location='cpu')
    assert isinstance(info.value, CheckpointError)
    assert f'could not read checkpoint {bad}: truncated or not a checkpoint' in str(info.value)
    good = str(tmp_path / 'good.pth')
    torch.save({'state_dict': {'w': torch.ones(2)}, 'meta': {'step': np.int64(3)}}, good)
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')   # what make_runner sets for mmengine
    ckpt = _load_checkpoint(good, map_location='cpu')
    assert torch.equal(ckpt['state_dict']['w'], torch.ones(2)) and ckpt['meta']['step'] == 3


def test_read_state_dict_names_a_damaged_file(tmp_path):
    pytest.importorskip('mmdet3d')
    from influencerformer3d.checkpoint import read_state_dict
    bad = _damaged(tmp_path, 'empty')
    with pytest.raises(CheckpointError, match='the file is empty'):
        read_state_dict(bad)
    good = str(tmp_path / 'good.pth')
    torch.save({'state_dict': {'module.w': torch.ones(2)}, 'meta': {'x': np.zeros(1)}}, good)
    assert list(read_state_dict(good)) == ['w']
