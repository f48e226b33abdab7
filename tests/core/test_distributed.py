"""Criteria under torch.distributed (two CPU processes, gloo): the mask count that normalises
the mask losses is averaged over the workers, as in Mask2Former, and nothing else changes."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from influencer_core import build_criterion
from influencer_core import criterion as criterion_module
from tests.batches import C, point_batch

# masks per worker: the mean over the two workers is 2
MASKS = {0: (3, 1), 1: (0, 0)}


def _batch(rank):
    return point_batch(ks=MASKS[rank], grad=False)


def _worker(rank, port, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        out = {"num_masks": float(criterion_module.num_masks_across_workers(_batch(rank)[1], "cpu"))}
        for name in ("hungarian", "ot"):
            crit = build_criterion(name, num_classes=C)
            out[name] = {k: float(v) for k, v in crit(*_batch(rank)).items()}
        queue.put((rank, out))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_mask_count_is_averaged_over_workers():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(rank, port, queue)) for rank in (0, 1)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert results[0]["num_masks"] == results[1]["num_masks"] == 2.0

    # each worker's losses = its single-process losses with the mask count 2 in place of its own
    for rank in (0, 1):
        local = max(sum(MASKS[rank]), 1)
        for name in ("hungarian", "ot"):
            single = {k: float(v) for k, v in build_criterion(name, num_classes=C)(*_batch(rank)).items()}
            got = results[rank][name]
            assert set(got) == set(single)
            for key, value in single.items():
                normalised = key.startswith("loss_") and key.split("_")[1] in ("mask", "dice", "exclusion")
                want = value * local / 2.0 if normalised else value
                assert got[key] == pytest.approx(want, rel=1e-5, abs=1e-6), (rank, name, key)

