"""Multi-process training for tools/train_net.py on CUDA (detectron2's launcher) or on the CPU.

detectron2 0.6's ``launch`` asserts CUDA, joins the workers with NCCL and pins one GPU per
worker, and its ``DefaultTrainer`` wraps the model in DDP with ``device_ids=[local_rank]``,
which DDP refuses for a CPU module.  :func:`launch` keeps detectron2's signature and
behaviour on CUDA; for a CPU model (``device`` not ``cuda*``) it starts the same worker
processes joined by gloo, sets up detectron2's ``comm`` state (world size, rank, the
per-machine process group) as detectron2's worker does, and wraps CPU models with
``device_ids=None``.
"""
import logging
import os
import socket
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import detectron2.engine.defaults as d2_defaults
from detectron2.engine import launch as d2_launch
from detectron2.utils import comm

__all__ = ["launch", "uses_cuda", "cpu_ddp_model", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = timedelta(minutes=30)
_D2_CREATE_DDP_MODEL = d2_defaults.create_ddp_model

logger = logging.getLogger(__name__)


def uses_cuda(device) -> bool:
    """Whether ``MODEL.DEVICE`` names a CUDA device (then detectron2's own launcher runs)."""
    return str(device).startswith("cuda")


def _free_local_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def launch(main_func, num_gpus_per_machine, num_machines=1, machine_rank=0, dist_url=None, args=(),
           timeout=DEFAULT_TIMEOUT, device="cuda"):
    """Run ``main_func(*args)`` in ``num_gpus_per_machine`` processes on each of ``num_machines``.

    On CUDA this is detectron2's ``launch``.  On the CPU, ``num_gpus_per_machine`` counts worker
    processes; ``dist_url`` ("auto": a free local port, one machine only), ``num_machines`` and
    ``machine_rank`` mean what they mean for detectron2.  One process in all runs ``main_func``
    here, without a process group.
    """
    if uses_cuda(device):
        return d2_launch(main_func, num_gpus_per_machine, num_machines=num_machines, machine_rank=machine_rank,
                         dist_url=dist_url, args=args, timeout=timeout)
    if num_gpus_per_machine < 0 or num_machines < 1 or not 0 <= machine_rank < num_machines:
        raise ValueError(f"--num-gpus {num_gpus_per_machine}, --num-machines {num_machines}, --machine-rank "
                         f"{machine_rank}: need --num-gpus >= 0, --num-machines >= 1 and 0 <= rank < machines")
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        return main_func(*args)
    if dist_url == "auto":
        if num_machines > 1:
            raise ValueError("--dist-url auto picks a port on this machine: give every machine the same "
                             "tcp://<machine 0>:<port> for a multi-machine run")
        dist_url = _free_local_url()
    if not dist_url:
        raise ValueError("a multi-process run needs --dist-url (tcp://host:port, or auto on one machine)")
    mp.spawn(_cpu_worker, nprocs=num_gpus_per_machine, daemon=False,
             args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout))


def _cpu_threads(procs_per_machine: int) -> int:
    """Threads per CPU worker: $OMP_NUM_THREADS if set, else the cores split between the workers
    (each would otherwise start one thread per core and the workers would fight over them)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // procs_per_machine)


def _cpu_worker(local_rank, main_func, world_size, procs_per_machine, machine_rank, dist_url, args, timeout):
    rank = machine_rank * procs_per_machine + local_rank
    try:
        dist.init_process_group("gloo", init_method=dist_url, world_size=world_size, rank=rank, timeout=timeout)
    except Exception:
        logger.error("could not join the process group at %s (rank %d of %d)", dist_url, rank, world_size)
        raise
    try:
        # comm.get_local_rank / get_local_size read this group (detectron2 0.6 has no setter);
        # every rank must create every machine's group, in the same order
        if comm._LOCAL_PROCESS_GROUP is not None:
            raise RuntimeError("detectron2's local process group is already set: one launch per process")
        for machine in range(world_size // procs_per_machine):
            first = machine * procs_per_machine
            group = dist.new_group(list(range(first, first + procs_per_machine)))
            if machine == machine_rank:
                comm._LOCAL_PROCESS_GROUP = group
        torch.set_num_threads(_cpu_threads(procs_per_machine))
        # DefaultTrainer calls the module's create_ddp_model: route it through the CPU-aware one
        d2_defaults.create_ddp_model = cpu_ddp_model
        comm.synchronize()
        main_func(*args)
    finally:
        dist.destroy_process_group()
        comm._LOCAL_PROCESS_GROUP = None


def cpu_ddp_model(model, **kwargs):
    """detectron2's ``create_ddp_model``, with ``device_ids=None`` for a model on the CPU (DDP
    accepts device ids only for a single-GPU module)."""
    first = next(model.parameters(), None)
    if first is not None and first.device.type == "cpu":
        kwargs.setdefault("device_ids", None)
    return _D2_CREATE_DDP_MODEL(model, **kwargs)
