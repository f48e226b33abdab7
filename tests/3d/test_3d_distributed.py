"""``GPUS=2 tools/train_3d.sh synthetic ot`` without a GPU: two CPU worker processes under
torchrun, joined by gloo (influencerformer3d.distributed).  DDP keeps their parameters
identical, rank 0 alone writes the checkpoint, and the final validation runs on both."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

pytest.importorskip('spconv.pytorch')

from influencer_data import synthetic_3d as synthetic  # noqa: E402
from tests import ROOT  # noqa: E402
from tests.ddp_digests import tensor_digest  # noqa: E402

ITERS = 3


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.distributed
def test_gpus_2_on_the_cpu_trains_two_gloo_workers_in_step(tmp_path):
    rooms = tmp_path / 'rooms'
    synthetic.generate(str(rooms), num_rooms_per_area=3, areas=[1, 2, 3, 4, 5, 6], points=3000, seed=3)
    work = tmp_path / 'work'
    options = [f'train_cfg.max_iters={ITERS}', f'param_scheduler.end={ITERS}', f'train_cfg.val_interval={ITERS}',
               f'default_hooks.checkpoint.interval={ITERS}', 'default_hooks.logger.interval=1',
               'default_hooks.rank_probe.type=tests.ddp_probe_3d.RankProbeHook']
    # the small rooms hold ~3000 points: sample 2000 per training room (5 training areas)
    options += [f'train_dataloader.dataset.datasets.{i}.pipeline.2.num_points=2000' for i in range(5)]
    env = dict(os.environ, GPUS='2', CPU='1', PORT=str(_free_port()), PYTHON_BIN=sys.executable,
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')]))
    for key in ('PRINT_ONLY', 'NNODES', 'NODE_RANK', 'MASTER_ADDR'):
        env.pop(key, None)
    r = subprocess.run(['bash', os.path.join(ROOT, 'tools', 'train_3d.sh'), 'synthetic', 'ot', '--work-dir', str(work),
                        '--data-root', str(rooms), '--cfg-options', *options],
                       capture_output=True, text=True, env=env, timeout=600)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    assert '2 CPU worker process(es)' in r.stderr and 'all_ap' in log  # validation ran after training

    probes = [json.loads((work / 'probe' / f'rank{rank}.json').read_text()) for rank in (0, 1)]
    for rank, p in enumerate(probes):
        assert (p['rank'], p['world_size'], p['backend']) == (rank, 2, 'gloo')
        assert p['wrapped'] == 'MMDistributedDataParallel'
    # the same start, different rooms per rank, the same end: the gradients were averaged
    assert probes[0]['before'] == probes[1]['before'] and probes[0]['after'] == probes[1]['after']
    changed = [n for n, d in probes[0]['after'].items() if d != probes[0]['before'][n]]
    assert len(changed) > 0.9 * len(probes[0]['after'])

    # rank 0 alone saved, once; the file is whole and holds the trained weights
    assert probes[0]['saves'] == [ITERS] and probes[1]['saves'] == []
    assert [p.name for p in work.glob('*.pth')] == [f'iter_{ITERS}.pth']
    assert (work / 'last_checkpoint').read_text().strip().endswith(f'iter_{ITERS}.pth')
    state = torch.load(work / f'iter_{ITERS}.pth', map_location='cpu', weights_only=False)['state_dict']
    assert {n: tensor_digest(state[n]) for n in probes[0]['after']} == probes[0]['after']
