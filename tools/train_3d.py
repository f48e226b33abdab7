#!/usr/bin/env python
"""Train an InfluencerFormer3D / OneFormer3D model with mmengine (mmdet3d 1.4 plugin).

    python tools/train_3d.py projects/InfluencerFormer3D/configs/influencerformer_synthetic-rooms.py
    python tools/train_3d.py CONFIG --work-dir work_dirs/x --resume        # latest ckpt in work dir
    python tools/train_3d.py CONFIG --resume work_dirs/x/iter_100.pth          # a given checkpoint
    python tools/train_3d.py CONFIG --work-dir work_dirs/x --overwrite     # delete the run in it first
    python tools/train_3d.py CONFIG --cfg-options train_cfg.max_iters=5 --data-root /data/s3dis
    torchrun --nproc_per_node=4 tools/train_3d.py CONFIG --launcher pytorch    # 4 GPUs (no GPU: 4 CPU processes)

Behaves like mmdet3d's tools/train.py.  On top of it:

* the plugin and influencer_core are imported as installed packages (``pip install -e .``,
  done by ``tools/install.sh``); the shared code is :mod:`influencerformer3d.runner`;
* ``--data-root`` points every dataset of the config at another folder (``--cfg-options
  data_root=...`` would not reach the dataset dicts, which already hold the value);
* before the runner is built, the annotation files of the train / val datasets are checked.
  A config with a ``synthetic_data`` entry generates its rooms with ``influencer_data.synthetic_3d``
  (what ``datasets/prepare_synthetic_3d.py`` runs); for real data the tool stops (exit 2) and
  prints the preparation command;
* mmengine picks the device: CUDA when available, else CPU.  ``--amp`` needs CUDA and stops
  with a clear message without it; ``--launcher pytorch`` without CUDA runs the torchrun
  workers on the CPU, joined by gloo (:mod:`influencerformer3d.distributed`).  On CPU, torch
  runs one intra-op thread unless ``--cpu-threads`` or ``OMP_NUM_THREADS`` says otherwise;
* checkpoints (``--resume``, ``load_from``) are unpickled fully, as mmengine 0.10 expects
  (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` unless set): load only checkpoints you trust.  A file
  that is empty, cut short or not a checkpoint stops the tool (exit 2) naming it, before data
  generation; ``--resume`` with nothing to resume in the work dir warns and starts from scratch;
* a work dir that holds a previous run (checkpoints, ``last_checkpoint``, log folders) is refused
  (exit 2) unless ``--resume`` continues it or ``--overwrite`` deletes its files first.
"""
import argparse
import os
import os.path as osp
import sys

from mmengine.config import DictAction

from influencer_core.run_files import CheckpointError, warn_other_checkout
from influencerformer3d.runner import (
    add_cpu_threads_arg,
    apply_train_options,
    check_device,
    ensure_data,
    load_config,
    make_runner,
    prepare_work_dir,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Train an InfluencerFormer3D / OneFormer3D model (mmdet3d 1.4).')
    p.add_argument('config', help='train config file path')
    p.add_argument('--work-dir', help='folder for logs and checkpoints '
                   '(default: work_dirs/<config name>)')
    p.add_argument('--amp', action='store_true', help='automatic mixed precision (CUDA only)')
    p.add_argument('--auto-scale-lr', action='store_true',
                   help='scale the learning rate with the total batch size (needs auto_scale_lr '
                   'in the config)')
    p.add_argument('--resume', nargs='?', type=str, const='auto',
                   help="resume training: without a value (or 'auto') from the latest "
                   'checkpoint in the work dir, else from the given checkpoint')
    p.add_argument('--overwrite', action='store_true',
                   help='train into a work dir that holds a previous run after deleting its checkpoints '
                   'and log folders (without it, or --resume, such a work dir is refused)')
    p.add_argument('--data-root', help='use this data_root for every dataset of the config')
    p.add_argument('--no-data-check', action='store_true',
                   help='skip the check (and generation) of the dataset files')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config entries, key=value (e.g. train_cfg.max_iters=5 '
                   'or key="[a,b]")')
    add_cpu_threads_arg(p)
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                   help='job launcher (pytorch with torchrun)')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank
    p.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = p.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_cfg(args):
    """The final training config (what Runner.from_cfg receives); checks device, checkpoints,
    the work dir (a previous run: refused, or cleared with --overwrite) and data."""
    cfg = load_config(args)
    check_device(cfg, args.launcher, args.amp)
    apply_train_options(cfg, args)
    prepare_work_dir(cfg, overwrite=getattr(args, 'overwrite', False))
    if not args.no_data_check:
        ensure_data(cfg, ('train', 'val'), osp.basename(args.config))
    return cfg


def main(argv=None):
    args = parse_args(argv)
    warn_other_checkout(osp.dirname(osp.dirname(osp.abspath(__file__))))
    cfg, runner = make_runner(args, build_cfg)
    if runner is None:
        return 2
    try:
        runner.train()
    except CheckpointError as exc:  # a checkpoint the structural check could not judge
        print(f'error: {exc}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
