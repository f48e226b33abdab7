"""Backbones.

Importing this package registers ``D2SwinTransformer`` in detectron2's ``BACKBONE_REGISTRY``.
ResNets come from detectron2 itself (``build_resnet_backbone``): its R-50 already has the
parameter layout of Mask2Former's R-50 checkpoints.
"""
from . import swin  # noqa: F401  (registration side effect)
from .swin import D2SwinTransformer, SwinTransformer

__all__ = ["D2SwinTransformer", "SwinTransformer", "swin"]
