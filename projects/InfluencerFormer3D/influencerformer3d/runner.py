"""What tools/train_3d.py and tools/test_3d.py share: config loading with their common options,
the dataset checks (and synthetic generation), device / thread / checkpoint settings and the
mmengine Runner they build.

The two tools are thin command lines over this module (``parse_args``, ``build_cfg``, ``main``);
everything here can be used from Python, e.g. ``make_runner(args, build_cfg)``.
"""
import logging
import os
import os.path as osp
import sys

from mmengine.config import Config

from influencer_core.run_files import (  # add_cpu_threads_arg, set_cpu_threads: re-exported
    CheckpointError,
    OutputDirError,
    add_cpu_threads_arg,
    check_checkpoint_file,
    load_checkpoint_file,
    prepare_output_dir,
    set_cpu_threads,
)

from .distributed import CPU_LAUNCHERS, use_cpu_workers

__all__ = [
    'ToolError', 'add_cpu_threads_arg', 'set_cpu_threads', 'allow_mmengine_checkpoints', 'load_config',
    'dataset_cfgs', 'set_data_root', 'required_files', 'preparation_hint', 'ensure_data', 'check_device',
    'check_checkpoint', 'apply_train_options', 'prepare_work_dir', 'use_checked_checkpoint_loading',
    'make_runner', 'RUN_MARKERS', 'RUN_LOGS',
]

# what shows an mmengine training run in a work dir: checkpoints, last_checkpoint and logged
# scalars in a per-run log folder <YYYYmmdd_HHMMSS>/ (a run that failed while starting leaves that
# folder with only its text log: no evidence); --overwrite also deletes the log folders
_LOG_DIR = '[0-9]' * 8 + '_' + '[0-9]' * 6
RUN_MARKERS = ('last_checkpoint', '*.pth', _LOG_DIR + '/vis_data/scalars.json')
RUN_LOGS = (_LOG_DIR,)


class ToolError(RuntimeError):
    """A problem the user can fix; main() prints it and exits with status 2."""


# ---------------------------------------------------------------------------------- options
def allow_mmengine_checkpoints():
    """Let torch.load unpickle mmengine checkpoints (resume, load_from, test).

    mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; torch >= 2.6 then defaults to
    ``weights_only=True``, which refuses mmengine's own checkpoints (their message hub pickles
    numpy arrays and ``HistoryBuffer``).  Setting ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` restores
    the full unpickling mmengine was written for - as with any pickle, load only checkpoints you
    trust.  Left alone when the user set either of torch's two variables.  Returns the value."""
    if 'TORCH_FORCE_WEIGHTS_ONLY_LOAD' not in os.environ:
        os.environ.setdefault('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    return os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD')


