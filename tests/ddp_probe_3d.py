"""A probe hook for the multi-process 3D tests, added from the command line:
``--cfg-options default_hooks.rank_probe.type=tests.ddp_probe_3d.RankProbeHook``
(tests/3d/test_3d_distributed.py runs ``GPUS=2 tools/train_3d.sh`` with it).

After training each rank writes ``<work_dir>/probe/rank<r>.json``: its rank and world size,
the process group's backend, the model wrapper, the iterations at which it saved a
checkpoint, and a digest of every parameter before and after training.
"""
import json
import os

import torch.distributed as dist
from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from tests.ddp_digests import parameter_digests


def _model(runner):
    return runner.model.module if is_model_wrapper(runner.model) else runner.model


class RankProbeHook(Hook):
    def __init__(self):
        self.saves = []

    def before_train(self, runner):
        self.before = parameter_digests(_model(runner))

    def before_save_checkpoint(self, runner, checkpoint):
        self.saves.append(checkpoint['meta']['iter'])  # Runner.save_checkpoint is master-only

    def after_train(self, runner):
        rank, world_size = get_dist_info()
        out = os.path.join(runner.work_dir, 'probe')
        os.makedirs(out, exist_ok=True)
        record = dict(rank=rank, world_size=world_size, backend=dist.get_backend() if dist.is_initialized() else None,
                      wrapped=type(runner.model).__name__, saves=self.saves, before=self.before,
                      after=parameter_digests(_model(runner)))
        with open(os.path.join(out, f'rank{rank}.json'), 'w') as f:
            json.dump(record, f)
