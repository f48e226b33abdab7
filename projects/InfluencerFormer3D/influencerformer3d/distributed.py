"""Multi-process training and testing without CUDA (torchrun, ``--launcher pytorch``).

mmengine 0.10 joins the workers with ``env_cfg.dist_cfg`` (NCCL in the configs) after
``torch.cuda.set_device(LOCAL_RANK)``, and wraps the model in ``MMDistributedDataParallel``
with ``device_ids=[LOCAL_RANK]``; none of that works on the CPU.  :func:`use_cpu_workers`
switches a config to gloo and a DDP wrapper without device ids, and joins the process group
itself (the Runner then uses the group it finds instead of calling ``init_dist``).
"""
import datetime
import os

__all__ = ['CPU_LAUNCHERS', 'TORCHRUN_VARIABLES', 'use_cpu_workers']

#: launchers that work without CUDA (mmengine's slurm and mpi set-ups pin a GPU first)
CPU_LAUNCHERS = ('pytorch',)
#: what torchrun sets for each worker and ``--launcher pytorch`` reads
TORCHRUN_VARIABLES = ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')


def use_cpu_workers(cfg):
    """For ``cfg.launcher`` 'pytorch' without CUDA: gloo in ``env_cfg.dist_cfg`` (its timeout
    kept), ``model_wrapper_cfg.device_ids = None`` (a wrapper dict like mmengine's default when
    the config has none) and the gloo process group joined.  Returns True when it did that,
    False (config untouched) with CUDA or without a launcher.  Raises ValueError for a launcher
    that needs CUDA or for missing torchrun variables."""
    import torch  # here, not at import: the tools' --help and config errors stay fast
    import torch.distributed as dist
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available():
        return False
    if launcher not in CPU_LAUNCHERS:
        raise ValueError(f'--launcher {launcher} needs CUDA GPUs (mmengine pins one GPU per process); '
                         'on the CPU use torchrun with --launcher pytorch (GPUS=N with tools/train_3d.sh)')
    missing = [v for v in TORCHRUN_VARIABLES if v not in os.environ]
    if missing:
        raise ValueError(f'--launcher pytorch reads {", ".join(missing)} from the environment: start the '
                         'tool with torchrun --nproc_per_node=N (or GPUS=N tools/train_3d.sh)')
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    dist_cfg['backend'] = 'gloo'
    if cfg.get('model_wrapper_cfg', None) is None:
        # mmengine's own wrapper when there is no model_wrapper_cfg, minus the device ids
        cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', broadcast_buffers=False,
                                     find_unused_parameters=cfg.get('find_unused_parameters', False))
    if _is_ddp(cfg.model_wrapper_cfg.get('type', 'MMDistributedDataParallel')):
        cfg.model_wrapper_cfg['device_ids'] = None  # DDP accepts device ids only for a GPU module
    if not dist.is_initialized():
        timeout = dist_cfg.get('timeout', None)
        kwargs = {} if timeout is None else {'timeout': datetime.timedelta(seconds=timeout)}
        dist.init_process_group('gloo', init_method='env://', **kwargs)
    return True


def _is_ddp(wrapper_type):
    """Whether a model_wrapper_cfg type is a DistributedDataParallel (the wrappers mmengine gives
    ``device_ids``)."""
    import mmengine.model  # noqa: F401  (registers mmengine's wrappers)
    from mmengine.registry import MODEL_WRAPPERS
    from torch.nn.parallel import DistributedDataParallel
    cls = MODEL_WRAPPERS.get(wrapper_type) if isinstance(wrapper_type, str) else wrapper_type
    return isinstance(cls, type) and issubclass(cls, DistributedDataParallel)