def _local_checkpoint_loader(filename, map_location):
    """mmengine's local-file checkpoint loader (same result), with a damaged file raising
    CheckpointError naming it instead of torch's errors."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return load_checkpoint_file(filename, map_location=map_location)


def use_checked_checkpoint_loading():
    """Register :func:`_local_checkpoint_loader` as mmengine's loader for local paths (resume,
    load_from, test checkpoints) in this process."""
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', loader=_local_checkpoint_loader, force=True)


def check_checkpoint(path, source):
    """ToolError unless ``path`` (from the option ``source``) is a readable checkpoint file
    (structural check of influencer_core.run_files: nothing is unpickled); URLs pass."""
    if '://' in str(path):
        return
    try:
        check_checkpoint_file(str(path), source)
    except CheckpointError as exc:
        raise ToolError(str(exc)) from None


# ---------------------------------------------------------------------------------- config
def load_config(args, default_work_dir=True):
    """Config.fromfile (imports the plugin through custom_imports) plus the common CLI options:
    ``--data-root``, ``--cfg-options``, ``--launcher``, ``--work-dir``."""
    if not osp.isfile(args.config):
        raise ToolError(f'config file not found: {args.config}')
    cfg = Config.fromfile(args.config)
    if getattr(args, 'data_root', None):
        set_data_root(cfg, args.data_root)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None and default_work_dir:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def _leaf_datasets(ds):
    """Yield the dataset dicts that hold data_root / ann_file (through Concat / Repeat)."""
    if not ds:
        return
    if 'datasets' in ds:
        for sub in ds['datasets']:
            yield from _leaf_datasets(sub)
    elif 'dataset' in ds:
        yield from _leaf_datasets(ds['dataset'])
    else:
        yield ds


def dataset_cfgs(cfg, splits=('train', 'val', 'test')):
    """The leaf dataset config dicts of ``<split>_dataloader`` for the given splits."""
    out = []
    for split in splits:
        loader = cfg.get(f'{split}_dataloader', None)
        if loader:
            out.extend(_leaf_datasets(loader.get('dataset', None)))
    return out


def set_data_root(cfg, data_root):
    """Point the top-level ``data_root`` and every dataset of every dataloader at data_root."""
    if not data_root.endswith(('/', os.sep)):
        data_root = data_root + '/'
    cfg.data_root = data_root
    for ds in dataset_cfgs(cfg):
        ds['data_root'] = data_root


def required_files(cfg, splits):
    """Annotation files (data_root joined with ann_file) the given splits read."""
    files = []
    for ds in dataset_cfgs(cfg, splits):
        ann = ds.get('ann_file', '')
        if not ann:
            continue
        root = ds.get('data_root', None) or ''
        path = ann if osp.isabs(ann) else osp.join(root, ann)
        if path not in files:
            files.append(path)
    return files


def _data_roots(cfg, splits):
    roots = []
    for ds in dataset_cfgs(cfg, splits):
        root = ds.get('data_root', None) or cfg.get('data_root', '')
        if root and root not in roots:
            roots.append(root)
    return roots


def preparation_hint(cfg, splits):
    """How to prepare the data a config reads (text for the error message)."""
    types = ' '.join(str(ds.get('type', '')) for ds in dataset_cfgs(cfg, splits)).lower()
    root = (_data_roots(cfg, splits) or ['<data_root>'])[0].rstrip('/')
    if 's3dis' in types:
        steps = [
            'Prepare S3DIS (details: datasets/README_3d.md):',
            '  1. download Stanford3dDataset_v1.2_Aligned_Version.zip (request form at',
            '     http://buildingparser.stanford.edu/dataset.html)',
            '     and unzip it into datasets/s3dis/',
            f'  2. python datasets/prepare_s3dis.py --data-root datasets/s3dis --out {root}',
        ]
    elif 'scannet' in types:
        steps = [
            'Prepare ScanNet v2 (details: datasets/README_3d.md):',
            '  1. download the scans (_vh_clean_2.ply, _vh_clean_2.0.010000.segs.json,',
            '     .aggregation.json, .txt) into datasets/scannet/ and the split lists into',
            '     datasets/scannet/meta_data/',
            f'  2. python datasets/prepare_scannet.py --data-root datasets/scannet --out {root}',
        ]
    elif 'ownsegdataset' in types:
        steps = [
            'Convert your labelled point clouds (details: datasets/README_3d.md, "Your own data"):',
            f'  python datasets/prepare_own_3d.py --input <folder> --out {root} '
            '--classes <names in id order> --stuff <floor ...>',
        ]
    else:
        steps = ['Prepare the dataset the config reads (see datasets/README_3d.md).']
    steps.append('Or use data prepared elsewhere: --data-root /path/to/processed/data')
    return '\n'.join(steps)


def ensure_data(cfg, splits=('train', 'val'), config_name='the config'):
    """Check the annotation files of ``splits``; generate synthetic rooms when the config has a
    ``synthetic_data`` entry (the generator's keyword arguments), else raise ToolError with the
    preparation command.  Returns the list of generated data roots (empty if nothing was done)."""
    missing = [f for f in required_files(cfg, splits) if not osp.isfile(f)]
    if not missing:
        return []
    synthetic = cfg.get('synthetic_data', None)
    if synthetic is None:
        more = f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''
        raise ToolError(f'data for {config_name} is missing: {missing[0]}{more}\n'
                        + preparation_hint(cfg, splits))
    from influencer_data import synthetic_3d as generator
    done = []
    for root in _data_roots(cfg, splits):
        print(f'[train_3d] generating synthetic rooms into {root} '
              f'({dict(synthetic)})', flush=True)
        try:
            generator.generate(root.rstrip('/'), verbose=True, **dict(synthetic))
        except FileExistsError as exc:
            raise ToolError(f'cannot generate synthetic data: {exc}\n'
                            f'regenerate with: python datasets/prepare_synthetic_3d.py --out '
                            f'{root} --force, or pick another folder with --data-root') from exc
        done.append(root)
    still = [f for f in required_files(cfg, splits) if not osp.isfile(f)]
    if still:
        raise ToolError(f'synthetic generation did not write {still[0]}; the config reads areas '
                        f'that synthetic_data={dict(synthetic)} does not produce')
    return done


def check_device(cfg, launcher='none', amp=False):
    """Stop early on settings that need CUDA when none is present (``--launcher pytorch`` does
    not: its workers then run on the CPU, joined by gloo; see :mod:`influencerformer3d.distributed`)."""
    import torch
    if torch.cuda.is_available():
        return
    if launcher not in ('none',) + CPU_LAUNCHERS:
        raise ToolError(f'--launcher {launcher} needs CUDA GPUs (mmengine pins one GPU per '
                        'process); on CPU run torchrun with --launcher pytorch (GPUS=N with '
                        'tools/train_3d.sh) or a single process: --launcher none (GPUS=0)')
    if amp:
        raise ToolError('--amp needs a CUDA GPU; drop --amp to train on CPU')


def apply_train_options(cfg, args):
    """--amp, --auto-scale-lr and --resume, as mmdet3d's tools/train.py."""
    if args.amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper == 'AmpOptimWrapper':
            from mmengine.logging import print_log
            print_log('AMP training is already enabled in your config.', logger='current',
                      level=logging.WARNING)
        elif wrapper != 'OptimWrapper':
            raise ToolError(f'--amp needs optim_wrapper.type OptimWrapper, got {wrapper}')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        scale = cfg.get('auto_scale_lr', None)
        if not scale or 'base_batch_size' not in scale:
            raise ToolError('--auto-scale-lr needs auto_scale_lr = dict(enable=False, '
                            'base_batch_size=...) in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        latest = _latest_checkpoint(cfg.work_dir)
        if latest is None:  # mmengine would log "resumed from ... None" and start from scratch
            start = f'load_from={cfg.load_from}' if cfg.get('load_from', None) else 'scratch'
            print(f'warning: --resume: no checkpoint in {cfg.work_dir} to resume from (no last_checkpoint '
                  f'file); starting from {start}', file=sys.stderr, flush=True)
            cfg.resume = False
        else:
            check_checkpoint(latest, f'--resume, from {osp.join(cfg.work_dir, "last_checkpoint")}')
            cfg.resume = True
            cfg.load_from = None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise ToolError(f'--resume checkpoint not found: {args.resume}')
        check_checkpoint(args.resume, '--resume')
        cfg.resume = True
        cfg.load_from = args.resume
    load_from = cfg.get('load_from', None)
    if load_from and not cfg.get('resume', False) and '://' not in str(load_from):
        if not osp.isfile(load_from):
            raise ToolError(f'load_from checkpoint not found: {load_from} (set it with '
                            '--cfg-options load_from=PATH, or load_from=None to train from scratch)')
        check_checkpoint(load_from, 'load_from')
    return cfg


def _latest_checkpoint(work_dir):
    """The checkpoint named by ``<work_dir>/last_checkpoint`` (what mmengine resumes from), None
    without that file; ToolError when it names a missing file."""
    marker = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(marker):
        return None
    with open(marker) as f:
        path = f.read().strip()
    if not path or not osp.isfile(path):
        raise ToolError(f'--resume: {marker} names {path or "nothing"}, which does not exist; restore it, '
                        'give a checkpoint (--resume PATH), or pass --overwrite instead of --resume to start '
                        'again')
    return path


def prepare_work_dir(cfg, overwrite=False):
    """Refuse (ToolError) a work dir that holds a previous training run unless ``cfg.resume`` or
    ``overwrite``; with ``overwrite``, delete that run's checkpoints and log folders first (on the
    first process only: under torchrun every rank builds the config).  Returns the names removed."""
    first = os.environ.get('RANK', '0') == '0'
    if overwrite and not first:
        return []
    try:
        return prepare_output_dir(cfg.work_dir, markers=RUN_MARKERS, also_remove=RUN_LOGS,
                                  resume=bool(cfg.get('resume', False)), overwrite=overwrite,
                                  keep=[cfg.get('load_from', None)], setting='--work-dir',
                                  log=lambda msg: print(msg, flush=True))
    except OutputDirError as exc:
        raise ToolError(str(exc)) from None


def make_runner(args, build):
    """(cfg, mmengine Runner) for parsed ``args``, with ``build(args)`` making the config;
    (None, None) after printing the error when the config cannot be built.  Shared by
    tools/train_3d.py and tools/test_3d.py."""
    try:
        cfg = build(args)
    except ToolError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return None, None
    try:
        use_cpu_workers(cfg)  # gloo and device-less DDP for torchrun workers without CUDA
    except ValueError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return None, None
    set_cpu_threads(args.cpu_threads)
    allow_mmengine_checkpoints()  # mmengine checkpoints need full unpickling on torch >= 2.6
    use_checked_checkpoint_loading()  # a damaged checkpoint: an error naming it
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    return cfg, (Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg))
