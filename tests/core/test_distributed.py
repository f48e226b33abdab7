"""Criteria under torch.distributed (two CPU processes, gloo): the mask count that normalises
the mask losses is averaged over the workers, as in Mask2Former, and nothing else changes;
with DDP's gradient averaging, two workers on the halves of a batch then train like one
process on the whole batch (the class loss: see test_two_workers_equal_one_process)."""
import os
import queue as queue_module
import socket
import time

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


def _spawn(target):
    """Run ``target(rank, port, queue)`` in two processes; {rank: what it put on the queue}."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=target, args=(rank, port, queue)) for rank in (0, 1)]
    for p in procs:
        p.start()
    results = {}
    deadline = time.monotonic() + 120
    while len(results) < len(procs):  # fail at once when a worker dies (its error is on stderr)
        try:
            rank, out = queue.get(timeout=1)
            results[rank] = out
        except queue_module.Empty:
            failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            assert not failed and time.monotonic() < deadline, f"workers failed or hung: exit codes {failed}"
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results


@pytest.mark.distributed
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_mask_count_is_averaged_over_workers():
    results = _spawn(_worker)
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



# ---- two workers on half a batch each = one process on the whole batch -----------------------
# masks per image: workers hold 4 and 2 (their own counts would normalise differently), or 3 and 3
UNEQUAL, BALANCED = (3, 1, 0, 2), (2, 1, 1, 2)
OPTIONS = {"hungarian": {}, "reference": {"score_iou_thr": None}, "ot": {"score_iou_thr": None}}


def _full_batch(ks):
    """Outputs (final layer, one auxiliary layer, objectness scores) and targets of 4 images."""
    outputs, targets = point_batch(b=len(ks), ks=ks, grad=False)
    g = torch.Generator().manual_seed(2)
    outputs["pred_scores"] = torch.rand(len(ks), outputs["pred_logits"].shape[1], generator=g)
    outputs["aux_outputs"] = [{"pred_logits": torch.randn(outputs["pred_logits"].shape, generator=g),
                               "pred_masks": torch.randn(outputs["pred_masks"].shape, generator=g) * 3}]
    return outputs, targets


def _half_of(outputs, lo, hi):
    out = {k: v[lo:hi] for k, v in outputs.items() if k != "aux_outputs"}
    out["aux_outputs"] = [{k: v[lo:hi] for k, v in aux.items()} for aux in outputs["aux_outputs"]]
    return out


def _leaves(outputs):
    """Zero offsets added to every prediction, whole-batch shaped: the 'parameters' whose
    gradients the workers average like DDP (each worker's are zero outside its images)."""
    return {"pred_logits": torch.zeros_like(outputs["pred_logits"], requires_grad=True),
            "pred_masks": torch.zeros_like(outputs["pred_masks"], requires_grad=True),
            "pred_scores": torch.zeros_like(outputs["pred_scores"], requires_grad=True),
            "aux_logits": torch.zeros_like(outputs["aux_outputs"][0]["pred_logits"], requires_grad=True),
            "aux_masks": torch.zeros_like(outputs["aux_outputs"][0]["pred_masks"], requires_grad=True)}


def _offset(outputs, leaves):
    out = {k: outputs[k] + leaves[k] for k in ("pred_logits", "pred_masks", "pred_scores")}
    aux = outputs["aux_outputs"][0]
    out["aux_outputs"] = [{"pred_logits": aux["pred_logits"] + leaves["aux_logits"],
                           "pred_masks": aux["pred_masks"] + leaves["aux_masks"]}]
    return out


def _is_class_loss(key):
    return key == "loss_ce" or key.startswith("loss_ce_")


def _losses_and_grads(name, ks, images, with_class_loss, average=None):
    """The losses of criterion ``name`` on ``images`` (a slice) of the batch and the gradients of
    their weighted sum (the class terms only ``with_class_loss``); ``average``: all-reduce the
    gradients and divide by the world size, as DDP does."""
    outputs, targets = _full_batch(ks)
    leaves = _leaves(outputs)
    crit = build_criterion(name, num_classes=C, **OPTIONS[name])
    losses = crit(_half_of(_offset(outputs, leaves), images.start, images.stop), targets[images])
    total = sum(crit.weight_of(k) * v for k, v in losses.items()
                if k.startswith("loss_") and (with_class_loss or not _is_class_loss(k)))
    total.backward()
    grads = {k: torch.zeros_like(v) if v.grad is None else v.grad for k, v in leaves.items()}
    if average:
        for g in grads.values():
            dist.all_reduce(g)
            g /= average
    # numpy, pickled by value: a tensor would go through shared memory the exiting worker frees
    return {k: float(v.detach()) for k, v in losses.items() if k.startswith("loss_")}, \
        {k: g.numpy() for k, g in grads.items()}


CASES = [(name, UNEQUAL, False) for name in OPTIONS] + [("hungarian", BALANCED, True)]


def _halves_worker(rank, port, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        out = [_losses_and_grads(name, ks, slice(2 * rank, 2 * rank + 2), with_ce, average=2)
               for name, ks, with_ce in CASES]
        queue.put((rank, out))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_two_workers_equal_one_process():
    """Two workers with 2 images each, gradients averaged over them, against one process with
    the 4 images: every loss but the class loss has the whole batch's value (the mean of the
    workers') and gradient, for each criterion, with 4 and 2 masks on the workers.  The class
    loss is a weighted mean over each worker's queries (Mask2Former's): it equals the one-process
    loss when the workers' weights are equal - with Hungarian matching, equal mask counts -
    and then the whole loss trains alike (the last case)."""
    results = _spawn(_halves_worker)
    for i, (name, ks, with_ce) in enumerate(CASES):
        want_losses, want_grads = _losses_and_grads(name, ks, slice(0, 4), with_ce)
        (losses0, grads0), (losses1, grads1) = results[0][i], results[1][i]
        assert set(losses0) == set(losses1) == set(want_losses)
        for key, want in want_losses.items():
            if _is_class_loss(key) and not with_ce:
                continue
            assert (losses0[key] + losses1[key]) / 2 == pytest.approx(want, rel=1e-5, abs=1e-6), (name, ks, key)
        for key, want in want_grads.items():
            want, got0, got1 = (torch.from_numpy(g) for g in (want, grads0[key], grads1[key]))
            # gradients to compare: the masks always, the class logits with the class loss, the
            # scores with an objectness loss (not Hungarian's)
            if "masks" in key or (with_ce and "logits" in key) or (key == "pred_scores" and name != "hungarian"):
                assert want.abs().sum() > 0, (name, key)
            torch.testing.assert_close(got0, want, rtol=1e-5, atol=1e-7, msg=f"{name} {ks} {key}")
            assert torch.equal(got1, got0)  # both hold the one all-reduced gradient
