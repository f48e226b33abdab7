"""Parameter digests the multi-process tests compare across ranks and with checkpoints."""
import hashlib

import torch


def tensor_digest(t) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes (equal digests: bitwise equal tensors)."""
    t = t.detach().cpu()
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # raw bytes, whatever the dtype
    return h.hexdigest()


def parameter_digests(module) -> dict:
    """{name: digest} of a module's parameters (buffers left out: detectron2 and mmengine keep
    batch-norm statistics per rank, broadcast_buffers=False)."""
    return {name: tensor_digest(p) for name, p in module.named_parameters()}
